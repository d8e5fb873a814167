/**
 * The core of planning, shared by every endpoint: from token-id prompts and the request's common
 * fields to a `GenerationPlan`, one engine request (`GenerationRequest`, protocol.ts) per choice.
 *
 * `ignore_eos` (vLLM's) travels as `ignoreEos` down to the worker's one conversion into the
 * engine's options (generate-options.ts): EOS tokens are generated like any other token and kept
 * in the output (their text is skipped, as special tokens are), so only max tokens or a stop
 * string end it; with a grammar (`response_format`, `tools`) the grammar's end, EOS, still ends
 * the output.
 */
import { type PolicySpec, policyNeeds } from '../engine/policy-registry.js';
import { policyLabel } from '../engine/stop-policy.js';
import type { ChatMessage } from '../text/tokenizer.js';
import { apiErrors } from './errors.js';
import { type Length, maxTokensFor } from './length-limits.js';
import type { PlanContext } from './plan-context.js';
import { renderChat } from './prompts.js';
import type { GenerationRequest } from './protocol.js';
import type { CommonBody } from './requests.js';
import type { RequestGrammar } from './response-format.js';
import { choiceSeed, logitsAdjustments, samplingParams } from './sampling-plan.js';
import { requestPolicy, type SpeculativeField } from './speculation.js';
import type { ToolPlan } from './tool-plan.js';
import { given } from './unsupported.js';

export type { PlanContext } from './plan-context.js';

/** What a route needs to run a request: the engine requests and how to answer. Plain data. */
export interface GenerationPlan {
  model: string;
  stream: boolean;
  /** `stream_options.include_usage`: a last chunk with the usage. */
  includeUsage: boolean;
  /** `stream_options.continuous_usage_stats` (vLLM's): usage so far on every chunk. */
  continuousUsage: boolean;
  /** One engine request per choice, in choice order. */
  requests: GenerationRequest[];
  /** Prompt tokens, counted once per prompt (not per choice), as OpenAI does. */
  promptTokens: number;
  /** Alternatives per position when the choices carry logprobs. */
  logprobs: number | undefined;
  /** Label of the draft policy, for `usage.speculative.policy`. */
  policy: string;
  /** With tools (chat, responses): how outputs are read for tool calls. */
  tools?: ToolPlan;
}

/**
 * `model` and `stream_options`.
 * @throws ApiError 404 model_not_found for another model; 400 naming `stream_options` without `stream`
 */
export function checkCommon(body: CommonBody, ctx: PlanContext): void {
  if (given(body.model) && body.model !== ctx.facts.name) throw apiErrors.modelNotFound(body.model!);
  if (given(body.stream_options) && body.stream !== true) {
    throw apiErrors.invalidValue('stream_options', "Invalid 'stream_options': it is only allowed when 'stream' is true.");
  }
}

/**
 * The request's draft policy: its `speculative` field over the server's, through the policy
 * registry, refused when it needs a model the server lacks.
 * @throws ApiError 400 naming `speculative.*` (speculation.ts), or `speculative.policy` for a
 *   policy needing a draft or an acceptance head the server has not loaded
 */
export function planPolicy(field: SpeculativeField | null | undefined, ctx: PlanContext): PolicySpec {
  const policy = requestPolicy(field, ctx.defaultPolicy);
  const needs = policyNeeds(policy);
  if (needs.draft && !ctx.facts.hasDraft) {
    throw apiErrors.invalidValue('speculative.policy', `Policy ${policy.policy} needs a draft model and this server has none; use {"policy": "none"}.`);
  }
  // While the models load the answer is not known yet: the engine answers 503 loading instead.
  if (needs.head && ctx.hasHead === false) {
    throw apiErrors.invalidValue('speculative.policy', `Policy ${policy.policy} needs an acceptance head and this server has none loaded (specd serve --head FILE).`);
  }
  return policy;
}

/**
 * A chat (already in the chat template's terms) rendered, tokenized and planned; chat and the
 * Responses API (responses-api.ts) plan their messages through this.
 * @param length where the chat and the output length come from, as the endpoint names them
 * @param logprobs alternatives per position, when logprobs are asked for
 * @param extras variables the chat template reads besides the messages (tool definitions), and
 *   the grammar the output must follow (response_format, tool calls)
 */
export function planMessages(
  messages: ChatMessage[],
  body: CommonBody,
  ctx: PlanContext,
  length: Length,
  logprobs: number | undefined,
  extras: { templateVars?: Record<string, unknown>; grammar?: RequestGrammar } = {},
): GenerationPlan {
  const promptIds = renderChat(messages, ctx.facts, length.param, extras.templateVars);
  return planPrompts(body, ctx, [promptIds], body.n ?? 1, length, logprobs, extras.grammar);
}

/**
 * Token-id prompts and the request's common fields as a plan: `n` choices per prompt, in order
 * (prompt 0's choices first), choice c seeded seed + c.
 * @throws ApiError 400 for an output length beyond the context, a policy the server cannot run,
 *   a logit_bias token outside the vocabulary
 */
export function planPrompts(body: CommonBody, ctx: PlanContext, prompts: number[][], n: number, length: Length, logprobs: number | undefined, grammar?: RequestGrammar): GenerationPlan {
  const { facts } = ctx;
  const maxTokens = maxTokensFor(
    prompts.map((ids) => ids.length),
    length,
    facts.contextLength,
  );
  const sampling = samplingParams(body, facts.generationDefaults);
  const policy = planPolicy(body.speculative, ctx);
  const stop = typeof body.stop === 'string' ? [body.stop] : (body.stop ?? []);
  const adjustments = logitsAdjustments(body, facts.vocabSize);

  const requests: GenerationRequest[] = [];
  prompts.forEach((promptIds, p) => {
    for (let i = 0; i < n; i++) {
      requests.push({
        promptIds,
        maxTokens: maxTokens[p]!,
        sampling,
        seed: choiceSeed(body, requests.length),
        policy,
        stop,
        adjustments,
        logprobs,
        ignoreEos: body.ignore_eos === true,
        ...(grammar ? { grammar: grammar.spec, grammarParam: grammar.param } : {}),
      });
    }
  });
  return {
    model: facts.name,
    stream: body.stream === true,
    includeUsage: body.stream_options?.include_usage === true,
    continuousUsage: body.stream_options?.continuous_usage_stats === true,
    requests,
    promptTokens: prompts.reduce((a, ids) => a + ids.length, 0),
    logprobs,
    policy: policyLabel(policy),
  };
}
