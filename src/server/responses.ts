/**
 * OpenAI response objects: chat completions and their stream chunks, text completions and
 * theirs, usage (with specd's `usage.speculative`) and both endpoints' logprobs formats.
 */
import { randomUUID } from 'node:crypto';
import type { TokenLogprob } from '../engine/logprobs.js';
import { type RoundStats, StatsCollector } from '../engine/stats.js';
import { type MethodCounters, MethodStats, type ProposalMethod } from '../proposers/method-stats.js';
import type { TokenTexts } from './token-text.js';
import type { ToolCall } from './tool-output.js';

/** `system_fingerprint`: names the server build that produced a response. */
export const SYSTEM_FINGERPRINT = 'specd';

/** `tool_calls`: the model called tools (chat with tools). */
export type ApiFinishReason = 'stop' | 'length' | 'tool_calls';

export function completionId(prefix: 'chatcmpl' | 'cmpl'): string {
  return `${prefix}-${randomUUID().replace(/-/g, '')}`;
}

export function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

/** `usage.speculative`: how speculation went for this request (all choices together). */
export interface SpeculativeUsage {
  policy: string;
  rounds: number;
  draft_tokens: number;
  accepted_tokens: number;
  /** accepted_tokens / draft_tokens (0 when nothing was drafted). */
  acceptance_rate: number;
  /** Accepted draft tokens per round. */
  mean_accepted_per_round: number;
  /**
   * The counters of each method that proposed candidates (`draft`, `ngram`, `suffix`: under
   * `hybrid` the draft's and the draft-free proposer's rounds apart), vLLM's per-method counters
   * in snake_case; a method that proposed nothing is absent.
   */
  methods: Partial<Record<ProposalMethod, MethodUsage>>;
}

/** One proposal method's counters (proposers/method-stats.ts, vLLM's SpecDecodingStats). */
export interface MethodUsage {
  /** Rounds that verified a proposal of the method. */
  num_drafts: number;
  num_draft_tokens: number;
  num_accepted_tokens: number;
  /** [i]: rounds whose candidate at position i (0-based) was accepted. */
  num_accepted_tokens_per_pos: number[];
}

export interface Usage {
  prompt_tokens: number;
  /** OpenAI's: `cached_tokens`, prompt tokens whose KV rows came from the prefix cache. */
  prompt_tokens_details: { cached_tokens: number };
  completion_tokens: number;
  total_tokens: number;
  speculative: SpeculativeUsage;
}

/** Running totals of a request's usage, fed round by round (the engine's StatsCollector does the counting). */
export class UsageTally {
  private completionTokens = 0;
  private readonly stats = new StatsCollector();
  private readonly methods = new MethodStats();
  /** Cached and prompt tokens summed over the finished choices (each choice feeds its prompt). */
  private cachedTokens = 0;
  private choicePromptTokens = 0;

  constructor(
    private readonly promptTokens: number,
    private readonly policy: string,
  ) {}

  addTokens(n: number): void {
    this.completionTokens += n;
  }

  addRounds(rounds: readonly RoundStats[]): void {
    for (const r of rounds) {
      this.stats.observe(r);
      if (r.method) this.methods.observe(r.method, r.drafted, r.accepted);
    }
  }

  /** A choice ended: `cached` of its `prompt` tokens came from the prefix cache. */
  addCached(cached: number, prompt: number): void {
    this.cachedTokens += cached;
    this.choicePromptTokens += prompt;
  }

  toJSON(): Usage {
    const s = this.stats.summary(0, 0);
    return {
      prompt_tokens: this.promptTokens,
      // Prompt tokens count once per prompt, not per choice: the choices' cached share of their prompts.
      prompt_tokens_details: { cached_tokens: this.choicePromptTokens > 0 ? Math.round((this.cachedTokens * this.promptTokens) / this.choicePromptTokens) : 0 },
      completion_tokens: this.completionTokens,
      total_tokens: this.promptTokens + this.completionTokens,
      speculative: {
        policy: this.policy,
        rounds: s.rounds,
        draft_tokens: s.draft_tokens,
        accepted_tokens: s.accepted_tokens,
        acceptance_rate: s.acceptance_rate,
        mean_accepted_per_round: s.mean_accepted_per_round,
        methods: methodUsage(this.methods),
      },
    };
  }
}

/** The per-method counters as `usage.speculative.methods` writes them. */
export function methodUsage(stats: MethodStats): Partial<Record<ProposalMethod, MethodUsage>> {
  const out: Partial<Record<ProposalMethod, MethodUsage>> = {};
  for (const [method, c] of Object.entries(stats.snapshot()) as [ProposalMethod, MethodCounters][]) {
    out[method] = { num_drafts: c.numDrafts, num_draft_tokens: c.numDraftTokens, num_accepted_tokens: c.numAcceptedTokens, num_accepted_tokens_per_pos: c.numAcceptedTokensPerPos };
  }
  return out;
}

/** A finished choice. */
export interface ChoiceOutput {
  text: string;
  logprobs?: TokenLogprob[];
  /** Where each output token's text starts in `text`. */
  textOffsets: number[];
  finishReason: ApiFinishReason;
  /** With tools: the calls read from the output (`text` is then the rest, the content). */
  toolCalls?: ToolCall[];
  /** With a reasoning parser: the output's reasoning (`text` is then the rest); null when it had none. */
  reasoning?: string | null;
}

interface Common {
  id: string;
  created: number;
  model: string;
}

// Chat completions.

export interface ChatLogprobs {
  content: { token: string; logprob: number; bytes: number[]; top_logprobs: { token: string; logprob: number; bytes: number[] }[] }[];
  refusal: null;
}

export function chatLogprobs(records: readonly TokenLogprob[], texts: TokenTexts): ChatLogprobs {
  return {
    content: records.map((r) => ({
      ...texts.of(r.token),
      logprob: r.logprob,
      top_logprobs: r.top.map((t) => ({ ...texts.of(t.token), logprob: t.logprob })),
    })),
    refusal: null,
  };
}


/** The fields every response object and chunk starts with. */
function envelope<O extends string>(c: Common, object: O) {
  return { id: c.id, object, created: c.created, model: c.model, system_fingerprint: SYSTEM_FINGERPRINT };
}
export function chatCompletion(c: Common, choices: readonly ChoiceOutput[], usage: Usage, texts: TokenTexts) {
  return {
    ...envelope(c, 'chat.completion'),
    choices: choices.map((choice, index) => ({
      index,
      message: {
        role: 'assistant' as const,
        content: choice.toolCalls?.length && !choice.text ? null : choice.text,
        ...(choice.reasoning !== undefined ? { reasoning_content: choice.reasoning } : {}),
        refusal: null,
        ...(choice.toolCalls?.length ? { tool_calls: choice.toolCalls } : {}),
      },
      logprobs: choice.logprobs ? chatLogprobs(choice.logprobs, texts) : null,
      finish_reason: choice.finishReason,
    })),
    usage,
  };
}

export interface ChatDelta {
  role?: 'assistant';
  content?: string;
  /** With a reasoning parser: more of the reasoning. */
  reasoning_content?: string;
  /** A call's first chunk has its id, type and name; later ones more of its arguments. */
  tool_calls?: { index: number; id?: string; type?: 'function'; function: { name?: string; arguments: string } }[];
}

export function chatChunk(
  c: Common,
  index: number,
  delta: ChatDelta,
  extra: { logprobs?: ChatLogprobs | null; finishReason?: ApiFinishReason | null; usage?: Usage | null } = {},
) {
  return {
    ...envelope(c, 'chat.completion.chunk'),
    choices: [{ index, delta, logprobs: extra.logprobs ?? null, finish_reason: extra.finishReason ?? null }],
    ...(extra.usage !== undefined ? { usage: extra.usage } : {}),
  };
}

/** The last chunk with `stream_options.include_usage`: no choices, the request's usage. */
export function chatUsageChunk(c: Common, usage: Usage) {
  return { ...envelope(c, 'chat.completion.chunk'), choices: [], usage };
}

// Text completions.

export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: number[];
  /** Per position: the most likely tokens and the chosen one, token text -> logprob. */
  top_logprobs: Record<string, number>[];
  /** Character offset of each token in the choice's text. */
  text_offset: number[];
}

/**
 * @param textOffsets where each token's text starts in the choice's text (UTF-16 code units, as
 *   the engine decided them: output-decider.ts)
 */
export function completionLogprobs(records: readonly TokenLogprob[], textOffsets: readonly number[], texts: TokenTexts): CompletionLogprobs {
  const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  records.forEach((r, i) => {
    const token = texts.of(r.token).token;
    out.tokens.push(token);
    out.token_logprobs.push(r.logprob);
    const top: Record<string, number> = Object.create(null); // a token may be spelled "__proto__"
    for (const t of r.top) top[texts.of(t.token).token] = t.logprob;
    top[token] = r.logprob;
    out.top_logprobs.push(top);
    out.text_offset.push(textOffsets[i]!);
  });
  return out;
}

export function textCompletion(c: Common, choices: readonly ChoiceOutput[], usage: Usage, texts: TokenTexts) {
  return {
    ...envelope(c, 'text_completion'),
    choices: choices.map((choice, index) => ({
      index,
      text: choice.text,
      logprobs: choice.logprobs ? completionLogprobs(choice.logprobs, choice.textOffsets, texts) : null,
      finish_reason: choice.finishReason,
    })),
    usage,
  };
}

export function textChunk(
  c: Common,
  index: number,
  text: string,
  extra: { logprobs?: CompletionLogprobs | null; finishReason?: ApiFinishReason | null; usage?: Usage | null } = {},
) {
  return {
    ...envelope(c, 'text_completion'),
    choices: [{ index, text, logprobs: extra.logprobs ?? null, finish_reason: extra.finishReason ?? null }],
    ...(extra.usage !== undefined ? { usage: extra.usage } : {}),
  };
}

export function textUsageChunk(c: Common, usage: Usage) {
  return { ...envelope(c, 'text_completion'), choices: [], usage };
}
