/**
 * From a schema-valid request body to the engine requests that serve it (`GenerationPlan`):
 * the checks that need the model or several fields at once, tokenization on the main thread,
 * and the defaults.
 *
 * Precedence of sampling settings: the model's generation_config.json < the request (as
 * vLLM). Output length: `max_completion_tokens` / `max_tokens`, else what the context leaves
 * (chat) or 16 (text completions, OpenAI's default). `n` choices get seeds seed, seed + 1, ...
 * `ignore_eos` (vLLM's): EOS tokens are generated like any other token and kept in the output
 * (their text is skipped, as special tokens are), so only max tokens or a stop string end it;
 * with a grammar (`response_format`, `tools`) the grammar's end, EOS, still ends the output.
 * `response_format` is read in response-format.ts, `tools` and tool messages in tool-calls.ts.
 */
import type { LogitsAdjustments } from '../engine/logits-processors.js';
import type { SamplingParams } from '../engine/sampling.js';
import { isDraftFree, type PolicySpec, policyLabel } from '../engine/stop-policy.js';
import { ChatTemplateError } from '../text/errors.js';
import type { ChatMessage } from '../text/tokenizer.js';
import { apiErrors } from './errors.js';
import { MAX_TOKENS_WITHOUT_CONTEXT, type ModelFacts, promptCharLimit } from './model-facts.js';
import type { GenerationRequest } from './protocol.js';
import { MAX_CHOICES } from './schemas.js';
import { type RequestGrammar, responseFormatGrammar } from './response-format.js';
import { needsHead, requestPolicy, type SpeculativeField } from './speculation.js';
import { planTools, type ToolAwareMessage, toolConversation, type ToolPlan } from './tool-calls.js';

/** OpenAI's default `max_tokens` for /v1/completions. */
export const COMPLETIONS_DEFAULT_MAX_TOKENS = 16;

type Opt<T> = T | null | undefined;

/** Fields both endpoints take (see schemas.ts). */
export interface CommonBody {
  model?: Opt<string>;
  stream?: Opt<boolean>;
  stream_options?: Opt<{ include_usage?: Opt<boolean>; continuous_usage_stats?: Opt<boolean> }>;
  max_tokens?: Opt<number>;
  temperature?: Opt<number>;
  top_p?: Opt<number>;
  top_k?: Opt<number>;
  seed?: Opt<number>;
  stop?: Opt<string | string[]>;
  n?: Opt<number>;
  presence_penalty?: Opt<number>;
  frequency_penalty?: Opt<number>;
  logit_bias?: Opt<Record<string, number>>;
  user?: Opt<string>;
  ignore_eos?: Opt<boolean>;
  speculative?: Opt<SpeculativeField>;
  /** `{"type": "text" | "json_object" | "json_schema", ...}` (response-format.ts). */
  response_format?: unknown;
  [field: string]: unknown;
}

export type ContentPart = { type: string; text?: string; refusal?: string };
export interface MessageBody {
  role: string;
  content?: Opt<string | ContentPart[]>;
  name?: string;
  [field: string]: unknown;
}

export interface ChatBody extends CommonBody {
  messages: MessageBody[];
  tools?: unknown;
  tool_choice?: unknown;
  /** Extra variables for the chat template (vLLM's field), e.g. `{ "enable_thinking": false }`. */
  chat_template_kwargs?: Record<string, unknown> | null;
  parallel_tool_calls?: Opt<boolean>;
  max_completion_tokens?: Opt<number>;
  logprobs?: Opt<boolean>;
  top_logprobs?: Opt<number>;
}

export interface CompletionBody extends CommonBody {
  prompt: string | string[] | number[] | number[][];
  logprobs?: Opt<number>;
  echo?: Opt<boolean>;
  suffix?: Opt<string>;
  best_of?: Opt<number>;
}

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
  /** With tools (chat): how outputs are read for tool calls. */
  tools?: ToolPlan;
}

export interface PlanContext {
  facts: ModelFacts;
  /** The server's draft policy (`--policy`). */
  defaultPolicy: PolicySpec;
  /** Whether the engine has an acceptance head; undefined while its models load. */
  readonly hasHead: boolean | undefined;
}

/** [field, whether a value asks for something specd cannot do, why]. */
export type Unsupported = [string, (v: unknown) => boolean, string];
export const given = (v: unknown) => v !== undefined && v !== null;
const CHAT_UNSUPPORTED: Unsupported[] = [
  ['functions', (v) => (Array.isArray(v) ? v.length > 0 : given(v)), "the deprecated function calling fields are not; use 'tools'."],
  ['function_call', (v) => given(v) && v !== 'none' && v !== 'auto', "the deprecated function calling fields are not; use 'tool_choice'."],
  ['audio', given, 'specd generates text only.'],
  ['modalities', (v) => given(v) && !(Array.isArray(v) && v.every((m) => m === 'text')), 'specd generates text only.'],
  // Predicted outputs (OpenAI's) only speed a response up: the output is the model's with or
  // without one, so a well-formed prediction is accepted and changes nothing.
  ['prediction', (v) => given(v) && !isPrediction(v), 'a prediction is {"type": "content", "content": a string or text parts}.'],
  ['web_search_options', given, 'specd has no web search.'],
  ['reasoning_effort', (v) => given(v) && v !== 'none', 'the served model has no reasoning mode (only "none" applies).'],
  ['store', (v) => v === true, 'specd does not store completions.'],
];
const COMPLETION_UNSUPPORTED: Unsupported[] = [
  ['echo', (v) => v === true, 'the prompt is not echoed; prepend it yourself.'],
  ['suffix', (v) => given(v) && v !== '', 'specd has no fill-in-the-middle mode.'],
  ['best_of', (v) => given(v) && v !== 1, 'use n for several choices.'],
];

/** OpenAI's `prediction`: `{type: "content", content: string | [{type: "text", text: string}]}`. */
function isPrediction(v: unknown): boolean {
  const p = v as { type?: unknown; content?: unknown };
  if (typeof p !== 'object' || p === null || p.type !== 'content') return false;
  if (typeof p.content === 'string') return true;
  return Array.isArray(p.content) && p.content.every((c) => typeof c === 'object' && c !== null && (c as { type?: unknown }).type === 'text' && typeof (c as { text?: unknown }).text === 'string');
}

export function checkUnsupported(body: Record<string, unknown>, table: Unsupported[]): void {
  for (const [field, used, why] of table) if (used(body[field])) throw apiErrors.unsupported(field, why);
}

export function planChat(body: ChatBody, ctx: PlanContext): GenerationPlan {
  checkUnsupported(body, CHAT_UNSUPPORTED);
  checkCommon(body, ctx);
  if (given(body.top_logprobs) && body.logprobs !== true) {
    throw apiErrors.invalidValue('top_logprobs', "Invalid 'top_logprobs': it requires 'logprobs' to be true.");
  }
  const tools = planTools(body);
  const format = responseFormatGrammar(body.response_format);
  if (format && tools && tools.mode !== 'none') {
    throw apiErrors.unsupported('response_format', "a response format together with tools the model may call; set 'tool_choice' to 'none' or leave out one of them.");
  }
  const conversation = toolConversation(chatMessages(body.messages), tools, ctx.facts.tokenizer.templateUsesTools);
  const maxParam = given(body.max_completion_tokens) ? 'max_completion_tokens' : 'max_tokens';
  const requested = body.max_completion_tokens ?? body.max_tokens ?? undefined;
  const logprobs = body.logprobs === true ? (body.top_logprobs ?? 0) : undefined;
  // The request's template variables first, so that what specd sets (the tool definitions) wins.
  const templateVars = body.chat_template_kwargs ? { ...body.chat_template_kwargs, ...conversation.templateVars } : conversation.templateVars;
  const out = planMessages(conversation.messages, body, ctx, { param: 'messages', maxParam, requested, fallback: Infinity }, logprobs, {
    templateVars,
    grammar: format ?? tools?.grammar,
  });
  if (tools && tools.mode !== 'none') out.tools = tools;
  return out;
}

/**
 * A chat (already in the chat template's terms) rendered, tokenized and planned like
 * /v1/chat/completions; the Responses API (responses-api.ts) plans its input through this too.
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
  const { tokenizer } = ctx.facts;
  const param = length.param;
  if (!tokenizer.hasChatTemplate) {
    throw apiErrors.invalidValue(param, 'The model has no chat template; use /v1/completions with a prompt instead.', 'no_chat_template');
  }
  // Tokenizing runs on the main thread: text far too long to fit is refused before it.
  // Tool definitions (template variables) are rendered into the prompt too: they count.
  const chars = messages.reduce((n, m) => n + m.content.length, 0) + (extras.templateVars ? JSON.stringify(extras.templateVars).length : 0);
  if (chars > promptCharLimit(ctx.facts)) throw apiErrors.promptTooLong(param, ctx.facts.contextLength);
  let promptIds: number[];
  try {
    promptIds = tokenizer.encodeChat(messages, extras.templateVars ? { templateVars: extras.templateVars } : {});
  } catch (err) {
    if (err instanceof ChatTemplateError) throw apiErrors.invalidValue(param, `Invalid '${param}': ${err.message}.`);
    throw err;
  }
  return plan(body, ctx, [promptIds], body.n ?? 1, length, logprobs, extras.grammar);
}

export function planCompletion(body: CompletionBody, ctx: PlanContext): GenerationPlan {
  checkUnsupported(body, COMPLETION_UNSUPPORTED);
  checkCommon(body, ctx);
  const n = body.n ?? 1;
  // Counted before anything is tokenized.
  const promptCount = typeof body.prompt === 'string' || typeof body.prompt[0] === 'number' ? 1 : body.prompt.length;
  if (promptCount * n > MAX_CHOICES) {
    throw apiErrors.invalidValue(promptCount > 1 ? 'prompt' : 'n', `At most ${MAX_CHOICES} choices per request (prompts x n); this one asks for ${promptCount * n}.`);
  }
  const prompts = completionPrompts(body.prompt, ctx.facts);
  const requested = body.max_tokens ?? undefined;
  const grammar = responseFormatGrammar(body.response_format);
  return plan(body, ctx, prompts, n, { param: 'prompt', maxParam: 'max_tokens', requested, fallback: COMPLETIONS_DEFAULT_MAX_TOKENS }, body.logprobs ?? undefined, grammar);
}

/** Model, stream options. */
export function checkCommon(body: CommonBody, ctx: PlanContext): void {
  if (given(body.model) && body.model !== ctx.facts.name) throw apiErrors.modelNotFound(body.model!);
  if (given(body.stream_options) && body.stream !== true) {
    throw apiErrors.invalidValue('stream_options', "Invalid 'stream_options': it is only allowed when 'stream' is true.");
  }
}

export interface Length {
  /** The parameter holding the prompt (`messages` or `prompt`). */
  param: string;
  /** The parameter that set the output length. */
  maxParam: string;
  requested: number | undefined;
  /** Output length when none is requested (bounded by the context). */
  fallback: number;
}

function plan(body: CommonBody, ctx: PlanContext, prompts: number[][], n: number, length: Length, logprobs: number | undefined, grammar?: RequestGrammar): GenerationPlan {
  const { facts } = ctx;
  const context = facts.contextLength;
  const maxTokens = prompts.map((ids) => {
    if (ids.length >= context) throw apiErrors.contextLength(length.param, context, ids.length, undefined);
    if (length.requested !== undefined) {
      if (ids.length + length.requested > context) throw apiErrors.contextLength(length.param, context, ids.length, length.requested);
      return length.requested;
    }
    const room = Number.isFinite(context) ? context - ids.length : MAX_TOKENS_WITHOUT_CONTEXT;
    return Math.min(length.fallback, room);
  });

  const d = facts.generationDefaults;
  const topK = body.top_k ?? d.topK ?? 0;
  const sampling: SamplingParams = { temperature: body.temperature ?? d.temperature ?? 1, topP: body.top_p ?? d.topP ?? 1, topK: topK < 0 ? 0 : topK };
  const policy = requestPolicy(body.speculative, ctx.defaultPolicy);
  if (policy.policy !== 'none' && !isDraftFree(policy) && !facts.hasDraft) {
    throw apiErrors.invalidValue('speculative.policy', `Policy ${policy.policy} needs a draft model and this server has none; use {"policy": "none"}.`);
  }
  // While the models load the answer is not known yet: the engine answers 503 loading instead.
  if (needsHead(policy) && ctx.hasHead === false) {
    throw apiErrors.invalidValue('speculative.policy', `Policy ${policy.policy} needs an acceptance head and this server has none loaded (specd serve --head FILE).`);
  }
  const stop = typeof body.stop === 'string' ? [body.stop] : (body.stop ?? []);
  const adjustments = logitsAdjustments(body, facts.vocabSize);

  const requests: GenerationRequest[] = [];
  prompts.forEach((promptIds, p) => {
    for (let i = 0; i < n; i++) {
      const choice = requests.length;
      requests.push({
        promptIds,
        maxTokens: maxTokens[p]!,
        sampling,
        seed: given(body.seed) ? body.seed! + choice : undefined,
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

function logitsAdjustments(body: CommonBody, vocabSize: number): LogitsAdjustments | undefined {
  const presencePenalty = body.presence_penalty ?? 0;
  const frequencyPenalty = body.frequency_penalty ?? 0;
  const bias = body.logit_bias ?? {};
  for (const id of Object.keys(bias)) {
    if (Number(id) >= vocabSize) throw apiErrors.invalidValue('logit_bias', `Invalid 'logit_bias': token id ${id} is outside the vocabulary (${vocabSize} tokens).`);
  }
  if (presencePenalty === 0 && frequencyPenalty === 0 && Object.keys(bias).length === 0) return undefined;
  return { presencePenalty, frequencyPenalty, logitBias: Object.fromEntries(Object.entries(bias).map(([id, b]) => [Number(id), b])) };
}

const ROLES: Record<string, string> = { system: 'system', developer: 'system', user: 'user', assistant: 'assistant', tool: 'tool' };

/** Messages as the chat template takes them; text content parts are joined with newlines (as vLLM). */
export function chatMessages(messages: MessageBody[]): ToolAwareMessage[] {
  return messages.map((m, i): ToolAwareMessage => {
    // Own properties only: "constructor" or "__proto__" is not a role.
    const role = Object.hasOwn(ROLES, m.role) ? ROLES[m.role] : undefined;
    if (m.role === 'function') throw apiErrors.unsupported(`messages[${i}].role`, "\"function\" messages belong to the deprecated function calling; use 'tool' messages.");
    if (!role) {
      throw apiErrors.invalidValue(`messages[${i}].role`, `Invalid value for 'messages[${i}].role': "${m.role}". Supported values are: ${Object.keys(ROLES).map((r) => `'${r}'`).join(', ')}.`);
    }
    const extra: Partial<ToolAwareMessage> = {};
    if (role === 'tool') {
      if (typeof m.tool_call_id !== 'string') throw apiErrors.missing(`messages[${i}].tool_call_id`);
      extra.tool_call_id = m.tool_call_id;
    }
    if (given(m.tool_calls) && !(Array.isArray(m.tool_calls) && m.tool_calls.length === 0)) {
      if (role !== 'assistant') throw apiErrors.invalidValue(`messages[${i}].tool_calls`, `Invalid 'messages[${i}]': only assistant messages have 'tool_calls'.`);
      extra.tool_calls = assistantToolCalls(m.tool_calls, `messages[${i}].tool_calls`);
    }
    const text = messageText(m, i);
    return { role, content: text, ...extra };
  });
}

/** An assistant message's earlier calls: `[{id, type: "function", function: {name, arguments}}]`. */
function assistantToolCalls(value: unknown, param: string): NonNullable<ToolAwareMessage['tool_calls']> {
  if (!Array.isArray(value)) throw apiErrors.invalidType(param, 'an array');
  return value.map((c: unknown, j) => {
    const call = c as { id?: unknown; type?: unknown; function?: { name?: unknown; arguments?: unknown } } | null;
    if (!call || typeof call !== 'object') throw apiErrors.invalidType(`${param}[${j}]`, 'an object');
    if (typeof call.function?.name !== 'string') throw apiErrors.missing(`${param}[${j}].function.name`);
    if (typeof call.function.arguments !== 'string') throw apiErrors.invalidType(`${param}[${j}].function.arguments`, 'a string (JSON text)');
    return { ...(typeof call.id === 'string' ? { id: call.id } : {}), type: 'function', function: { name: call.function.name, arguments: call.function.arguments } };
  });
}

/** A message's text: its content string, or its text parts joined with newlines. */
function messageText(m: MessageBody, i: number): string {
  const content = m.content ?? '';
  if (typeof content === 'string') return content;
  const texts = content.map((part, j) => {
    // An earlier assistant turn may hold a refusal part: its text is what the assistant said.
    if (part.type === 'refusal' && m.role === 'assistant') {
      if (typeof part.refusal !== 'string') throw apiErrors.missing(`messages[${i}].content[${j}].refusal`);
      return part.refusal;
    }
    if (part.type !== 'text') {
      throw apiErrors.unsupported(`messages[${i}].content[${j}].type`, `content parts of type "${part.type}" need a multimodal model; specd serves text-only models.`);
    }
    if (typeof part.text !== 'string') throw apiErrors.missing(`messages[${i}].content[${j}].text`);
    return part.text;
  });
  return texts.join('\n');
}

/** /v1/completions' `prompt` as token id lists (strings are tokenized without special tokens). */
function completionPrompts(prompt: CompletionBody['prompt'], facts: ModelFacts): number[][] {
  const list: (string | number[])[] = typeof prompt === 'string' ? [prompt] : typeof prompt[0] === 'number' ? [prompt as number[]] : (prompt as (string | number[])[]);
  return list.map((p, i) => {
    const param = list.length > 1 ? `prompt[${i}]` : 'prompt';
    if (typeof p === 'string' && p.length > promptCharLimit(facts)) throw apiErrors.promptTooLong(param, facts.contextLength);
    const ids = typeof p === 'string' ? facts.tokenizer.encode(p) : p;
    if (ids.length === 0) throw apiErrors.invalidValue(param, `Invalid '${param}': the prompt is empty.`);
    const bad = ids.find((id) => id < 0 || id >= facts.vocabSize);
    if (bad !== undefined) throw apiErrors.invalidValue(param, `Invalid '${param}': token id ${bad} is outside the vocabulary (${facts.vocabSize} tokens).`);
    return ids;
  });
}

