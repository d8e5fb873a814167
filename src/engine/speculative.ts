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
import { RequestError } from '../errors.js';
import { acceptGreedy, acceptSampled, type AcceptanceResult } from './acceptance.js';
import { acceptProbability, candidateFeatures } from './candidate-features.js';
import type { KVCache } from './kv-cache.js';
import { type LogitsAdjustments, LogitsProcessor, type TokenConstraint } from './logits-processors.js';
import { logOf, logSoftmax, type TokenLogprob, tokenLogprob } from './logprobs.js';
import type { DecoderModel, ForwardOutputs } from './model.js';
import { type FinishReason, OutputDecider, type OutputRules } from './output-decider.js';
import { Rng } from './rng.js';
import { argmax, decodingTemperature, isGreedy, sample, softmaxAt, toProbs, type SamplingParams } from './sampling.js';
import { type GenerationStats, type RoundStats, StatsCollector } from './stats.js';
import { combinedCandidateWeights, type DraftPhase, MIN_PHASE_STEPS } from './draft-phase.js';
import { PHASE_WEIGHTS } from '../onnx/draft-loop-graph.js';
import { PassCostModel, type RoundArm } from './cost-model.js';
import { type AcceptancePredictor, createPolicy, draftFreeOptions, isDraftFree, SpecDecPlusPlusPolicy, type PolicySpec, recommendedThresholdAt, type StopPolicy, withDefaultThreshold } from './stop-policy.js';
import { DraftFreeProposer, type RoundProposal } from '../proposers/draft-free.js';
import { ProposerOptionError } from '../proposers/proposal.js';

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
  /**
   * `one-run` (default): a lone sequence's rounds draft in one ONNX Runtime run where they can
   * (draft-phase.ts: greedy, no logits processing, an in-place draft on the CPU);
   * `per-step`: one run per draft step.
   */
  draftPhase?: DraftPhaseMode;
}

export type DraftPhaseMode = 'one-run' | 'per-step';
export const DRAFT_PHASE_MODES: readonly DraftPhaseMode[] = ['one-run', 'per-step'];

export type { FinishReason };

/**
 * Prompt pieces fed per pass end at multiples of this many positions (Generation.prefill), so
 * that a prompt's KV cache is computed the same way whether it went in alone or between a
 * batch's rounds. 128: a piece costs the bundled target ~30 ms on 2 cores, short enough not to
 * stall a batch's decoding for long, and long prompts lose ~7% against pieces of 256
 * (model.ts INPLACE_PREFILL_CHUNK).
 */
export const PREFILL_CHUNK = 128;

/** Where a prompt piece starting at position `from` ends: the next multiple of PREFILL_CHUNK, or `end`. */
function pieceEnd(from: number, end: number): number {
  return Math.min(end, (Math.floor(from / PREFILL_CHUNK) + 1) * PREFILL_CHUNK);
}

/** A round's drafting state: the candidates so far and what the next draft step feeds. */
interface Proposal {
  /** Candidates the round may hold (jump-forward ones included); 0 when it drafts none. */
  cap: number;
  candidates: number[];
  /** When sampling: q_1..q_k, each [vocab]. */
  draftProbs: Float64Array[];
  /** With the head: its P(accept) of each candidate. */
  acceptProbs?: number[];
  /** Tokens the draft has not been fed: x's unseen ones, then candidates taken without a draft step. */
  unfed: number[];
  /** Whether the draft's cache has been brought up to x this round (draftInput). */
  caughtUp: boolean;
  /** Draft steps taken (the policy's s). */
  steps: number;
  /** Whether the policy (or the batch's budget) said stop. */
  stopped: boolean;
}

export class ContextLengthError extends Error {
  override name = 'ContextLengthError';
}

export class SpeculativeDecoder {
  /** Pass costs at the current load, measured on this decoder's passes (the auto threshold of specdec++). */
  readonly costs = new PassCostModel();

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
    /** One-run draft phases of `draft` and `headDraft` (draft-phase.ts), used where a round can run one. */
    readonly phases: readonly DraftPhase[] = [],
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
    if (prompt.length === 0) throw new RequestError('the prompt has no tokens');
    if (prompt.length >= this.contextLength) {
      throw new ContextLengthError(`the prompt has ${prompt.length} tokens; the model's context is ${this.contextLength}`);
    }
    // specdec++ without a threshold of its own: the head's recommended one as the prior, then
    // chosen from the measured costs each round (cost-model.ts). Not for seeded sampling: which
    // candidates are drafted changes which random draws make the output, and a seed must give
    // the same output whatever the load, at its start as while it runs.
    const recommended = recommendedThresholdAt(this.head, decodingTemperature(opts.sampling));
    const seeded = !isGreedy(opts.sampling) && opts.seed !== undefined;
    const auto = opts.policy.policy === 'specdec++' && opts.policy.threshold === undefined;
    const spec = withDefaultThreshold(opts.policy, recommended);
    const policy = createPolicy(spec);
    const adaptive = auto && !seeded;
    const autoAnchor = adaptive && spec.policy === 'specdec++' ? spec.threshold : undefined;
    // A policy that never drafts feeds no draft (nor fills its cache with the prompt).
    const draft = policy.maxDraft === 0 ? undefined : policy.needsHead ? (this.headDraft ?? this.draft) : this.draft;
    if (policy.maxDraft > 0 && !draft) throw new RequestError(`policy ${policy.name} needs a draft model`, 'speculative.policy');
    if (policy.needsHead) {
      if (!this.head) throw new RequestError(`policy ${policy.name} needs an acceptance head`, 'speculative.policy');
      if (!draft?.hasAcceptLogit && !draft?.hasHiddenState) {
        throw new RequestError(`policy ${policy.name} needs a draft that outputs last_hidden_state (specd models prepare-draft)`, 'speculative.policy');
      }
    }
    const phase = opts.draftPhase === 'per-step' ? undefined : this.phases.find((p) => p.draft === draft);
    return new Generation(this.target, draft, this.head, prompt, opts, policy, this.costs, autoAnchor, phase);
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
  private readonly promptLength: number;
  /** Prompt tokens the target's cache held when the generation started (prefix caching): OpenAI's `cached_tokens`. */
  readonly cachedPromptTokens: number;
  /** Whether this generation's specdec++ threshold (and whether it drafts) follows the load (`--threshold auto`). */
  get adaptive(): boolean {
    return this.autoAnchor !== undefined;
  }

  /** Time the draft spent catching up this round, in ms (catchUpMs). */
  private catchUpRoundMs = 0;
  /** Time the draft spent on the prompt, not yet spread over rounds (takePromptFeedShare). */
  private promptFeedMs = 0;

  /** The round in progress (between beginRound and finishRound). */
  private proposal: Proposal | undefined;
  /** With a draft-free policy (`ngram`, `suffix`): the proposer of this sequence's candidates. */
  private readonly draftFree: DraftFreeProposer | undefined;
  /** The draft-free proposal of the round in progress. */
  private draftFreeRound: RoundProposal | undefined;
  /** Prefill time not yet counted in a round's targetMs. */
  private prefillMs = 0;

  constructor(
    private readonly target: DecoderModel,
    private readonly draft: DecoderModel | undefined,
    private readonly head: AcceptancePredictor | undefined,
    prompt: readonly number[],
    private readonly opts: GenerateOptions,
    private readonly policy: StopPolicy,
    /** Where this generation's passes and rounds are measured. */
    readonly costModel: PassCostModel = new PassCostModel(),
    /** With specdec++ and no threshold given: h at batch size 1, adapted each round to the load (cost-model.ts). */
    private readonly autoAnchor?: number,
    /** The draft's one-run draft phase, when it has one. */
    private readonly phase?: DraftPhase,
  ) {
    this.x = [...prompt];
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
    if (isDraftFree(opts.policy)) {
      try {
        this.draftFree = new DraftFreeProposer(draftFreeOptions(opts.policy, target.info.vocabSize));
      } catch (err) {
        if (err instanceof ProposerOptionError) throw new RequestError(err.message, `speculative.${err.option}`);
        throw err;
      }
      this.draftFree.add(0, prompt);
    }
    if (this.maxNew === 0) this.finish('length');
  }

  get done(): boolean {
    return this.output.done;
  }

  get finishReason(): FinishReason | undefined {
    return this.output.finishReason;
  }

  /** Run one round (after feeding the prompt, on the first); returns the tokens it added to the sequence (`output` says which are the output). */
  async step(): Promise<number[]> {
    if (this.done) return [];
    try {
      while (this.prefillPending > 0) await this.prefill();
      return await this.round();
    } catch (err) {
      this.discard();
      throw err;
    }
  }

  /** One round of this sequence alone: the phases below, each pass over this sequence only. */
  private async round(): Promise<number[]> {
    this.beginRound(1);
    const draftStart = performance.now();
    await this.draftInOneRun();
    for (let input = await this.draftInput(); input; input = await this.draftInput()) {
      const stepStart = performance.now();
      await this.takeDraft(await this.draftModel!.forwardWithHidden(this.draftCache!, input, 1));
      this.costModel.observeDraft(1, performance.now() - stepStart);
    }
    const draftMs = performance.now() - draftStart;
    const targetStart = performance.now();
    const input = this.verifyInput();
    const logits = await this.target.forward(this.targetCache, input, this.candidateCount + 1);
    const emitted = await this.finishRound(logits, draftMs, targetStart);
    this.costModel.observeVerify(1, input.length, performance.now() - targetStart);
    return emitted;
  }

  /**
   * Prompt tokens not yet in the target's KV cache, all but the last (which the first round
   * feeds): 0 once the prompt is in.
   */
  get prefillPending(): number {
    return Math.max(0, this.promptLength - 1 - this.targetCache.length);
  }

  /**
   * Feed the next piece of the prompt (all but its last token) to the target (the draft is fed
   * when a round first drafts: `draftInput`). Pieces end at multiples of PREFILL_CHUNK
   * positions (`pieceEnd`), so the cache's contents (and the output) do not depend on how many
   * pieces went in between other passes.
   * @returns tokens fed (0 once the prompt is in)
   */
  async prefill(): Promise<number> {
    const from = this.targetCache.length;
    const to = pieceEnd(from, this.promptLength - 1);
    if (to <= from) return 0;
    const start = performance.now();
    await this.target.forward(this.targetCache, this.x.slice(from, to), 0);
    const ms = performance.now() - start;
    // A target pass of many tokens for one sequence: what pins the cost model's cost of a token.
    this.costModel.observeVerify(1, to - from, ms);
    this.prefillMs += ms;
    return to - from;
  }

  /** The target model. */
  get targetModel(): DecoderModel {
    return this.target;
  }

  /** The draft model this generation's policy runs (the head's draft for specdec++), if any. */
  get draftModel(): DecoderModel | undefined {
    return this.draft;
  }

  /** The draft's KV cache (for batched passes: scheduler.ts). */
  get draftKvCache(): KVCache | undefined {
    return this.draftCache;
  }

  /** The target's KV cache (for batched passes: scheduler.ts). */
  get targetKvCache(): KVCache {
    return this.targetCache;
  }

  /** Candidates proposed so far in the current round. */
  get candidateCount(): number {
    return this.proposal?.candidates.length ?? 0;
  }

  /** Tokens the current round's verification would feed the target now (unseen tokens + candidates). */
  get verifyLength(): number {
    return this.x.length - this.targetCache.length + this.candidateCount;
  }

  /**
   * Start a round: decide how many candidates it may hold. Candidates never run past what the
   * round may emit (one token always comes from the target) nor past either model's context.
   * With the auto threshold, specdec++'s h for this round follows from the load (cost-model.ts).
   * @param batch sequences whose rounds run together (1: alone)
   * @param arm under the auto threshold, how this round drafts (the cost model's
   *   `roundArm(batch)`, decided once for the whole batch); other policies ignore it
   */
  beginRound(batch: number, arm: RoundArm = 'anchor'): void {
    const x = this.x;
    const draft = this.draft;
    const remaining = this.maxNew - this.tokenIds.length;
    const cap = Math.min(remaining - 1, this.target.info.maxPositions - x.length - 1, draft ? draft.info.maxPositions - x.length + 1 : 0);
    let worthIt = true;
    this.catchUpRoundMs = 0;
    if (this.autoAnchor !== undefined && this.policy instanceof SpecDecPlusPlusPolicy) {
      this.policy.threshold = batch <= 1 ? this.costModel.aloneThreshold(this.autoAnchor) : arm === 'model' ? this.costModel.threshold(this.autoAnchor, batch) : this.autoAnchor;
      worthIt = arm !== 'plain';
    }
    const drafting = worthIt && draft !== undefined && this.draftCache !== undefined && Math.min(cap, this.policy.maxDraft) > 0;
    if (drafting) this.policy.begin();
    this.proposal = {
      cap: drafting ? cap : 0,
      candidates: [],
      draftProbs: [],
      acceptProbs: drafting && this.policy.needsHead ? [] : undefined,
      unfed: [],
      caughtUp: false,
      steps: 0,
      stopped: !drafting,
    };
    if (this.draftFree) this.proposeDraftFree();
  }

  /**
   * A draft-free round's candidates (copied by the proposer, no draft step): each a point mass,
   * q = one-hot(y), when sampling, so acceptance is min(1, p(y)) and the output stays the
   * target's (acceptance.ts). Not under a grammar, whose masks follow drafted candidates only.
   */
  private proposeDraftFree(): void {
    const p = this.proposal!;
    const cap = Math.min(this.maxNew - this.tokenIds.length - 1, this.target.info.maxPositions - this.x.length - 1);
    if (cap <= 0 || this.processor.constraint) return;
    const round = this.draftFree!.propose([0], cap)[0]!;
    if (round.tokens.length === 0) return;
    this.draftFreeRound = round;
    const vocab = this.target.info.vocabSize;
    p.candidates.push(...round.tokens);
    if (!this.greedy) for (const y of round.tokens) p.draftProbs.push(oneHot(y, vocab));
  }

  /** No more draft steps this round (a batch's token budget is spent); jump-forward tokens may still follow. */
  stopDrafting(): void {
    if (this.proposal) this.proposal.stopped = true;
  }

  /**
   * The tokens the next draft step feeds the draft, or undefined when the round's drafting is
   * over. With a constraint, candidates the grammar forces are taken here without a step (jump-forward).
   */
  async draftInput(): Promise<number[] | undefined> {
    const p = this.proposal!;
    if (p.cap <= 0) return undefined;
    if (!p.caughtUp) {
      p.caughtUp = true;
      await this.catchUpDraft();
      p.unfed = this.x.slice(this.draftCache!.length);
    }
    const constraint = this.processor.constraint;
    const jumpForward = constraint !== undefined && this.opts.jumpForward !== false;
    const vocab = this.target.info.vocabSize;
    while (p.candidates.length < p.cap) {
      if (constraint) await constraint.prepare(p.candidates);
      const forced = jumpForward ? constraint.forcedToken(p.candidates) : undefined;
      if (forced !== undefined) {
        // Jump-forward: the only token the grammar allows is accepted whatever p and q are
        // (both masked rows are one-hot on it), so it costs no draft step and no policy decision,
        // and it follows the policy's last candidate too.
        p.candidates.push(forced);
        p.unfed.push(forced);
        if (!this.greedy) p.draftProbs.push(oneHot(forced, vocab));
        p.acceptProbs?.push(1);
        continue;
      }
      if (p.stopped || p.steps >= this.policy.maxDraft) return undefined;
      return p.unfed;
    }
    return undefined;
  }

  /**
   * Bring the draft's cache to all but the last token of x when it lags by more than a round
   * leaves it (the prompt, or the tokens of rounds that did not draft), in pieces ending at
   * multiples of PREFILL_CHUNK positions, one pass each, as the target's prompt. A generation
   * that never drafts (the auto threshold at a large batch) never feeds its draft.
   */
  private async catchUpDraft(): Promise<void> {
    const draft = this.draft!;
    const cache = this.draftCache!;
    const end = this.x.length - 1;
    if (end - cache.length < 2) return;
    while (cache.length < end) {
      const from = cache.length;
      const start = performance.now();
      await draft.forwardWithHidden(cache, this.x.slice(from, pieceEnd(from, end)), 0);
      // The prompt's share, by tokens, is what drafting costs this sequence anyway.
      const ms = performance.now() - start;
      this.catchUpRoundMs += ms;
      this.promptFeedMs += (ms * Math.max(0, Math.min(cache.length, this.promptLength) - from)) / (cache.length - from);
    }
  }

  /** The time the draft spent catching up this round (so far), with its prompt or with tokens emitted by rounds that did not draft, in ms. */
  get catchUpMs(): number {
    return this.catchUpRoundMs;
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

  /** Take the outputs of the draft step fed `draftInput()`: sample its candidate and ask the policy whether to go on. */
  async takeDraft(out: ForwardOutputs): Promise<void> {
    const p = this.proposal!;
    const vocab = this.target.info.vocabSize;
    p.unfed = [];
    p.steps++;
    const head = this.policy.needsHead ? this.head : undefined;
    const logits = out.logits;
    const row = this.processor.apply(logits.subarray(logits.length - vocab), p.candidates);
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
      prob = this.policy.needsDraftProb ? softmaxAt(row, token) : 1;
    } else {
      q = toProbs(row, this.opts.sampling);
      token = sample(q, this.rng);
      prob = q[token]!;
    }
    const acceptProb = head ? acceptProbability(headLogit!, head.candidateWeights, candidateFeatures(row, token, decodingTemperature(this.opts.sampling))) : undefined;
    const verdict = this.policy.decide({ index: p.steps, token, prob, acceptProb });
    // Dropping y_s because of its own value is exact only when greedy. When sampling, the
    // token that replaces it would come from p_s instead of the y_s-then-accept/recover
    // path, biasing the output towards p_s wherever q_s(y_s) is low (e.g. p = (.5, .5),
    // q = (.9, .1), p_min = .5 emits token 0 with probability .55). So y_s is kept and
    // drafting stops: deciding after y_s whether to draft y_{s+1} keeps the rule exact.
    if (verdict === 'stop-drop' && this.greedy) {
      p.cap = 0;
      return;
    }
    p.candidates.push(token);
    if (q) p.draftProbs.push(q);
    if (acceptProb !== undefined) p.acceptProbs!.push(acceptProb);
    p.stopped = verdict !== 'continue';
    if (this.processor.constraint && this.eos.has(token)) p.cap = 0; // the grammar allows nothing after its end
    p.unfed = [token];
  }

  /**
   * Where this round can (a draft phase, greedy, no logits processing): its drafting in one run
   * of the draft phase (draft-phase.ts), after the draft's catching up (draftInput). Leaves the
   * proposal as step-by-step drafting would: the candidates, the head's probabilities, and
   * drafting stopped (a candidate the confidence rule rejects is dropped), so that draftInput()
   * then returns undefined.
   * @returns the tokens the phase fed the draft (0: it did not run)
   */
  async draftInOneRun(): Promise<number> {
    if (!this.phase || !this.greedy || this.processor.active) return 0;
    const p = this.proposal!;
    const maxSteps = Math.min(p.cap - p.candidates.length, this.policy.maxDraft - p.steps);
    // One step costs less as a plain pass: the loop's own setup outweighs a run saved (draft-phase.ts).
    if (maxSteps < MIN_PHASE_STEPS) return 0;
    const input = await this.draftInput();
    if (!input) return 0;
    const rule = this.policy.graphRule;
    const weights = this.policy.needsHead && this.head ? combinedCandidateWeights(this.head.candidateWeights, 0) : new Float32Array(PHASE_WEIGHTS);
    const start = performance.now();
    const out = await this.phase!.run(this.draftCache!, input, { ...rule, maxSteps, candidateWeights: weights });
    const perStep = (performance.now() - start) / out.tokens.length;
    for (let s = 0; s < out.tokens.length; s++) this.costModel.observeDraft(1, perStep);
    p.steps += out.tokens.length;
    p.unfed = [];
    p.stopped = true;
    const dropLast = out.probs.at(-1)! < rule.pMin;
    const kept = dropLast ? out.tokens.length - 1 : out.tokens.length;
    p.candidates.push(...out.tokens.slice(0, kept));
    p.acceptProbs?.push(...out.acceptProbs.slice(0, kept));
    if (dropLast) p.cap = 0;
    return input.length + out.tokens.length - 1;
  }

  /** What verification feeds the target: the tokens of x it has not seen, then the candidates. */
  verifyInput(): number[] {
    return this.x.slice(this.targetCache.length).concat(this.proposal!.candidates);
  }

  /**
   * Verify, accept, roll back and account, from the target's logits over `verifyInput()`.
   * @param logits [rows, vocab] row-major, rows >= k + 1: the last k + 1 are p_1..p_{k+1}
   * @param draftMs time the round's drafting took
   * @param targetStart performance.now() when verification began
   * @returns the tokens the round added to the sequence
   */
  async finishRound(logits: Float32Array, draftMs: number, targetStart: number): Promise<number[]> {
    const x = this.x;
    const { candidates, draftProbs, acceptProbs } = this.proposal!;
    this.proposal = undefined;
    const k = candidates.length;
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
    const targetMs = performance.now() - targetStart + this.prefillMs;
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
    this.draftFree?.observe(0, this.draftFreeRound, result.accepted, emitted);
    this.draftFreeRound = undefined;
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
    if (this.policy instanceof SpecDecPlusPlusPolicy) round.threshold = this.policy.threshold;
    this.costModel.observeRound(k, result.accepted);
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
    this.draftFree?.remove(0, this.output.finishReason !== 'abort');
    this.releaseCaches();
  }

  get stats(): GenerationStats {
    const wall = (this.endedAt ?? performance.now()) - this.startedAt;
    return this.collector.summary(wall, this.runMs() - this.runMsAtStart);
  }

  /** Free the caches and the grammar after a failed pass (the generation cannot go on). */
  discard(): void {
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

/** The distribution that puts all its mass on `token`. // [vocab] */
function oneHot(token: number, vocab: number): Float64Array {
  const q = new Float64Array(vocab);
  q[token] = 1;
  return q;
}
