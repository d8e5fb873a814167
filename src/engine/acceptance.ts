/**
 * The acceptance rule of speculative sampling (Leviathan et al. 2023, arXiv 2211.17192;
 * Chen et al. 2023, arXiv 2302.01318).
 *
 * Given k draft candidates y_1..y_k with draft probabilities q_i and the target's
 * distributions p_1..p_{k+1} from one verification pass:
 * - accepted tokens: y_i is accepted while u_i <= min(1, p_i(y_i) / q_i(y_i)), u_i ~ U[0, 1);
 * - recovered token: at the first rejection, a token drawn from norm(max(0, p_i - q_i));
 * - bonus token: when all k are accepted, a token drawn from p_{k+1}.
 * Every round therefore emits the accepted prefix plus exactly one more token, and the
 * emitted sequence is distributed exactly as if the target had sampled it alone.
 *
 * Greedy decoding is the limit where p and q are one-hot: accept while y_i equals the
 * target's argmax, then emit the target's argmax at the first mismatch (or after the last
 * candidate).
 */
import type { Rng } from './rng.js';
import { sample } from './sampling.js';
import { TokenProbs, supportOf } from './token-probs.js';

export interface AcceptanceResult {
  /** How many leading candidates were accepted (0..k). */
  accepted: number;
  /** The token emitted after them: recovered (on a rejection) or bonus (all accepted). */
  next: number;
}

/**
 * Greedy verification.
 * @param candidates y_1..y_k
 * @param targetArgmax argmax of p_1..p_{k+1}   // length k + 1
 */
export function acceptGreedy(candidates: readonly number[], targetArgmax: readonly number[]): AcceptanceResult {
  let n = 0;
  while (n < candidates.length && candidates[n] === targetArgmax[n]) n++; // Accept.
  return { accepted: n, next: targetArgmax[n]! }; // Recovered or bonus token.
}

/**
 * Sampled verification.
 * @param candidates y_1..y_k
 * @param draftProbs q_1..q_k     // each [vocab]
 * @param targetProbs p_1..p_{k+1} // each [vocab]
 */
export function acceptSampled(
  candidates: readonly number[],
  draftProbs: readonly Float64Array[],
  targetProbs: readonly Float64Array[],
  rng: Rng,
): AcceptanceResult {
  for (let i = 0; i < candidates.length; i++) {
    const y = candidates[i]!;
    const p = targetProbs[i]![y]!;
    const q = draftProbs[i]![y]!;
    // q(y) = 0 cannot happen for a token the draft sampled, except through rounding in a
    // truncated (top-k / top-p) distribution; treat it as a rejection rather than divide by 0.
    const u = rng.next();
    if (q > 0 && u * q <= p) continue; // Accept: u <= p / q, written without the division.
    // Reject: draw the recovered token from the residual distribution.
    return { accepted: i, next: sample(residual(targetProbs[i]!, draftProbs[i]!), rng) };
  }
  // All accepted: the bonus token comes from the target's next distribution.
  return { accepted: candidates.length, next: sample(targetProbs[candidates.length]!, rng) };
}

/**
 * norm(max(0, p - q)). When p <= q everywhere (the residual has no mass, which a rejection
 * makes possible only through rounding) the target distribution itself is returned. When p
 * lists its support (a TokenProbs from top-k / top-p) only that support is visited, since the
 * residual is zero wherever p is; the result then lists its own.
 * @param p target probabilities // [vocab]
 * @param q draft probabilities // [vocab]
 * @returns the residual distribution // [vocab]
 */
export function residual(p: Float64Array, q: Float64Array): Float64Array {
  const support = supportOf(p);
  if (support) {
    const ids: number[] = [];
    const values: number[] = [];
    let sum = 0;
    for (let j = 0; j < support.length; j++) {
      const i = support[j]!;
      const d = p[i]! - q[i]!;
      if (d > 0) {
        ids.push(i);
        values.push(d);
        sum += d;
      }
    }
    if (!(sum > 0)) return p;
    for (let j = 0; j < values.length; j++) values[j] = values[j]! / sum;
    return TokenProbs.fromSparse(p.length, Int32Array.from(ids), values);
  }
  const out = new Float64Array(p.length);
  let sum = 0;
  for (let i = 0; i < p.length; i++) {
    const d = p[i]! - q[i]!;
    if (d > 0) {
      out[i] = d;
      sum += d;
    }
  }
  if (!(sum > 0)) return p;
  for (let i = 0; i < out.length; i++) out[i]! /= sum;
  return out;
}
