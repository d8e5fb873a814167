/**
 * What the acceptance head knows about a candidate besides the draft's hidden state: three
 * features of the draft's distribution q at the candidate's position (q at temperature 1 of
 * the logits the candidate was drawn from, after logit bias and penalties), and how the head
 * combines them with its hidden-state logit.
 *
 *   phi(q, y) = [log q(y), log max q, entropy of q]
 *   P(accept y) = sigmoid(g + phi . u)
 *
 * g is the head's logit from the hidden state (head-graph.ts, run fused into the draft or on
 * its own) and u its candidate weights. Training data computes phi with the same function
 * (heads/collect.ts), so features mean the same in training and decoding.
 */

/** Number of candidate features. */
export const CANDIDATE_FEATURES = 3;

/**
 * phi(q, y) for the logits `row` and the candidate `token`.
 * @param row logits over the vocabulary // [vocab]
 * @returns [log q(token), log max q, entropy of q] (natural logarithms)
 */
export function candidateFeatures(row: ArrayLike<number>, token: number, into = new Float32Array(CANDIDATE_FEATURES)): Float32Array {
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
  into[0] = row[token]! - max - logZ;
  into[1] = -logZ;
  into[2] = logZ - s / z;
  return into;
}

/** sigmoid(logit + phi . u): the head's P(accept) of a candidate. */
export function acceptProbability(logit: number, weights: ArrayLike<number>, phi: ArrayLike<number>): number {
  let x = logit;
  for (let f = 0; f < CANDIDATE_FEATURES; f++) x += weights[f]! * phi[f]!;
  return 1 / (1 + Math.exp(-x));
}
