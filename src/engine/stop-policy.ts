/**
 * Stop policies: how many candidates the draft proposes in a round.
 *
 * After each draft step the engine hands the policy the candidate it just sampled and asks
 * whether to keep drafting. Policies are small state machines, created once per generation
 * (`createPolicy`) and reset at the start of every round (`begin`).
 *
 * - `none`: no drafting; target-only decoding, the baseline every speedup is measured against.
 * - `fixed`: always K candidates.
 * - `confidence`: stop when the draft's probability of its candidate drops below p_min; that
 *   candidate is dropped (llama.cpp's rule).
 * - `specdec++`: stop when the acceptance head's estimate that at least one candidate will be
 *   rejected exceeds a threshold h (SpecDec++, arXiv 2405.19715); see {@link SpecDecPlusPlusPolicy}.
 *
 * The policies' plain-data specs, their knobs, ranges and parsing are in policy-registry.ts.
 */

import { DEFAULT_HYBRID_METHOD, hybridParts, type PolicySpec, PolicySpecError } from './policy-registry.js';

/** What a policy sees after draft step s. */
export interface DraftStep {
  /** s: 1-based index of the candidate within the round. */
  index: number;
  /** y_s, the candidate just sampled. */
  token: number;
  /** q_s(y_s): the draft's probability of y_s (at temperature 1 when decoding greedily). */
  prob: number;
  /**
   * The acceptance head's P(accept) for y_s, from the draft's hidden state that produced q_s
   * and y_s's candidate features (candidate-features.ts); undefined for policies that do not
   * ask for the head.
   */
  acceptProb?: number;
}

/**
 * The acceptance head as the engine uses it: P(accept y) = sigmoid(logit(hidden) + phi(q, y) . u)
 * (candidate-features.ts), where `hidden` is the draft's last hidden state at the position
 * whose distribution q the candidate y was drawn from.
 */
export interface AcceptancePredictor {
  /** Hidden-state width the predictor expects. */
  readonly width: number;
  /** The threshold h its metadata recommends: the default of `specdec++`. */
  readonly recommendedThreshold?: number;
  /** Recommended h per decoding temperature (0: greedy), when its metadata has them; they take precedence. */
  readonly thresholdsByTemperature?: readonly TemperatureThreshold[];
  /** u, the weights of the candidate features // [CANDIDATE_FEATURES] */
  readonly candidateWeights: Float32Array;
  /** The hidden-state part of the logit. @param hidden one hidden-state row // [width] */
  predictLogit(hidden: Float32Array): Promise<number>;
}

/**
 * `continue`: keep y_s and draft another; `stop`: keep y_s and verify; `stop-drop`: discard y_s
 * and verify (greedy decoding only: when sampling the engine keeps y_s, since dropping a
 * candidate because of its own value would bias the output; see speculative.ts).
 */
export type DraftVerdict = 'continue' | 'stop' | 'stop-drop';

export interface StopPolicy {
  /** Canonical spec string, e.g. `fixed:4`. */
  readonly name: string;
  /** Hard cap on candidates per round (0: never draft). */
  readonly maxDraft: number;
  /** Whether `DraftStep.prob` must be computed when decoding greedily. */
  readonly needsDraftProb: boolean;
  /** Whether `DraftStep.acceptProb` must be computed (needs an acceptance head). */
  readonly needsHead: boolean;
  begin(): void;
  decide(step: DraftStep): DraftVerdict;
  /**
   * The rule as the one-run draft phase evaluates it (draft-phase.ts), for greedy decoding:
   * K_min, h (above 1: off) and p_min (0: off); `maxDraft` caps the steps.
   */
  readonly graphRule: GraphStopRule;
}

/** A stop rule in the terms of the one-run draft phase (onnx/draft-loop-graph.ts). */
export interface GraphStopRule {
  kMin: number;
  /** Stop once 1 - prod P_accept > threshold; RULE_OFF turns it off. */
  threshold: number;
  /** Stop (dropping the candidate, greedy) once q(y) < pMin; 0 turns it off. */
  pMin: number;
}

/** A threshold that turns the SpecDec++ rule off (1 - prod is never above it). */
export const RULE_OFF = 2;
const NO_RULE: GraphStopRule = { kMin: 1, threshold: RULE_OFF, pMin: 0 };

export {
  DEFAULT_CONFIDENCE_K_MAX,
  DEFAULT_FIXED_K,
  DEFAULT_P_MIN,
  DEFAULT_SPECDEC_K_MAX,
  DEFAULT_SPECDEC_K_MIN,
  type DraftFreePolicySpec,
  draftFreeOptions,
  isDraftFree,
  MAX_DRAFT_LIMIT,
  type PolicyName,
  type PolicySpec,
  POLICY_NAMES,
  parsePolicy,
  PolicySpecError,
  validatePolicySpec,
} from './policy-registry.js';

class NonePolicy implements StopPolicy {
  constructor(readonly name: string = 'none') {}
  readonly maxDraft = 0;
  readonly needsDraftProb = false;
  readonly needsHead = false;
  readonly graphRule = NO_RULE;
  begin(): void {}
  decide(): DraftVerdict {
    return 'stop';
  }
}

class FixedPolicy implements StopPolicy {
  readonly needsDraftProb = false;
  readonly needsHead = false;
  readonly graphRule = NO_RULE;
  constructor(readonly maxDraft: number) {}
  get name(): string {
    return `fixed:${this.maxDraft}`;
  }
  begin(): void {}
  decide(step: DraftStep): DraftVerdict {
    return step.index >= this.maxDraft ? 'stop' : 'continue';
  }
}

class ConfidencePolicy implements StopPolicy {
  readonly needsDraftProb = true;
  readonly needsHead = false;
  constructor(
    readonly pMin: number,
    readonly maxDraft: number,
  ) {}
  get name(): string {
    return `confidence:${this.pMin}`;
  }
  get graphRule(): GraphStopRule {
    return { ...NO_RULE, pMin: this.pMin };
  }
  begin(): void {}
  decide(step: DraftStep): DraftVerdict {
    if (step.prob < this.pMin) return 'stop-drop';
    return step.index >= this.maxDraft ? 'stop' : 'continue';
  }
}

/**
 * SpecDec++ (Huang et al. 2024, arXiv 2405.19715): draft while the acceptance head thinks the
 * whole candidate block is likely to survive verification.
 *
 * After draft step s the head has judged every candidate so far, y_s included (its logit comes
 * from the hidden state that produced q_s, its candidate features from q_s and y_s); the policy
 * keeps prod = P(accept y_1) ... P(accept y_s) and stops when 1 - prod > h, the estimated
 * probability that at least one candidate is rejected. Steps s < K_min always continue; step
 * K_max always stops.
 *
 * On stopping, y_s is kept and verified ('stop'), greedy or not: its draft step has been paid
 * for, and verifying one more token costs a small part of a target pass (a few percent on the
 * bundled pair), so keeping it pays whenever P(accept y_s) is above that share, which it is
 * nearly always when the rule stops. (When sampling, dropping it would also bias the output.)
 */
export class SpecDecPlusPlusPolicy implements StopPolicy {
  readonly needsDraftProb = false;
  readonly needsHead = true;
  private prod = 1;

  constructor(
    /** h; the engine may change it between rounds (the auto threshold, cost-model.ts). */
    public threshold: number,
    readonly kMin: number,
    readonly maxDraft: number,
  ) {}

  get name(): string {
    return `specdec++:${this.threshold}`;
  }

  get graphRule(): GraphStopRule {
    return { kMin: this.kMin, threshold: this.threshold, pMin: 0 };
  }

  begin(): void {
    this.prod = 1;
  }

  decide(step: DraftStep): DraftVerdict {
    if (step.acceptProb === undefined) throw new RangeError(`specdec++: no acceptance probability at draft step ${step.index}`);
    this.prod *= step.acceptProb;
    if (step.index >= this.maxDraft) return 'stop';
    if (step.index < this.kMin) return 'continue';
    return 1 - this.prod > this.threshold ? 'stop' : 'continue';
  }
}

export interface TemperatureThreshold {
  temperature: number;
  threshold: number;
}

/**
 * The default h of `specdec++` at decoding temperature `temperature` (0: greedy): the head's
 * per-temperature thresholds interpolated linearly (held constant beyond the first and last),
 * else its single recommended h.
 */
export function recommendedThresholdAt(head: Pick<AcceptancePredictor, 'recommendedThreshold' | 'thresholdsByTemperature'> | undefined, temperature: number): number | undefined {
  const list = [...(head?.thresholdsByTemperature ?? [])].sort((a, b) => a.temperature - b.temperature);
  if (list.length === 0) return head?.recommendedThreshold;
  const t = Math.max(0, temperature);
  if (t <= list[0]!.temperature) return list[0]!.threshold;
  for (let i = 1; i < list.length; i++) {
    const a = list[i - 1]!;
    const b = list[i]!;
    if (t <= b.temperature) return Math.round((a.threshold + ((t - a.temperature) / (b.temperature - a.temperature)) * (b.threshold - a.threshold)) * 1000) / 1000;
  }
  return list.at(-1)!.threshold;
}

/** A specdec++ spec without a threshold gets `threshold` (the head's recommended h); other specs are returned as they are. */
export function withDefaultThreshold(spec: PolicySpec, threshold: number | undefined): PolicySpec {
  if (spec.policy !== 'specdec++' || spec.threshold !== undefined || threshold === undefined) return spec;
  return { ...spec, threshold };
}

export function createPolicy(spec: PolicySpec): StopPolicy {
  switch (spec.policy) {
    case 'none':
      return new NonePolicy();
    case 'ngram':
    case 'suffix':
      // The draft never runs: the round's candidates come from the proposers (speculative.ts).
      return new NonePolicy(spec.policy);
    case 'fixed':
      return new FixedPolicy(spec.k);
    case 'confidence':
      return new ConfidencePolicy(spec.pMin, spec.kMax);
    case 'specdec++':
      if (spec.threshold === undefined) {
        throw new PolicySpecError('specdec++ needs a threshold h: give one (specdec++:0.7, --threshold) or load a head whose metadata recommends one');
      }
      return new SpecDecPlusPlusPolicy(spec.threshold, spec.kMin, spec.kMax);
    case 'hybrid':
      // The draft side's rule; the draft-free side competes with it in the engine (hybrid-proposer.ts).
      return createPolicy(hybridParts(spec).draft);
  }
}

/** The canonical spec string, e.g. `fixed:4`. */
export function policyLabel(spec: PolicySpec): string {
  if (spec.policy === 'hybrid') return spec.method === DEFAULT_HYBRID_METHOD ? 'hybrid' : `hybrid:${spec.method}`;
  if (spec.policy === 'specdec++' && spec.threshold === undefined) return 'specdec++';
  return createPolicy(spec).name;
}
