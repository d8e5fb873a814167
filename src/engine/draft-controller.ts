/**
 * The draft controller: how each sequence drafts, decided by the engine rather than by the
 * sequences. At a sequence's start it fixes its policy (`admit`: specdec++'s threshold from the
 * head's metadata, and whether it follows the load); at every round, at every batch size
 * including one, it decides each sequence's arm (draft or not) and specdec++'s threshold h
 * from the measured pass costs (cost-model.ts), and it takes the round's evidence back.
 */
import { PassCostModel, type RoundArm } from './cost-model.js';
import type { RoundPlan } from './proposer.js';
import { decodingTemperature, isGreedy, type SamplingParams } from './sampling.js';
import { type AcceptancePredictor, createPolicy, type PolicySpec, recommendedThresholdAt, withDefaultThreshold } from './stop-policy.js';

/** A sequence's policy as admitted. */
export interface SequencePolicy {
  /** The spec with specdec++'s threshold filled in (the head's recommended h when none was given). */
  spec: PolicySpec;
  /**
   * With specdec++ and no threshold given, not seeded: h_1, the anchor the threshold adapts from
   * each round (`--threshold auto`); undefined when the spec's threshold holds.
   */
  anchor?: number;
}

/** A round's plans, one per sequence, and the arm the round played when some sequence follows the load. */
export interface BatchPlan {
  plans: RoundPlan[];
  arm?: RoundArm;
}

export class DraftController {
  /** Pass costs at the current load, measured on this engine's passes. */
  readonly costs = new PassCostModel();

  /** @param head the engine's acceptance head (its recommended thresholds), if any */
  constructor(private readonly head?: AcceptancePredictor) {}

  /**
   * A sequence's policy: specdec++ without a threshold of its own takes the head's recommended
   * one at the decoding temperature as the prior, then the threshold is chosen from the measured
   * costs each round. Not for seeded sampling: which candidates are drafted changes which random
   * draws make the output, and a seed must give the same output whatever the load, at its start
   * as while it runs.
   */
  admit(spec: PolicySpec, sampling: SamplingParams, seed: number | undefined): SequencePolicy {
    const recommended = recommendedThresholdAt(this.head, decodingTemperature(sampling));
    const seeded = !isGreedy(sampling) && seed !== undefined;
    const auto = spec.policy === 'specdec++' && spec.threshold === undefined;
    const filled = withDefaultThreshold(spec, recommended);
    return { spec: filled, anchor: auto && !seeded && filled.policy === 'specdec++' ? filled.threshold : undefined };
  }

  /**
   * How each sequence of a round of `policies.length` sequences drafts. Where some sequence
   * follows the load, the round's arm is the cost model's call, once per round (`roundArm`:
   * plain wherever the measured costs say drafting does not pay, `draftDepth` 0): those
   * sequences then draft with h = `aloneThreshold` when alone, with h(B) under `model`, h_1
   * under `anchor`, and not at all under `plain`; in a batch, at most `draftDepth` candidates
   * (at least K_min). Other sequences run their spec as it is.
   */
  planRound(policies: readonly SequencePolicy[]): BatchPlan {
    const batch = policies.length;
    const adaptive = policies.some((p) => p.anchor !== undefined);
    const arm = adaptive ? this.costs.roundArm(batch) : undefined;
    // In a batch, no deeper than the measured costs say pays; alone, the head's rule decides.
    const depth = adaptive && batch > 1 && arm !== 'plain' ? this.costs.draftDepth(batch) : undefined;
    const plans = policies.map(({ spec, anchor }): RoundPlan => {
      if (anchor === undefined || spec.policy !== 'specdec++') {
        return { draft: true, policy: createPolicy(spec), threshold: spec.policy === 'specdec++' ? spec.threshold : undefined };
      }
      const threshold = batch <= 1 ? this.costs.aloneThreshold(anchor) : arm === 'model' ? this.costs.threshold(anchor, batch) : anchor;
      const kMax = depth === undefined ? spec.kMax : Math.max(spec.kMin, Math.min(spec.kMax, depth));
      return { draft: arm !== 'plain', policy: createPolicy({ ...spec, threshold, kMax }), threshold };
    });
    return { plans, arm };
  }

  /**
   * A round's evidence, where it played an arm: `tokens` emitted by its `batch` sequences in
   * `ms` (catching up aside), and `catchUpMs` spent catching drafts up.
   */
  observeRound(batch: number, arm: RoundArm, tokens: number, ms: number, catchUpMs: number): void {
    this.costs.observeBatchRound(batch, arm, tokens, ms, catchUpMs);
  }
}
