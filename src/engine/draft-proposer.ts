/**
 * The draft model as a proposer (proposer.ts): candidates y_1, y_2, ... sampled one draft step
 * at a time, the stop policy (stop-policy.ts) asked after each whether to go on, the sequences
 * of a round drafting in lock-step (one pass per step and draft model: the head's draft is a
 * model of its own). A sequence drafting alone drafts in one ONNX Runtime run where it can
 * (draft-phase.ts: greedy, no logits processing). Before its first step of a round the draft is
 * fed the tokens of x it has not seen: usually 1, 2 after a round that accepted every candidate,
 * more after rounds that did not draft or for the prompt (catching up, in PREFILL_CHUNK pieces).
 *
 * With a grammar, a candidate the grammar forces is taken without a draft step (jump-forward).
 */
import { acceptProbability, candidateFeatures } from './candidate-features.js';
import { combinedCandidateWeights, type DraftPhase, MIN_PHASE_STEPS } from './draft-phase.js';
import type { KVCache } from './kv-cache.js';
import type { DecoderModel, ForwardOutputs } from './model.js';
import type { ProposeContext, ProposeRequest, Proposer } from './proposer.js';
import { argmax, decodingTemperature, sample, softmaxAt, toProbs } from './sampling.js';
import { pieceEnd, type Proposal, type Sequence } from './sequence.js';
import { probsOverVocabulary, rowOverVocabulary } from './vocab-map.js';
import type { AcceptancePredictor, StopPolicy } from './stop-policy.js';
import { PHASE_WEIGHTS } from '../onnx/draft-loop-graph.js';

/** One sequence's drafting in the round in progress. */
interface Drafting {
  seq: Sequence;
  policy: StopPolicy;
  /** The draft model (the head's for policies that need it); undefined when the sequence runs none. */
  model: DecoderModel | undefined;
  /** Candidates the round may hold (jump-forward ones included); 0 when it drafts none. */
  cap: number;
  candidates: number[];
  /** When sampling: q_1..q_k, each [vocab]. */
  draftProbs: Float64Array[];
  /** With the head: its P(accept) of each candidate. */
  acceptProbs?: number[];
  /** Tokens the draft has not been fed: x's unseen ones, then candidates taken without a draft step. */
  unfed: number[];
  /** Whether the draft's cache has been brought up to x this round. */
  caughtUp: boolean;
  /** Draft steps taken (the policy's s). */
  steps: number;
  /** Whether the policy (or the batch's budget) said stop. */
  stopped: boolean;
}

export class DraftModelProposer implements Proposer {
  constructor(
    /** The acceptance head, for policies that need one (specdec++). */
    private readonly head: AcceptancePredictor | undefined,
    /** One-run draft phases of the engine's drafts (draft-phase.ts). */
    private readonly phases: readonly DraftPhase[],
  ) {}

  async propose(requests: readonly ProposeRequest[], ctx: ProposeContext): Promise<Proposal[]> {
    const rounds = requests.map((r) => this.begin(r));
    if (rounds.length === 1 && ctx.live(rounds[0]!.seq)) {
      const d = rounds[0]!;
      await ctx.guard(d.seq, () => this.draftInOneRun(d, ctx));
    }
    let live = rounds.filter((d) => ctx.live(d.seq));
    for (;;) {
      const steps: { d: Drafting; input: number[] }[] = [];
      for (const d of live) {
        const input = await ctx.guard(d.seq, () => this.draftInput(d, ctx));
        if (input) steps.push({ d, input });
      }
      // Timed from here: a draft's catching up (in draftInput) is no step's cost.
      const stepStart = performance.now();
      if (steps.length === 0) break;
      for (const model of new Set(steps.map((s) => s.d.model!))) {
        const group = steps.filter((s) => s.d.model === model && ctx.live(s.d.seq));
        if (group.length === 0) continue;
        const outs = await ctx.passes.forward(model, 'draft', group.map((s) => s.d.seq.draftCache!), group.map((s) => s.input), 1);
        for (let i = 0; i < group.length; i++) await ctx.guard(group[i]!.d.seq, () => this.takeDraft(group[i]!.d, outs[i]!));
      }
      // The cost model sees the whole step (the sequences' own work on the draft's rows included), not the pass alone.
      ctx.observeDraftStep(steps.length, performance.now() - stepStart);
      live = live.filter((d) => ctx.live(d.seq));
      if (live.reduce((n, d) => n + d.seq.unverified + d.candidates.length, 0) >= ctx.verifyBudget) for (const d of live) d.stopped = true;
    }
    return rounds.map((d) => ({ tokens: d.candidates, draftProbs: d.draftProbs, acceptProbs: d.acceptProbs }));
  }

  /** Start a sequence's round: how many candidates it may hold, and its policy's state. */
  private begin({ sequence: seq, plan }: ProposeRequest): Drafting {
    const model = seq.draft;
    const cap = seq.candidateRoom(model);
    const drafting = plan.draft && model !== undefined && seq.draftCache !== undefined && Math.min(cap, plan.policy.maxDraft) > 0;
    if (drafting) plan.policy.begin();
    return {
      seq,
      policy: plan.policy,
      model,
      cap: drafting ? cap : 0,
      candidates: [],
      draftProbs: [],
      acceptProbs: drafting && plan.policy.needsHead ? [] : undefined,
      unfed: [],
      caughtUp: false,
      steps: 0,
      stopped: !drafting,
    };
  }

  /**
   * The tokens the next draft step feeds the draft, or undefined when the round's drafting is
   * over. With a constraint, candidates the grammar forces are taken here without a step (jump-forward).
   */
  private async draftInput(d: Drafting, ctx: ProposeContext): Promise<number[] | undefined> {
    const seq = d.seq;
    if (d.cap <= 0) return undefined;
    if (!d.caughtUp) {
      d.caughtUp = true;
      await this.catchUp(d, ctx);
      d.unfed = seq.tokens.slice(seq.draftCache!.length);
    }
    const constraint = seq.processor.constraint;
    const jumpForward = constraint !== undefined && seq.opts.jumpForward !== false;
    const vocab = seq.target.info.vocabSize;
    while (d.candidates.length < d.cap) {
      if (constraint) await constraint.prepare(d.candidates);
      const forced = jumpForward ? constraint.forcedToken(d.candidates) : undefined;
      if (forced !== undefined) {
        // Jump-forward: the only token the grammar allows is accepted whatever p and q are
        // (both masked rows are one-hot on it), so it costs no draft step and no policy decision,
        // and it follows the policy's last candidate too.
        d.candidates.push(forced);
        d.unfed.push(forced);
        if (!seq.greedy) d.draftProbs.push(oneHot(forced, vocab));
        d.acceptProbs?.push(1);
        continue;
      }
      if (d.stopped || d.steps >= d.policy.maxDraft) return undefined;
      return d.unfed;
    }
    return undefined;
  }

  /**
   * Bring the draft's cache to all but the last token of x when it lags by more than a round
   * leaves it (the prompt, or the tokens of rounds that did not draft), in pieces ending at
   * multiples of PREFILL_CHUNK positions, one `catch-up` pass each. A sequence that never
   * drafts (the auto threshold at a large batch) never feeds its draft.
   */
  private async catchUp(d: Drafting, ctx: ProposeContext): Promise<void> {
    const seq = d.seq;
    const cache = seq.draftCache!;
    const end = seq.tokens.length - 1;
    if (end - cache.length < 2) return;
    while (cache.length < end) {
      const from = cache.length;
      await ctx.passes.forward(d.model!, 'catch-up', [cache], [seq.tokens.slice(from, pieceEnd(from, end))], 0);
      // The prompt's share, by tokens, is what drafting costs this sequence anyway.
      const ms = ctx.passes.lastMs;
      seq.catchUpRoundMs += ms;
      seq.promptFeedMs += (ms * Math.max(0, Math.min(cache.length, seq.promptLength) - from)) / (cache.length - from);
    }
  }

  /** Take the outputs of the draft step fed `draftInput()`: sample its candidate and ask the policy whether to go on. */
  private async takeDraft(d: Drafting, out: ForwardOutputs): Promise<void> {
    const seq = d.seq;
    const vocab = seq.target.info.vocabSize;
    d.unfed = [];
    d.steps++;
    const head = d.policy.needsHead ? this.head : undefined;
    const logits = out.logits;
    // A draft returning its token map's columns alone (model.ts logitIds): column c is token ids[c];
    // processing indexes rows by token id, so it gets the row laid out over the vocabulary.
    let ids = d.model!.logitIds;
    let row = logits.subarray(logits.length - (ids ? ids.length : vocab));
    if (ids && seq.processor.active) {
      row = rowOverVocabulary(row, ids, vocab);
      ids = undefined;
    }
    row = seq.processor.apply(row, d.candidates);
    // The head's logit from the hidden state that produced this row: fused into the draft, or its own session.
    let headLogit: number | undefined;
    if (head) {
      if (out.acceptLogit) headLogit = out.acceptLogit[out.acceptLogit.length - 1]!;
      else headLogit = await head.predictLogit(out.hidden!.subarray(out.hidden!.length - head.width));
    }
    let token: number;
    let prob: number;
    let q: Float64Array | undefined;
    let column: number;
    if (seq.greedy) {
      column = argmax(row);
      prob = d.policy.needsDraftProb ? softmaxAt(row, column) : 1;
    } else {
      q = toProbs(row, seq.opts.sampling);
      column = sample(q, seq.rng);
      prob = q[column]!;
      if (ids) q = probsOverVocabulary(q, ids, vocab);
    }
    token = ids ? ids[column]! : column;
    const acceptProb = head ? acceptProbability(headLogit!, head.candidateWeights, candidateFeatures(row, column, decodingTemperature(seq.opts.sampling))) : undefined;
    const verdict = d.policy.decide({ index: d.steps, token, prob, acceptProb });
    // Dropping y_s because of its own value is exact only when greedy. When sampling, the
    // token that replaces it would come from p_s instead of the y_s-then-accept/recover
    // path, biasing the output towards p_s wherever q_s(y_s) is low (e.g. p = (.5, .5),
    // q = (.9, .1), p_min = .5 emits token 0 with probability .55). So y_s is kept and
    // drafting stops: deciding after y_s whether to draft y_{s+1} keeps the rule exact.
    if (verdict === 'stop-drop' && seq.greedy) {
      d.cap = 0;
      return;
    }
    d.candidates.push(token);
    if (q) d.draftProbs.push(q);
    if (acceptProb !== undefined) d.acceptProbs!.push(acceptProb);
    d.stopped = verdict !== 'continue';
    if (seq.processor.constraint && seq.eos.has(token)) d.cap = 0; // the grammar allows nothing after its end
    d.unfed = [token];
  }

  /**
   * Where the round can (a draft phase, greedy, no logits processing, not `per-step`): its
   * drafting in one run of the draft phase (draft-phase.ts), after the draft's catching up.
   * Leaves the round as step-by-step drafting would: the candidates, the head's probabilities,
   * and drafting stopped (a candidate the confidence rule rejects is dropped), so that
   * draftInput() then returns undefined.
   */
  private async draftInOneRun(d: Drafting, ctx: ProposeContext): Promise<void> {
    const seq = d.seq;
    const phase = seq.opts.draftPhase === 'per-step' ? undefined : this.phases.find((p) => p.draft === d.model);
    if (!phase || !seq.greedy || seq.processor.active) return;
    const maxSteps = Math.min(d.cap - d.candidates.length, d.policy.maxDraft - d.steps);
    // One step costs less as a plain pass: the loop's own setup outweighs a run saved (draft-phase.ts).
    if (maxSteps < MIN_PHASE_STEPS) return;
    const input = await this.draftInput(d, ctx);
    if (!input) return;
    const rule = d.policy.graphRule;
    const weights = d.policy.needsHead && this.head ? combinedCandidateWeights(this.head.candidateWeights, 0) : new Float32Array(PHASE_WEIGHTS);
    const cache: KVCache = seq.draftCache!;
    // The tokens fed: x's unseen ones and every candidate but the last.
    const out = await ctx.passes.run('draft', 1, (o) => input.length + o.tokens.length - 1, () => phase.run(cache, input, { ...rule, maxSteps, candidateWeights: weights }));
    const perStep = ctx.passes.lastMs / out.tokens.length;
    for (let s = 0; s < out.tokens.length; s++) ctx.observeDraftStep(1, perStep);
    d.steps += out.tokens.length;
    d.unfed = [];
    d.stopped = true;
    const dropLast = out.probs.at(-1)! < rule.pMin;
    const kept = dropLast ? out.tokens.length - 1 : out.tokens.length;
    d.candidates.push(...out.tokens.slice(0, kept));
    d.acceptProbs?.push(...out.acceptProbs.slice(0, kept));
    if (dropLast) d.cap = 0;
  }
}

/** The distribution that puts all its mass on `token`. // [vocab] */
export function oneHot(token: number, vocab: number): Float64Array {
  const q = new Float64Array(vocab);
  q[token] = 1;
  return q;
}
