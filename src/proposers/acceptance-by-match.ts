/**
 * Online acceptance of draft-free proposals by match length: how many of a prompt-lookup or
 * suffix-decoding proposal's candidates the target accepts, learned from the rounds verified
 * so far, so that a proposal can be weighed against the draft model's before it is verified.
 *
 * A proposal made from a match of length m is put in bucket min(m, maxMatchLength). Per bucket
 * and candidate position j (1-based, positions past maxPosition share the last), the tracker
 * keeps how often position j was verified (every earlier candidate accepted) and how often it
 * was accepted; the conditional acceptance rate is the posterior mean under a Beta prior,
 *
 *   alpha_j = (accepted_j + w a0) / (verified_j + w),    a0 = prior rate, w = prior weight,
 *
 * and the expected number of accepted candidates of a k-candidate proposal is
 *
 *   E[accepted | m, k] = sum_{j=1..k} prod_{i=1..j} alpha_i
 *
 * (the acceptance length of a chain whose j-th link holds with probability alpha_j given the
 * earlier ones; the same quantity SpecDec++ bounds with its head, arXiv 2405.19715, section 3).
 * With `decay` < 1 a bucket's counts are multiplied by decay before each observation, so that
 * the estimate follows a request whose text stops (or starts) repeating itself.
 */
import { checkInteger, checkNumber } from './proposal.js';

export interface MatchAcceptanceOptions {
  /** Match lengths from this one on share a bucket, >= 1. */
  maxMatchLength: number;
  /** Candidate positions from this one on share a rate, >= 1. */
  maxPosition: number;
  /** a0: the acceptance rate assumed before anything is observed, in [0, 1]. */
  priorRate: number;
  /** w: how many observations the prior weighs, > 0. */
  priorWeight: number;
  /** Multiplier of a bucket's counts per observation, in (0, 1] (1: every round weighs alike). */
  decay: number;
}

/**
 * Defaults: 4 buckets of match length and 4 positions (the 4th and later share a rate), a
 * prior of 0.6 weighing 2 rounds, decay 0.98 (a memory of about 50 rounds per bucket). A
 * request has a few dozen rounds, so an estimate with more cells stays at its prior: with 16
 * buckets x 32 positions and a prior of 0.5, E[accepted] of suffix decoding's proposals was
 * 0.51 / 0.63 / 0.85 of what the bundled target accepted on its greedy outputs of edit / gsm8k /
 * alpaca (12 x 96 each); with these defaults 0.82 / 0.89 / 1.03 (bench/copy-ceiling.ts,
 * bench/results/copy-ceiling-*.json). Hybrid weighs this estimate against the acceptance head's.
 */
export const MATCH_ACCEPTANCE_DEFAULTS: Readonly<MatchAcceptanceOptions> = { maxMatchLength: 4, maxPosition: 4, priorRate: 0.6, priorWeight: 2, decay: 0.98 };

export class AcceptanceByMatchLength {
  readonly options: MatchAcceptanceOptions;
  /** [maxMatchLength * maxPosition]: verified_j and accepted_j per bucket (row) and position (column). */
  private readonly verified: Float64Array;
  private readonly accepted: Float64Array;

  /** @throws ProposerOptionError for an option out of range */
  constructor(options: Partial<MatchAcceptanceOptions> = {}) {
    const d = MATCH_ACCEPTANCE_DEFAULTS;
    this.options = {
      maxMatchLength: checkInteger('maxMatchLength', options.maxMatchLength ?? d.maxMatchLength, 1),
      maxPosition: checkInteger('maxPosition', options.maxPosition ?? d.maxPosition, 1),
      priorRate: checkNumber('priorRate', options.priorRate ?? d.priorRate, 0, 1),
      priorWeight: checkNumber('priorWeight', options.priorWeight ?? d.priorWeight, Number.MIN_VALUE, Number.MAX_VALUE),
      decay: checkNumber('decay', options.decay ?? d.decay, Number.MIN_VALUE, 1),
    };
    const size = this.options.maxMatchLength * this.options.maxPosition;
    this.verified = new Float64Array(size);
    this.accepted = new Float64Array(size);
  }

  /**
   * Record a verified proposal.
   * @param matchLength the match it came from, >= 1
   * @param proposed candidates verified (k)
   * @param accepted how many leading candidates the target accepted (0..k)
   * @throws RangeError when accepted is not in [0, proposed] or matchLength < 1
   */
  observe(matchLength: number, proposed: number, accepted: number): void {
    if (!(matchLength >= 1)) throw new RangeError(`a proposal's match length must be >= 1, got ${matchLength}`);
    if (!Number.isInteger(accepted) || accepted < 0 || accepted > proposed) throw new RangeError(`accepted (${accepted}) must be an integer in [0, proposed = ${proposed}]`);
    const row = this.row(matchLength);
    const { maxPosition, decay } = this.options;
    if (decay < 1) {
      for (let j = 0; j < maxPosition; j++) {
        this.verified[row + j]! *= decay;
        this.accepted[row + j]! *= decay;
      }
    }
    // Positions 1..accepted were accepted; position accepted + 1 (if proposed) was rejected; later ones were never verified.
    for (let j = 0; j < Math.min(proposed, accepted + 1); j++) {
      const at = row + Math.min(j, maxPosition - 1);
      this.verified[at]!++;
      if (j < accepted) this.accepted[at]!++;
    }
  }

  /** alpha_j: P(candidate j accepted | candidates 1..j-1 accepted) for a match of this length; j >= 1. */
  rate(matchLength: number, position: number): number {
    const at = this.row(matchLength) + Math.min(Math.max(position, 1), this.options.maxPosition) - 1;
    const { priorRate, priorWeight } = this.options;
    return (this.accepted[at]! + priorWeight * priorRate) / (this.verified[at]! + priorWeight);
  }

  /** E[accepted candidates] of a `proposed`-candidate proposal from a match of this length (0 for no candidates). */
  expectedAccepted(matchLength: number, proposed: number): number {
    if (matchLength < 1 || proposed <= 0) return 0;
    let chain = 1;
    let sum = 0;
    for (let j = 1; j <= proposed; j++) {
      chain *= this.rate(matchLength, j);
      sum += chain;
    }
    return sum;
  }

  private row(matchLength: number): number {
    return (Math.min(Math.max(Math.floor(matchLength), 1), this.options.maxMatchLength) - 1) * this.options.maxPosition;
  }
}

/**
 * E[accepted candidates] of a draft proposal from its acceptance head's P(accept y_i | y_1..y_{i-1}
 * accepted), [k]: sum_j prod_{i<=j} P_i (SpecDec++, arXiv 2405.19715: the head's outputs are
 * exactly these conditional probabilities).
 */
export function expectedAcceptedFromHead(acceptProbs: readonly number[]): number {
  let chain = 1;
  let sum = 0;
  for (const p of acceptProbs) {
    chain *= p;
    sum += chain;
  }
  return sum;
}
