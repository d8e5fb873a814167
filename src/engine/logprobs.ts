/**
 * Log-probabilities of emitted tokens under the target's distribution (OpenAI's `logprobs` /
 * `top_logprobs`).
 *
 * The distribution is the target's processed one at that position: logits after penalties and
 * logit bias, then, when sampling, temperature, top-k and top-p (the distribution the token is
 * distributed as, whether the draft proposed it or the target drew it); when decoding greedily,
 * the softmax of the processed logits at temperature 1.
 */

/** Reported instead of log(0) (a token outside a top-k / top-p nucleus), as OpenAI does. */
export const MIN_LOGPROB = -9999;

/** Most alternatives a caller may ask for per position (OpenAI's limit for top_logprobs). */
export const MAX_TOP_LOGPROBS = 20;

export interface TokenLogprob {
  token: number;
  logprob: number;
  /** The most likely tokens at this position, most likely first (ties: lower id first). */
  top: { token: number; logprob: number }[];
}

/** log(softmax(row)) at temperature 1. */
export function logSoftmax(row: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i]! > max) max = row[i]!;
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i]! - max);
  const logZ = max + Math.log(sum);
  const out = new Float64Array(row.length);
  for (let i = 0; i < row.length; i++) out[i] = row[i]! - logZ;
  return out;
}

/** Elementwise log of a probability vector (zeros become -Infinity). */
export function logOf(probs: ArrayLike<number>): Float64Array {
  const out = new Float64Array(probs.length);
  for (let i = 0; i < probs.length; i++) out[i] = Math.log(probs[i]!);
  return out;
}

/**
 * The record of one emitted token: its log-probability and the `n` most likely tokens, leaving
 * out tokens of probability 0. Values are clamped to MIN_LOGPROB so they stay finite.
 * @param logprobs log-distribution at the token's position // [vocab]
 */
export function tokenLogprob(logprobs: Float64Array, token: number, n: number): TokenLogprob {
  const clamp = (v: number) => (v > MIN_LOGPROB ? v : MIN_LOGPROB);
  const top: { token: number; logprob: number }[] = [];
  // Keep the n best seen so far, sorted: O(vocab * n), cheap for n <= 20.
  for (let i = 0; i < logprobs.length && n > 0; i++) {
    const v = logprobs[i]!;
    if (v === -Infinity) continue;
    if (top.length === n && v <= top[n - 1]!.logprob) continue;
    let at = top.length;
    while (at > 0 && top[at - 1]!.logprob < v) at--;
    top.splice(at, 0, { token: i, logprob: v });
    if (top.length > n) top.pop();
  }
  return { token, logprob: clamp(logprobs[token]!), top: top.map((t) => ({ token: t.token, logprob: clamp(t.logprob) })) };
}
