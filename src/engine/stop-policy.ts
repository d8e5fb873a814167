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
 */

import { type DraftFreeOptions, DraftFreeProposer } from '../proposers/draft-free.js';
import { ProposerOptionError } from '../proposers/proposal.js';

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

/** Plain-data description of a policy (crosses worker boundaries, parsed from CLI and API). */
export type PolicySpec =
  | { policy: 'none' }
  | { policy: 'fixed'; k: number }
  | { policy: 'confidence'; pMin: number; kMax: number }
  /**
   * `threshold` absent (`auto`): the head's recommended one (see {@link withDefaultThreshold}),
   * adapted to the load each round unless the request samples with a seed (cost-model.ts).
   */
  | { policy: 'specdec++'; threshold?: number; kMin: number; kMax: number }
  /**
   * Prompt lookup (proposers/ngram.ts), no draft model: knobs left undefined take the
   * proposer's defaults for the target's vocabulary (proposers/draft-free.ts knobDefaultsFor).
   */
  | { policy: 'ngram'; promptLookupMin?: number; promptLookupMax?: number; numSpeculativeTokens?: number }
  /** Suffix decoding (proposers/suffix.ts), no draft model; knobs as for `ngram`, named as vLLM's. */
  | {
      policy: 'suffix';
      suffixDecodingMaxTreeDepth?: number;
      suffixDecodingMaxCachedRequests?: number;
      suffixDecodingMaxSpecFactor?: number;
      suffixDecodingMaxSpecOffset?: number;
      suffixDecodingMinTokenProb?: number;
      numSpeculativeTokens?: number;
    };

export type PolicyName = PolicySpec['policy'];
export const POLICY_NAMES: readonly PolicyName[] = ['none', 'fixed', 'confidence', 'specdec++', 'ngram', 'suffix'];

/** The draft-free policies: candidates copied from the text seen (proposers/), no draft model. */
export type DraftFreePolicySpec = Extract<PolicySpec, { policy: 'ngram' | 'suffix' }>;

export function isDraftFree(spec: PolicySpec): spec is DraftFreePolicySpec {
  return spec.policy === 'ngram' || spec.policy === 'suffix';
}

/** A draft-free spec's knobs as the proposers take them (proposers/draft-free.ts DraftFreeOptions). */
export function draftFreeOptions(spec: DraftFreePolicySpec, vocabSize?: number): DraftFreeOptions {
  const defined = <T extends object>(o: T): Partial<T> => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
  if (spec.policy === 'ngram') {
    const { promptLookupMin, promptLookupMax, numSpeculativeTokens } = spec;
    return { methods: ['ngram'], vocabSize, ngram: defined({ promptLookupMin, promptLookupMax, numSpeculativeTokens }) };
  }
  return {
    methods: ['suffix'],
    vocabSize,
    suffix: defined({
      maxTreeDepth: spec.suffixDecodingMaxTreeDepth,
      maxCachedRequests: spec.suffixDecodingMaxCachedRequests,
      maxSpecFactor: spec.suffixDecodingMaxSpecFactor,
      maxSpecOffset: spec.suffixDecodingMaxSpecOffset,
      minTokenProb: spec.suffixDecodingMinTokenProb,
      numSpeculativeTokens: spec.numSpeculativeTokens,
    }),
  };
}

/** Longest draft any policy may ask for; beyond it acceptance of the whole run is negligible. */
export const MAX_DRAFT_LIMIT = 32;
export const DEFAULT_FIXED_K = 4;
export const DEFAULT_P_MIN = 0.6;
export const DEFAULT_CONFIDENCE_K_MAX = 16;
/** specdec++ bounds: steps below K_MIN always continue, step K_MAX always stops. */
export const DEFAULT_SPECDEC_K_MIN = 1;
export const DEFAULT_SPECDEC_K_MAX = 16;

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
  }
}

export class PolicySpecError extends Error {
  override name = 'PolicySpecError';
}

/** Check ranges; throws PolicySpecError naming the bad knob. */
export function validatePolicySpec(spec: PolicySpec): PolicySpec {
  const intIn = (name: string, v: number, lo: number, hi: number) => {
    if (!Number.isInteger(v) || v < lo || v > hi) throw new PolicySpecError(`${name} must be an integer in [${lo}, ${hi}], got ${v}`);
  };
  switch (spec.policy) {
    case 'none':
      break;
    case 'ngram':
    case 'suffix':
      try {
        const o = draftFreeOptions(spec);
        new DraftFreeProposer(o); // checks every knob's range (the proposers' own checks)
      } catch (err) {
        if (err instanceof ProposerOptionError) throw new PolicySpecError(err.message);
        throw err;
      }
      break;
    case 'fixed':
      intIn('k', spec.k, 1, MAX_DRAFT_LIMIT);
      break;
    case 'confidence':
      if (!(spec.pMin >= 0 && spec.pMin <= 1)) throw new PolicySpecError(`p_min must be a number in [0, 1], got ${spec.pMin}`);
      intIn('k_max', spec.kMax, 1, MAX_DRAFT_LIMIT);
      break;
    case 'specdec++':
      if (spec.threshold !== undefined && !(spec.threshold >= 0 && spec.threshold <= 1)) {
        throw new PolicySpecError(`threshold must be a number in [0, 1], got ${spec.threshold}`);
      }
      intIn('k_max', spec.kMax, 1, MAX_DRAFT_LIMIT);
      intIn('k_min', spec.kMin, 1, spec.kMax);
      break;
    default:
      throw new PolicySpecError(`unknown policy ${JSON.stringify((spec as { policy: unknown }).policy)}; expected one of ${POLICY_NAMES.join(', ')}`);
  }
  return spec;
}

/**
 * Parse `none`, `fixed`, `fixed:K`, `confidence`, `confidence:P_MIN`, `specdec++`,
 * `specdec++:H`, `specdec++:auto` (the form used by the CLI's --policies lists and the
 * benchmark). A bare `specdec++` is `specdec++:auto`: its threshold comes from the head and the load.
 */
export function parsePolicy(text: string): PolicySpec {
  const [name, arg, extra] = text.trim().split(':');
  if (extra !== undefined) throw new PolicySpecError(`bad policy "${text}": expected NAME or NAME:VALUE`);
  const num = (what: string): number | undefined => {
    if (arg === undefined || arg === '') return undefined;
    const v = Number(arg);
    if (!Number.isFinite(v)) throw new PolicySpecError(`bad policy "${text}": ${what} must be a number`);
    return v;
  };
  switch (name) {
    case 'none':
      if (arg !== undefined) throw new PolicySpecError(`bad policy "${text}": none takes no value`);
      return { policy: 'none' };
    case 'ngram':
      // Every knob present (undefined: the proposer's default), so that the request field can set each.
      return validatePolicySpec({ policy: 'ngram', promptLookupMin: undefined, promptLookupMax: undefined, numSpeculativeTokens: num('num_speculative_tokens') });
    case 'suffix':
      return validatePolicySpec({
        policy: 'suffix',
        suffixDecodingMaxTreeDepth: undefined,
        suffixDecodingMaxCachedRequests: undefined,
        suffixDecodingMaxSpecFactor: undefined,
        suffixDecodingMaxSpecOffset: undefined,
        suffixDecodingMinTokenProb: undefined,
        numSpeculativeTokens: num('num_speculative_tokens'),
      });
    case 'fixed':
      return validatePolicySpec({ policy: 'fixed', k: num('K') ?? DEFAULT_FIXED_K });
    case 'confidence':
      return validatePolicySpec({ policy: 'confidence', pMin: num('p_min') ?? DEFAULT_P_MIN, kMax: DEFAULT_CONFIDENCE_K_MAX });
    case 'specdec++':
      return validatePolicySpec({ policy: 'specdec++', threshold: arg === 'auto' ? undefined : num('threshold'), kMin: DEFAULT_SPECDEC_K_MIN, kMax: DEFAULT_SPECDEC_K_MAX });
    default:
      throw new PolicySpecError(`unknown policy "${name}" in "${text}"; expected one of ${POLICY_NAMES.join(', ')}`);
  }
}

/** The canonical spec string, e.g. `fixed:4`. */
export function policyLabel(spec: PolicySpec): string {
  if (spec.policy === 'specdec++' && spec.threshold === undefined) return 'specdec++';
  return createPolicy(spec).name;
}
