/**
 * What the acceptance head knows about a candidate besides the draft's hidden state: a bias and
 * three features of the draft's distribution q at the candidate's position (q at temperature 1 of
 * the logits the candidate was drawn from, after logit bias and penalties), the decoding
 * temperature, and how the head combines them with its hidden-state logit.
 *
 *   base(q, y) = [1, log q(y), log max q, entropy of q]
 *   phi(q, y, T) = [lambda_1(T) base, ..., lambda_m(T) base]
 *   P(accept y) = sigmoid(g + phi . u)
 *
 * The lambda_j(T) are the piecewise-linear interpolation weights of the decoding temperature
 * T between the knots TEMPERATURE_KNOTS (greedy decoding is T = 0; T beyond the last knot
 * counts as the last knot), so u is a table of four weights per knot, interpolated linearly
 * in T. The temperature matters because what "accepted" means changes with it: greedy
 * decoding accepts y when it is the target's argmax, sampling at T with probability
 * min(1, p_T(y) / q_T(y)); the same hidden state and q predict different things.
 *
 * g is the head's logit from the hidden state (head-graph.ts, run fused into the draft or on
 * its own) and u its candidate weights. Training data computes phi with the same function
 * (heads/training/collect.ts), so features mean the same in training and decoding.
 */

/** Decoding temperatures at which the candidate weights are learned (and between which they are interpolated). */
export const TEMPERATURE_KNOTS: readonly number[] = [0, 0.35, 0.7, 1];
/** The features per knot, in order: a bias, log q(y), log max q, entropy of q. */
export const BASE_FEATURE_NAMES = ['bias', 'log_q', 'log_max_q', 'entropy'] as const;
export const BASE_FEATURES = BASE_FEATURE_NAMES.length;
/** Number of candidate features. */
export const CANDIDATE_FEATURES = TEMPERATURE_KNOTS.length * BASE_FEATURES;

/**
 * Interpolation weights of temperature `t` over TEMPERATURE_KNOTS: at most two non-zero,
 * summing to 1.
 */
export function knotWeights(t: number): Float64Array {
  const knots = TEMPERATURE_KNOTS;
  const out = new Float64Array(knots.length);
  const x = Math.min(Math.max(t, knots[0]!), knots.at(-1)!);
  let j = 0;
  while (j < knots.length - 2 && x > knots[j + 1]!) j++;
  const f = (x - knots[j]!) / (knots[j + 1]! - knots[j]!);
  out[j] = 1 - f;
  out[j + 1] = f;
  return out;
}

/**
 * phi(q, y, T) for the logits `row`, the candidate `token` and the decoding temperature
 * (0 when greedy).
 * @param row logits over the vocabulary // [vocab]
 * @returns // [CANDIDATE_FEATURES] (natural logarithms)
 */
export function candidateFeatures(row: ArrayLike<number>, token: number, temperature: number, into = new Float32Array(CANDIDATE_FEATURES)): Float32Array {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i]! > max) max = row[i]!;
  // Z = sum e^(l - max); S = sum e^(l - max) (l - max); entropy = log Z - S / Z.
  let z = 0;
  let s = 0;
  for (let i = 0; i < row.length; i++) {
    const d = row[i]! - max;
    if (d === -Infinity) continue;
    const e = Math.exp(d);
    z += e;
    s += e * d;
  }
  const logZ = Math.log(z);
  const base = [1, row[token]! - max - logZ, -logZ, logZ - s / z];
  const lambda = knotWeights(temperature);
  for (let j = 0; j < lambda.length; j++) {
    for (let f = 0; f < BASE_FEATURES; f++) into[j * BASE_FEATURES + f] = lambda[j]! * base[f]!;
  }
  return into;
}

/** sigmoid(logit + phi . u): the head's P(accept) of a candidate. */
export function acceptProbability(logit: number, weights: ArrayLike<number>, phi: ArrayLike<number>): number {
  let x = logit;
  for (let f = 0; f < CANDIDATE_FEATURES; f++) x += weights[f]! * phi[f]!;
  return 1 / (1 + Math.exp(-x));
}
