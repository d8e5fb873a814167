/**
 * A round's draft phase in one ONNX Runtime run (onnx/draft-loop-graph.ts): the draft steps,
 * the fused acceptance head and the stop rule of `fixed`, `confidence` and `specdec++` inside
 * one graph, over the draft's own KV buffers (kv-pool.ts). Greedy decoding without logits
 * processing (penalties, logit bias, grammars), where a candidate is the argmax of the draft's
 * raw logits; other rounds draft step by step (speculative.ts).
 *
 * Why: on the 2-core CPU a draft step of the bundled draft costs about 0.25 ms inside
 * `session.run()`, most of it the run's fixed cost (feeds, bindings, output copies), not the
 * model's arithmetic; one run per round pays that once.
 */
import * as ort from 'onnxruntime-node';
import {
  buildDraftLoopGraph,
  NoDraftPhaseError,
  PHASE_ACCEPT_OUTPUT,
  PHASE_IDS_INPUT,
  PHASE_K_MIN_INPUT,
  PHASE_MAX_STEPS_INPUT,
  PHASE_P_MIN_INPUT,
  PHASE_PROBS_OUTPUT,
  PHASE_THRESHOLD_INPUT,
  PHASE_TOKENS_OUTPUT,
  PHASE_WEIGHTS,
  PHASE_WEIGHTS_INPUT,
  phaseKvRowsOutput,
} from '../onnx/draft-loop-graph.js';
import { kvRowsOutput, PAST_LENGTH_INPUT } from '../onnx/inplace-attention.js';
import { onnx } from '../onnx/graph-builder.js';
import { BASE_FEATURES, knotWeights } from './candidate-features.js';
import type { KVCache } from './kv-cache.js';
import { PooledKVCache } from './kv-pool.js';
import type { DecoderModel } from './model.js';
import { spinningConfig } from './session-threads.js';
import type { GraphStopRule } from './stop-policy.js';

/** The stop rule of a round, as the draft-phase graph evaluates it (stop-policy.ts `graphRule`). */
export interface PhaseRule extends GraphStopRule {
  /** Most draft steps (the policy's K or K_max, capped by what the round may hold), >= 1. */
  maxSteps: number;
  /** The head's candidate weights combined for the decoding temperature ([BASE_FEATURES]; zeros without a head). */
  candidateWeights: Float32Array;
}

/** What the phase proposed. */
export interface PhaseResult {
  /** y_1..y_s, one per step taken. */
  tokens: number[];
  /** The head's P(accept y_i) (0.5 without a head). */
  acceptProbs: number[];
  /** q_i(y_i) at temperature 1. */
  probs: number[];
}

/**
 * Fewest draft steps a round may take for it to draft in one run: the loop's setup costs about a
 * draft step's run (bundled draft, 2-core CPU: one step in one run took 1.2x its CPU time as a
 * plain pass; 4 steps 0.88x, 8 steps 0.74x).
 */
export const MIN_PHASE_STEPS = 2;

export class DraftPhase {
  private constructor(
    private readonly session: ort.InferenceSession,
    /** The draft whose KV buffers the phase reads and whose cache it extends. */
    readonly draft: DecoderModel,
  ) {}

  /**
   * The draft phase of `draft`, or undefined when its graph cannot run one (not an in-place
   * graph on the CPU, grouped-query attention, float16 KV rows, or loaded without `keepGraph`).
   * @param threads intra-op threads of the phase's session (the draft's own: 1 by default)
   * @param spinning whether its intra-op threads spin-wait between runs (session-threads.ts)
   */
  static async create(draft: DecoderModel, threads = 1, spinning?: boolean): Promise<DraftPhase | undefined> {
    if (!draft.graphProto || !draft.kvInPlace || draft.device !== 'cpu') return undefined;
    let bytes: Uint8Array;
    try {
      bytes = onnx.ModelProto.encode(buildDraftLoopGraph(draft.graphProto)).finish();
    } catch (err) {
      if (err instanceof NoDraftPhaseError) return undefined;
      throw err;
    }
    const session = await ort.InferenceSession.create(bytes, {
      executionProviders: ['cpu'],
      graphOptimizationLevel: 'all',
      executionMode: 'sequential',
      intraOpNumThreads: threads,
      extra: spinningConfig(spinning),
      logSeverityLevel: 3,
    });
    return new DraftPhase(session, draft);
  }

  /**
   * Run the phase for one sequence: feed `unseen` (x's tokens the draft's cache lacks) and
   * draft until the rule stops; the cache is extended by `unseen` and every candidate but the
   * last, as step-by-step drafting leaves it.
   * @throws RangeError when the cache is not one of the draft's, nothing is fed, or maxSteps < 1
   */
  async run(cache: KVCache, unseen: readonly number[], rule: PhaseRule): Promise<PhaseResult> {
    if (!(cache instanceof PooledKVCache) || cache.slotPool !== this.draft.kvPool) throw new RangeError("the draft phase runs on the draft's own KV cache");
    if (unseen.length === 0) throw new RangeError('the draft phase needs at least one token to feed');
    if (!(rule.maxSteps >= 1)) throw new RangeError(`the draft phase needs maxSteps >= 1, got ${rule.maxSteps}`);
    const scalar64 = (v: number) => new ort.Tensor('int64', BigInt64Array.of(BigInt(v)), []);
    const scalar32 = (v: number) => new ort.Tensor('float32', Float32Array.of(v), []);
    const feeds: Record<string, ort.Tensor> = {
      [PHASE_IDS_INPUT]: new ort.Tensor('int64', BigInt64Array.from(unseen, BigInt), [1, unseen.length]),
      [PAST_LENGTH_INPUT]: new ort.Tensor('int64', BigInt64Array.of(BigInt(cache.length)), [1]),
      [PHASE_MAX_STEPS_INPUT]: scalar64(rule.maxSteps),
      [PHASE_K_MIN_INPUT]: scalar64(rule.kMin),
      [PHASE_THRESHOLD_INPUT]: scalar32(rule.threshold),
      [PHASE_P_MIN_INPUT]: scalar32(rule.pMin),
      [PHASE_WEIGHTS_INPUT]: new ort.Tensor('float32', rule.candidateWeights, [PHASE_WEIGHTS]),
    };
    // The buffers must hold every position the phase may feed (x's unseen tokens and all but the last candidate).
    cache.addFeeds(feeds, cache.length + unseen.length + rule.maxSteps - 1);
    const start = performance.now();
    const out = await this.session.run(feeds);
    this.draft.runMs += performance.now() - start;
    this.draft.runs++;
    const tokens = Array.from(out[PHASE_TOKENS_OUTPUT]!.data as BigInt64Array, Number);
    const rows: Record<string, ort.OnnxValue> = {};
    for (let i = 0; i < this.draft.info.layers; i++) rows[kvRowsOutput(i)] = out[phaseKvRowsOutput(i)]!;
    cache.append(rows, 0, [...unseen, ...tokens.slice(0, -1)]);
    return {
      tokens,
      acceptProbs: Array.from(out[PHASE_ACCEPT_OUTPUT]!.data as Float32Array),
      probs: Array.from(out[PHASE_PROBS_OUTPUT]!.data as Float32Array),
    };
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/**
 * The head's candidate weights u combined for decoding temperature `temperature`:
 * w_f = sum_j lambda_j(T) u_{j,f} (candidate-features.ts), so that phi(q, y, T) . u = w . base(q, y).
 * @param u // [knots * BASE_FEATURES]
 * @returns // [BASE_FEATURES]
 */
export function combinedCandidateWeights(u: ArrayLike<number>, temperature: number): Float32Array {
  const lambda = knotWeights(temperature);
  const w = new Float32Array(BASE_FEATURES);
  for (let j = 0; j < lambda.length; j++) for (let f = 0; f < BASE_FEATURES; f++) w[f]! += lambda[j]! * u[j * BASE_FEATURES + f]!;
  return w;
}
