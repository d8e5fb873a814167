/**
 * One sequence being decoded: its verified tokens x (prompt + output), the target's and the
 * draft's KV caches (each covering a prefix of x), its RNG, its logits processing and the
 * decisions of which tokens are its output.
 *
 * A round's candidates come from a proposer (proposer.ts); the sequence verifies them against
 * the target's logits (`verify`): logits processing, acceptance (acceptance.ts), the rollback
 * of both caches to the accepted prefix, output decisions and logprobs. It runs no forward
 * pass itself: the scheduler (scheduler.ts) runs every pass.
 */
import type { ProposalMethod } from '../proposers/method-stats.js';
import { acceptGreedy, acceptSampled, type AcceptanceResult } from './acceptance.js';
import type { KVCache } from './kv-cache.js';
import { type LogitsAdjustments, LogitsProcessor, type TokenConstraint } from './logits-processors.js';
import { logOf, logSoftmax, type TokenLogprob, tokenLogprob } from './logprobs.js';
import type { DecoderModel } from './model.js';
import { type FinishReason, OutputDecider, type OutputRules } from './output-decider.js';
import { Rng } from './rng.js';
import { argmax, isGreedy, toProbs, type SamplingParams } from './sampling.js';
import { type GenerationStats, type RoundStats, StatsCollector } from './stats.js';
import type { DraftFreePolicySpec, PolicySpec } from './stop-policy.js';

export interface GenerateOptions {
  /** Most new tokens to produce. */
  maxTokens: number;
  sampling: SamplingParams;
  /** Seed of the generation's RNG; random when absent. */
  seed?: number;
  policy: PolicySpec;
  /**
   * With a policy that runs the draft model: a draft-free proposer (`ngram` or `suffix`, with its
   * knobs) that competes with the draft each round by expected accepted length (`hybrid`,
   * hybrid-proposer.ts).
   */
  hybrid?: DraftFreePolicySpec;
  /** Tokens that end generation (not included in the output); default: the target's EOS ids. */
  eosTokenIds?: readonly number[];
  /** Presence/frequency penalties and logit bias, applied alike to the draft's and the target's logits. */
  adjustments?: LogitsAdjustments;
  /**
   * A grammar the output must follow (grammar/constraint.ts): it masks the draft's and the
   * target's logits alike, and its end (the target's EOS, which then ends the output even when
   * `eosTokenIds` leaves it out) is the generation's. Released when the generation ends.
   */
  constraint?: TokenConstraint;
  /**
   * With a constraint: where it allows a single token, take it as a candidate without running the
   * draft (jump-forward; the target verifies it like any candidate and always accepts it). Default true.
   */
  jumpForward?: boolean;
  /** Record each emitted token's log-probability and this many alternatives (`Generation.logprobs`). */
  logprobs?: number;
  /** Strings that end the output (it stops before the first); need `tokenizer` (output-decider.ts). */
  stop?: readonly string[];
  /** Turns the output into text (`Generation.output.text`); needed for stop strings. */
  tokenizer?: OutputRules['tokenizer'];
  /** Called after every round with its statistics. */
  onRound?: (round: RoundStats) => void;
  /**
   * `one-run` (default): a sequence drafting alone drafts in one ONNX Runtime run where it can
   * (draft-phase.ts: greedy, no logits processing, an in-place draft on the CPU);
   * `per-step`: one run per draft step.
   */
  draftPhase?: DraftPhaseMode;
}

export type DraftPhaseMode = 'one-run' | 'per-step';
export const DRAFT_PHASE_MODES: readonly DraftPhaseMode[] = ['one-run', 'per-step'];

export type { FinishReason };

/**
 * Prompt pieces fed per pass end at multiples of this many positions (`Sequence.promptPiece`,
 * and the draft's catching up), so that a prompt's KV cache is computed the same way whether it
 * went in alone or between a batch's rounds. 128: a piece costs the bundled target ~30 ms on 2
 * cores, short enough not to stall a batch's decoding for long, and long prompts lose ~7%
 * against pieces of 256 (model.ts INPLACE_PREFILL_CHUNK).
 */
export const PREFILL_CHUNK = 128;

/** Where a piece starting at position `from` ends: the next multiple of PREFILL_CHUNK, or `end`. */
export function pieceEnd(from: number, end: number): number {
  return Math.min(end, (Math.floor(from / PREFILL_CHUNK) + 1) * PREFILL_CHUNK);
}

/** A round's candidates and what acceptance needs of them (a proposer's answer for one sequence). */
export interface Proposal {
  /** y_1..y_k (k = 0: the round verifies none). */
  tokens: number[];
  /**
   * When sampling: q_1..q_k, each [vocab], the distributions y_i was drawn from (a point mass,
   * q = one-hot(y_i), for a token copied or forced rather than drawn); empty when greedy.
   */
  draftProbs: Float64Array[];
  /** With the acceptance head: its P(accept) of each candidate // [k] */
  acceptProbs?: number[];
  /** Who proposed the candidates; absent: the draft model. */
  method?: ProposalMethod;
}

/** A proposal with no candidates. */
export function noProposal(): Proposal {
  return { tokens: [], draftProbs: [] };
}

/** What a verified round did to the sequence. */
export interface VerifiedRound {
  /** Candidates accepted (n <= k). */
  accepted: number;
  /** Tokens the round added to the sequence (accepted candidates, then the recovered or bonus token; fewer when the output ended). */
  emitted: number[];
}

export class ContextLengthError extends Error {
  override name = 'ContextLengthError';
}

export class Sequence {
  /** Tokens generated so far (not including the prompt); the output is a prefix of them (`output`). */
  readonly tokenIds: number[] = [];
  /** With `GenerateOptions.logprobs`: one record per generated token, aligned with `tokenIds`. */
  readonly logprobs: TokenLogprob[] = [];
  /** Which tokens are the output and why it ended, decided token by token. */
  readonly output: OutputDecider;
  /** x: the prompt, then the verified output. */
  readonly tokens: number[];
  readonly promptLength: number;
  readonly targetCache: KVCache;
  /** The draft's cache, when the sequence's policy runs a draft model. */
  readonly draftCache: KVCache | undefined;
  readonly rng: Rng;
  readonly greedy: boolean;
  /** Tokens that end the output. */
  readonly eos: Set<number>;
  /** Most tokens the sequence may add (max_tokens, bounded by the context). */
  readonly maxNew: number;
  readonly processor: LogitsProcessor;
  /** Prompt tokens whose rows the target's cache took from the prefix cache instead of computing them: OpenAI's `cached_tokens`. */
  cachedPromptTokens: number;

  /** Time the draft spent catching up this round, in ms (draft-proposer.ts). */
  catchUpRoundMs = 0;
  /** Time the draft spent on the prompt, not yet spread over rounds (takePromptFeedShare). */
  promptFeedMs = 0;
  /** Prompt-piece time not yet counted in a round's targetMs. */
  prefillMs = 0;

  private readonly collector = new StatsCollector();
  private readonly startedAt = performance.now();
  private readonly runMsAtStart: number;
  private endedAt: number | undefined;
  private readonly endListeners: (() => void)[] = [];

  /**
   * @param target the target model
   * @param draft the draft model the sequence's policy runs (none: no draft cache)
   * @throws RequestError / ContextLengthError are the engine's to throw before this (speculative.ts)
   */
  constructor(
    readonly target: DecoderModel,
    readonly draft: DecoderModel | undefined,
    prompt: readonly number[],
    readonly opts: GenerateOptions,
  ) {
    this.tokens = [...prompt];
    this.promptLength = prompt.length;
    // With prefix caching (model.ts) the caches may start holding a prefix of the prompt: prefill and the draft's catch-up go on from their lengths.
    this.targetCache = target.newCache(prompt);
    this.draftCache = draft?.newCache(prompt);
    this.cachedPromptTokens = this.targetCache.length;
    this.rng = new Rng(opts.seed ?? Rng.randomSeed());
    this.greedy = isGreedy(opts.sampling);
    this.eos = new Set(opts.eosTokenIds ?? target.info.eosTokenIds);
    // A grammar ends with the model's EOS: then it ends the output even when EOS is ignored.
    if (opts.constraint) for (const id of target.info.eosTokenIds) this.eos.add(id);
    this.processor = new LogitsProcessor(opts.adjustments, opts.constraint);
    this.maxNew = Math.max(0, Math.min(opts.maxTokens, target.info.maxPositions - prompt.length));
    this.output = new OutputDecider({ maxTokens: this.maxNew, eosTokenIds: this.eos, stop: opts.stop, tokenizer: opts.tokenizer });
    this.runMsAtStart = this.runMs();
  }

  get done(): boolean {
    return this.output.done;
  }

  get finishReason(): FinishReason | undefined {
    return this.output.finishReason;
  }

  /** Called once when the sequence ends (its caches are then released). */
  onEnd(listener: () => void): void {
    this.endListeners.push(listener);
  }

  /**
   * Prompt tokens not yet in the target's KV cache, all but the last (which the first round
   * feeds): 0 once the prompt is in.
   */
  get prefillPending(): number {
    return Math.max(0, this.promptLength - 1 - this.targetCache.length);
  }

  /**
   * The next piece of the prompt for the target (all but the prompt's last token), ending at a
   * multiple of PREFILL_CHUNK positions so that the cache's contents do not depend on how many
   * pieces went in between other passes; empty once the prompt is in.
   */
  promptPiece(): number[] {
    // Prefix caching: rows of the prompt another sequence computed meanwhile are copied (at least one token is left to feed).
    this.cachedPromptTokens += this.targetCache.adoptPrefix?.(this.tokens.slice(0, this.promptLength - 1), this.promptLength - 2) ?? 0;
    const from = this.targetCache.length;
    return this.tokens.slice(from, pieceEnd(from, this.promptLength - 1));
  }

  /**
   * Most candidates a round may hold: never past what the round may emit (one token always
   * comes from the target) nor past the target's context, nor past `draft`'s when given
   * (its cache holds all candidates but the last).
   */
  candidateRoom(draft?: DecoderModel): number {
    const x = this.tokens.length;
    const room = Math.min(this.maxNew - this.tokenIds.length - 1, this.target.info.maxPositions - x - 1);
    return draft ? Math.min(room, draft.info.maxPositions - x + 1) : room;
  }

  /** Tokens of x the target has not been fed (1 between rounds, 0 before the first). */
  get unverified(): number {
    return this.tokens.length - this.targetCache.length;
  }

  /** What verification feeds the target: the tokens of x it has not seen, then the candidates. */
  verifyInput(candidates: readonly number[]): number[] {
    return this.tokens.slice(this.targetCache.length).concat(candidates);
  }

  /**
   * Verify a round's candidates from the target's logits over `verifyInput(proposal.tokens)`:
   * logits processing, acceptance, the rollback of both caches to x + accepted candidates, the
   * output decisions, logprobs and the round's statistics. When the output ended, the caller
   * calls `settleIfDone` once the round's proposer has seen it.
   * @param logits [rows, vocab] row-major, rows >= k + 1: the last k + 1 are p_1..p_{k+1}
   * @param timing the round's drafting time and when its verification began (performance.now())
   * @param threshold specdec++'s h the round ran with, for its statistics
   */
  async verify(logits: Float32Array, proposal: Proposal, timing: { draftMs: number; targetStart: number }, threshold?: number): Promise<VerifiedRound> {
    const x = this.tokens;
    const { tokens: candidates, draftProbs, acceptProbs } = proposal;
    const k = candidates.length;
    const vocab = this.target.info.vocabSize;
    const first = logits.length / vocab - (k + 1); // the result may hold rows before the k + 1 asked for
    // A grammar's masks: row i's after the candidates before it (rows before k were computed while drafting).
    if (this.processor.constraint) for (let i = k; i >= 0; i--) await this.processor.prepare(candidates.slice(0, i));
    // Row i is processed with the candidates before it counted as output (logits-processors.ts).
    const rows = Array.from({ length: k + 1 }, (_, i) =>
      this.processor.apply(logits.subarray((first + i) * vocab, (first + i + 1) * vocab), candidates.slice(0, i)),
    );

    // Accept.
    let result: AcceptanceResult;
    let targetProbs: Float64Array[] | undefined;
    if (this.greedy) {
      result = acceptGreedy(candidates, rows.map(argmax));
    } else {
      targetProbs = rows.map((row) => toProbs(row, this.opts.sampling));
      result = acceptSampled(candidates, draftProbs, targetProbs, this.rng);
    }

    // Roll back both caches to x + accepted candidates.
    const keep = x.length + result.accepted;
    await this.targetCache.crop(keep);
    if (this.draftCache && this.draftCache.length > keep) await this.draftCache.crop(keep);
    const targetMs = performance.now() - timing.targetStart + this.prefillMs;
    this.prefillMs = 0;

    // Stop conditions, one token at a time (output-decider.ts): EOS (not emitted), a stop string, max tokens.
    const proposed = candidates.slice(0, result.accepted);
    proposed.push(result.next);
    const emitted: number[] = [];
    for (const token of proposed) {
      const verdict = this.output.push(token);
      if (verdict !== 'eos') emitted.push(token);
      if (verdict !== 'continue') break;
    }
    x.push(...emitted);
    this.tokenIds.push(...emitted);
    this.processor.accept(emitted);
    // Emitted token j is distributed as p_{j+1} (rows[j]), whether drafted or drawn by the target.
    if (this.opts.logprobs !== undefined) {
      emitted.forEach((token, j) => {
        const logp = targetProbs ? logOf(targetProbs[j]!) : logSoftmax(rows[j]!);
        this.logprobs.push(tokenLogprob(logp, token, this.opts.logprobs!));
      });
    }

    const round: RoundStats = { drafted: k, accepted: result.accepted, emitted: emitted.length, draftMs: timing.draftMs, targetMs };
    if (k > 0) round.method = proposal.method ?? 'draft';
    if (threshold !== undefined) round.threshold = threshold;
    if (acceptProbs) round.acceptProbs = acceptProbs;
    this.collector.observe(round);
    this.opts.onRound?.(round);
    return { accepted: result.accepted, emitted };
  }

  /**
   * The share of the draft's prompt feed that a round emitting `emitted` tokens carries, in ms:
   * the feed spread over the tokens the sequence may still emit (max_tokens bounds them), so
   * that a drafting round's cost is that of drafting all along, not of the first round's burst.
   * What is returned is taken off what is left to spread.
   */
  takePromptFeedShare(emitted: number): number {
    const left = this.maxNew - this.tokenIds.length + emitted;
    const share = left > 0 ? this.promptFeedMs * Math.min(1, emitted / left) : this.promptFeedMs;
    this.promptFeedMs -= share;
    return share;
  }

  /** After a verified round (and its proposer's `observe`): when the output has ended, release the caches. */
  settleIfDone(): void {
    if (this.output.done) this.settle();
  }

  /** End early (the client went away); a no-op once ended. */
  finish(reason: FinishReason): void {
    this.output.end(reason);
    this.settle();
  }

  get stats(): GenerationStats {
    const wall = (this.endedAt ?? performance.now()) - this.startedAt;
    return this.collector.summary(wall, this.runMs() - this.runMsAtStart);
  }

  /** Free the caches and the grammar after a failed pass (the sequence cannot go on). */
  discard(): void {
    this.releaseCaches();
  }

  /** The output has ended: no round follows, so free the caches (GPU memory with WebGPU) now. */
  private settle(): void {
    if (this.endedAt !== undefined) return;
    this.endedAt = performance.now();
    for (const listener of this.endListeners) listener();
    this.releaseCaches();
  }

  private releaseCaches(): void {
    this.targetCache.release();
    this.draftCache?.release();
    this.processor.constraint?.release();
  }

  private runMs(): number {
    return this.target.runMs + (this.draft?.runMs ?? 0);
  }
}
