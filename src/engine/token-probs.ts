/**
 * A probability vector over the vocabulary that also lists where it is non-zero.
 *
 * Top-k and top-p leave a few dozen tokens out of 150,000 with any mass. `TokenProbs` is an
 * ordinary dense `Float64Array` (so every caller that indexes it by token id keeps working) with
 * `support`: the ids of its non-zero entries in ascending order. Sampling and the acceptance
 * residual walk the support instead of the vocabulary; walking it in ascending id order adds
 * the same numbers in the same order as a dense scan, so draws are identical either way.
 */
export class TokenProbs extends Float64Array {
  /** Ids t with probs[t] > 0, ascending. // [support size] */
  support: Int32Array = EMPTY;

  /** Methods that build a new array (`map`, `slice`, ...) return plain Float64Arrays: they do not carry a support. */
  static get [Symbol.species](): Float64ArrayConstructor {
    return Float64Array;
  }

  /**
   * A vector of `vocab` entries, zero except `probs[ids[j]] = values[j]`.
   * @param ids token ids, ascending, each in [0, vocab) // [n]
   * @param values their probabilities, > 0 // [n]
   */
  static fromSparse(vocab: number, ids: Int32Array, values: ArrayLike<number>): TokenProbs {
    const out = new TokenProbs(vocab);
    for (let j = 0; j < ids.length; j++) out[ids[j]!] = values[j]!;
    out.support = ids;
    return out;
  }
}

const EMPTY = new Int32Array(0);

/** The support of `probs` when it lists one (a TokenProbs), else undefined (scan the whole vector). */
export function supportOf(probs: ArrayLike<number>): Int32Array | undefined {
  return probs instanceof TokenProbs ? probs.support : undefined;
}
