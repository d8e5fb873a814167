/**
 * Speculative decoding: one draft/verify round at a time.
 *
 * State per sequence: the verified tokens x (prompt + output), the target's and the draft's
 * KV caches (each covering a prefix of x), the stop policy and the RNG. One round:
 *
 * 1. Draft. Feed the draft the tokens of x it has not seen (usually 1; 2 after a round where
 *    every candidate was accepted), then sample candidates y_1, y_2, ... one step at a time,
 *    asking the stop policy after each whether to go on.
 * 2. Verify. One target forward over [unseen tokens of x, y_1..y_k] gives p_1..p_{k+1}.
 * 3. Accept (acceptance.ts): the accepted prefix of the candidates plus one token from the
 *    target (recovered or bonus), so every round emits at least one token.
 * 4. Roll back both KV caches to x + accepted candidates (kv-cache.ts `crop`); the emitted
 *    token is fed to both next round.
 * 5. Account: drafted, accepted, draft and verify time (stats.ts).
 *
 * Policy `none` never drafts, which makes the same loop plain target-only decoding.
 */
import { acceptGreedy, acceptSampled, type AcceptanceResult } from './acceptance.js';
import { acceptProbability, candidateFeatures } from './candidate-features.js';
import type { KVCache } from './kv-cache.js';
import { type LogitsAdjustments, LogitsProcessor, type TokenConstraint } from './logits-processors.js';
import { logOf, logSoftmax, type TokenLogprob, tokenLogprob } from './logprobs.js';
import type { DecoderModel } from './model.js';
import { type FinishReason, OutputDecider, type OutputRules } from './output-decider.js';
import { Rng } from './rng.js';
import { argmax, decodingTemperature, isGreedy, sample, softmax, toProbs, type SamplingParams } from './sampling.js';
import { type GenerationStats, type RoundStats, StatsCollector } from './stats.js';
import { type AcceptancePredictor, createPolicy, type PolicySpec, recommendedThresholdAt, type StopPolicy, withDefaultThreshold } from './stop-policy.js';

export interface GenerateOptions {
  /** Most new tokens to produce. */
  maxTokens: number;
  sampling: SamplingParams;
  /** Seed of the generation's RNG; random when absent. */
  seed?: number;
  policy: PolicySpec;
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
}

export type { FinishReason };

export class ContextLengthError extends Error {
  override name = 'ContextLengthError';
}

export class SpeculativeDecoder {
  constructor(
    readonly target: DecoderModel,
    readonly draft?: DecoderModel,
    /** The acceptance head for policies that need one (specdec++). */
    readonly head?: AcceptancePredictor,
    /**
     * The draft as policies that need the head run it: the same weights with
     * `last_hidden_state` (and `accept_logit`, when the head is fused into its graph) as extra
     * outputs. Default: `draft`.
     */
    readonly headDraft?: DecoderModel,
  ) {
    if (draft && draft.info.vocabSize !== target.info.vocabSize) {
      throw new RangeError(`draft vocabulary (${draft.info.vocabSize}) differs from the target's (${target.info.vocabSize})`);
    }
  }

  /** Longest sequence both models accept. */
  get contextLength(): number {
    return this.target.info.maxPositions;
  }

  /** Begin a generation; drive it with `step()` until `done`. */
  start(prompt: readonly number[], opts: GenerateOptions): Generation {
    if (prompt.length === 0) throw new RangeError('the prompt has no tokens');
    if (prompt.length >= this.contextLength) {
      throw new ContextLengthError(`the prompt has ${prompt.length} tokens; the model's context is ${this.contextLength}`);
    }
    const policy = createPolicy(withDefaultThreshold(opts.policy, recommendedThresholdAt(this.head, decodingTemperature(opts.sampling))));
    const draft = policy.needsHead ? (this.headDraft ?? this.draft) : this.draft;
    if (policy.maxDraft > 0 && !draft) throw new RangeError(`policy ${policy.name} needs a draft model`);
    if (policy.needsHead) {
      if (!this.head) throw new RangeError(`policy ${policy.name} needs an acceptance head`);
      if (!draft?.hasAcceptLogit && !draft?.hasHiddenState) {
        throw new RangeError(`policy ${policy.name} needs a draft that outputs last_hidden_state (specd models prepare-draft)`);
      }
    }
    return new Generation(this.target, draft, this.head, prompt, opts, policy);
  }
}

export class Generation {
  /** Tokens generated so far (not including the prompt); the output is a prefix of them (`output`). */
  readonly tokenIds: number[] = [];
  /** With `GenerateOptions.logprobs`: one record per generated token, aligned with `tokenIds`. */
  readonly logprobs: TokenLogprob[] = [];
  /** Which tokens are the output and why it ended, decided token by token. */
  readonly output: OutputDecider;
  private readonly x: number[];
  private readonly targetCache: KVCache;
  private readonly draftCache: KVCache | undefined;
  private readonly rng: Rng;
  private readonly greedy: boolean;
  private readonly eos: Set<number>;
  private readonly maxNew: number;
  private readonly collector = new StatsCollector();
  private readonly processor: LogitsProcessor;
  private readonly startedAt = performance.now();
  private readonly runMsAtStart: number;
  private endedAt: number | undefined;

  constructor(
    private readonly target: DecoderModel,
    private readonly draft: DecoderModel | undefined,
    private readonly head: AcceptancePredictor | undefined,
    prompt: readonly number[],
    private readonly opts: GenerateOptions,
    private readonly policy: StopPolicy,
  ) {
    this.x = [...prompt];
    this.targetCache = target.newCache();
    this.draftCache = draft?.newCache();
    this.rng = new Rng(opts.seed ?? Rng.randomSeed());
    this.greedy = isGreedy(opts.sampling);
    this.eos = new Set(opts.eosTokenIds ?? target.info.eosTokenIds);
    // A grammar ends with the model's EOS: then it ends the output even when EOS is ignored.
    if (opts.constraint) for (const id of target.info.eosTokenIds) this.eos.add(id);
    this.processor = new LogitsProcessor(opts.adjustments, opts.constraint);
    this.maxNew = Math.max(0, Math.min(opts.maxTokens, target.info.maxPositions - prompt.length));
    this.output = new OutputDecider({ maxTokens: this.maxNew, eosTokenIds: this.eos, stop: opts.stop, tokenizer: opts.tokenizer });
    this.runMsAtStart = this.runMs();
    if (this.maxNew === 0) this.finish('length');
  }

  get done(): boolean {
    return this.output.done;
  }

  get finishReason(): FinishReason | undefined {
    return this.output.finishReason;
  }

  /** Run one round; returns the tokens it added to the sequence (`output` says which are the output). */
  async step(): Promise<number[]> {
    if (this.done) return [];
    try {
      return await this.round();
    } catch (err) {
      this.releaseCaches();
      throw err;
    }
  }

  private async round(): Promise<number[]> {
    const x = this.x;
    const remaining = this.maxNew - this.tokenIds.length;

    // 1. Draft.
    const draftStart = performance.now();
    const { candidates, draftProbs, acceptProbs } = await this.proposeCandidates(remaining);
    const draftMs = performance.now() - draftStart;

    // 2. Verify: p_1..p_{k+1} are the last k + 1 rows of the target's logits.
    const targetStart = performance.now();
    const k = candidates.length;
    const input = x.slice(this.targetCache.length).concat(candidates);
    const logits = await this.target.forward(this.targetCache, input, k + 1);
    const vocab = this.target.info.vocabSize;
    const first = logits.length / vocab - (k + 1); // the result may hold rows before the k + 1 asked for
    // A grammar's masks: row i's after the candidates before it (rows before k were computed while drafting).
    if (this.processor.constraint) for (let i = k; i >= 0; i--) await this.processor.prepare(candidates.slice(0, i));
    // Row i is processed with the candidates before it counted as output (logits-processors.ts).
    const rows = Array.from({ length: k + 1 }, (_, i) =>
      this.processor.apply(logits.subarray((first + i) * vocab, (first + i + 1) * vocab), candidates.slice(0, i)),
    );

    // 3. Accept.
    let result: AcceptanceResult;
    let targetProbs: Float64Array[] | undefined;
    if (this.greedy) {
      result = acceptGreedy(candidates, rows.map(argmax));
    } else {
      targetProbs = rows.map((row) => toProbs(row, this.opts.sampling));
      result = acceptSampled(candidates, draftProbs, targetProbs, this.rng);
    }

    // 4. Roll back both caches to x + accepted candidates.
    const keep = x.length + result.accepted;
    await this.targetCache.crop(keep);
    if (this.draftCache && this.draftCache.length > keep) await this.draftCache.crop(keep);
    const targetMs = performance.now() - targetStart;

    // Stop conditions, one token at a time (output-decider.ts): EOS (not emitted), a stop string, max tokens.
    const proposed = candidates.slice(0, result.accepted);
    proposed.push(result.next);
    const emitted: number[] = [];
    for (const token of proposed) {
      const verdict = this.output.push(token);
      if (verdict !== 'eos') emitted.push(token);
      if (verdict !== 'continue') break;
    }
    if (this.output.done) this.settle();
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

    // 5. Account.
    const round: RoundStats = { drafted: k, accepted: result.accepted, emitted: emitted.length, draftMs, targetMs };
    if (acceptProbs) round.acceptProbs = acceptProbs;
    this.collector.observe(round);
    this.opts.onRound?.(round);
    return emitted;
  }

  /** Run to the end; returns the output tokens. */
  async run(): Promise<number[]> {
    while (!this.done) await this.step();
    return this.tokenIds;
  }

  /** End early (the client went away); a no-op once ended. */
  finish(reason: FinishReason): void {
    this.output.end(reason);
    this.settle();
  }

  /** The output has ended: no round follows, so free the caches (GPU memory with WebGPU) now. */
  private settle(): void {
    if (this.endedAt !== undefined) return;
    this.endedAt = performance.now();
    this.releaseCaches();
  }

  get stats(): GenerationStats {
    const wall = (this.endedAt ?? performance.now()) - this.startedAt;
    return this.collector.summary(wall, this.runMs() - this.runMsAtStart);
  }

  /**
   * The draft loop of one round. Candidates never run past what the round may emit (one token
   * always comes from the target) nor past either model's context.
   * @returns candidates y_1..y_k, when sampling their distributions q_1..q_k (each [vocab]),
   *   and with the head its P(accept) of each candidate
   */
  private async proposeCandidates(remaining: number): Promise<{ candidates: number[]; draftProbs: Float64Array[]; acceptProbs?: number[] }> {
    const candidates: number[] = [];
    const draftProbs: Float64Array[] = [];
    const draft = this.draft;
    const cache = this.draftCache;
    const x = this.x;
    /** Candidates the round may hold (jump-forward ones included). */
    const cap = Math.min(remaining - 1, this.target.info.maxPositions - x.length - 1, draft ? draft.info.maxPositions - x.length + 1 : 0);
    if (!draft || !cache || Math.min(cap, this.policy.maxDraft) <= 0) return { candidates, draftProbs };

    this.policy.begin();
    const vocab = draft.info.vocabSize;
    const head = this.policy.needsHead ? this.head : undefined;
    const acceptProbs: number[] | undefined = head ? [] : undefined;
    const constraint = this.processor.constraint;
    const jumpForward = constraint !== undefined && this.opts.jumpForward !== false;
    /** Tokens the draft has not been fed: x's unseen ones, then candidates taken without a draft step. */
    let unfed = x.slice(cache.length);
    /** Candidates the policy has decided on (jump-forward ones are not its), and whether it said stop. */
    let s = 0;
    let stopped = false;
    while (candidates.length < cap) {
      if (constraint) await constraint.prepare(candidates);
      const forced = jumpForward ? constraint.forcedToken(candidates) : undefined;
      if (forced !== undefined) {
        // Jump-forward: the only token the grammar allows is accepted whatever p and q are
        // (both masked rows are one-hot on it), so it costs no draft step and no policy decision,
        // and it follows the policy's last candidate too.
        candidates.push(forced);
        unfed.push(forced);
        if (!this.greedy) draftProbs.push(oneHot(forced, vocab));
        if (acceptProbs) acceptProbs.push(1);
        continue;
      }
      if (stopped || s >= this.policy.maxDraft) break;
      const out = await draft.forwardWithHidden(cache, unfed, 1);
      unfed = [];
      s++;
      const logits = out.logits;
      const row = this.processor.apply(logits.subarray(logits.length - vocab), candidates);
      // The head's logit from the hidden state that produced this row: fused into the draft, or its own session.
      let headLogit: number | undefined;
      if (head) {
        if (out.acceptLogit) headLogit = out.acceptLogit[out.acceptLogit.length - 1]!;
        else headLogit = await head.predictLogit(out.hidden!.subarray(out.hidden!.length - head.width));
      }
      let token: number;
      let prob: number;
      let q: Float64Array | undefined;
      if (this.greedy) {
        token = argmax(row);
        prob = this.policy.needsDraftProb ? softmax(row)[token]! : 1;
      } else {
        q = toProbs(row, this.opts.sampling);
        token = sample(q, this.rng);
        prob = q[token]!;
      }
      const acceptProb = head ? acceptProbability(headLogit!, head.candidateWeights, candidateFeatures(row, token, decodingTemperature(this.opts.sampling))) : undefined;
      const verdict = this.policy.decide({ index: s, token, prob, acceptProb });
      // Dropping y_s because of its own value is exact only when greedy. When sampling, the
      // token that replaces it would come from p_s instead of the y_s-then-accept/recover
      // path, biasing the output towards p_s wherever q_s(y_s) is low (e.g. p = (.5, .5),
      // q = (.9, .1), p_min = .5 emits token 0 with probability .55). So y_s is kept and
      // drafting stops: deciding after y_s whether to draft y_{s+1} keeps the rule exact.
      if (verdict === 'stop-drop' && this.greedy) break;
      candidates.push(token);
      if (q) draftProbs.push(q);
      if (acceptProb !== undefined) acceptProbs!.push(acceptProb);
      stopped = verdict !== 'continue';
      if (constraint && this.eos.has(token)) break; // the grammar allows nothing after its end
      unfed = [token];
    }
    return { candidates, draftProbs, acceptProbs };
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

/** The distribution that puts all its mass on `token`. // [vocab] */
function oneHot(token: number, vocab: number): Float64Array {
  const q = new Float64Array(vocab);
  q[token] = 1;
  return q;
}
