/**
 * What a draft-free proposer (prompt lookup, suffix decoding) hands the round: a run of
 * candidate tokens copied from text it has seen, and how good the match behind it was.
 *
 * A draft-free proposal is a point mass: the candidate y_i is proposed with q_i(y_i) = 1, so
 * speculative sampling accepts it with probability min(1, p_i(y_i)) and, on a rejection, draws
 * the recovered token from norm(max(0, p_i - onehot(y_i))) (acceptance.ts); greedy decoding
 * accepts it while it equals the target's argmax. The output stays exact whatever is proposed.
 */
export interface DraftFreeProposal {
  /** y_1..y_k (k = 0: nothing matched). */
  tokens: number[];
  /**
   * Length of the matched context: the n of the n-gram (prompt lookup), the matched suffix
   * (suffix decoding); 0 when nothing matched.
   */
  matchLength: number;
  /**
   * The proposer's own estimate of each candidate's probability of being the continuation,
   * [k] (suffix decoding: the frequency-estimated probability of the path up to y_i;
   * prompt lookup: absent).
   */
  probs?: number[];
  /** Sum of `probs`: the expected number of candidates that continue the text, by the proposer's estimate. */
  score?: number;
}

/** The proposal with no candidates. */
export function emptyProposal(): DraftFreeProposal {
  return { tokens: [], matchLength: 0 };
}

/** A proposal option out of range: `option` is its name as the API and the CLI spell it. */
export class ProposerOptionError extends RangeError {
  override name = 'ProposerOptionError';
  constructor(
    message: string,
    readonly option: string,
  ) {
    super(message);
  }
}

/** Throws a ProposerOptionError unless `value` is an integer in [min, max]. */
export function checkInteger(option: string, value: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer in [${min}, ${max}]`;
    throw new ProposerOptionError(`${option} must be ${range}, got ${value}`, option);
  }
  return value;
}

/** Throws a ProposerOptionError unless `value` is a finite number in [min, max]. */
export function checkNumber(option: string, value: number, min: number, max: number): number {
  if (!Number.isFinite(value) || value < min || value > max) {
    throw new ProposerOptionError(`${option} must be a number in [${min}, ${max}], got ${value}`, option);
  }
  return value;
}
