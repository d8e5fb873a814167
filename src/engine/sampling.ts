/**
 * Logits processing and sampling.
 *
 * The draft's and the target's logits go through exactly the same processing (temperature,
 * top-k, top-p), so the acceptance rule compares the distributions that are actually sampled
 * from. Temperature 0 means greedy decoding (argmax, no randomness). Per-row work never sorts
 * the vocabulary (truncation.ts); `bench/sampling-rows.ts` measures it per stage.
 */
import type { Rng } from './rng.js';
import { TokenProbs, supportOf } from './token-probs.js';
import { nucleus, topKIds } from './truncation.js';

export interface SamplingParams {
  /** 0 = greedy; otherwise logits are divided by it. Range [0, 2] in the API. */
  temperature: number;
  /** Keep only the k most likely tokens; 0 = off. */
  topK: number;
  /** Keep the smallest set of tokens whose probability sums to at least top_p; 1 = off. */
  topP: number;
}

export const GREEDY: SamplingParams = { temperature: 0, topK: 0, topP: 1 };

export function isGreedy(params: SamplingParams): boolean {
  return params.temperature <= 0;
}

/** The temperature decoding runs at: 0 when greedy. */
export function decodingTemperature(params: SamplingParams): number {
  return isGreedy(params) ? 0 : params.temperature;
}

/** `greedy` or `T = 0.7`, for reports. */
export function temperatureLabel(temperature: number): string {
  return temperature <= 0 ? 'greedy' : `T = ${temperature}`;
}

/** Index of the largest value (the first one on ties). */
export function argmax(row: ArrayLike<number>): number {
  let best = 0;
  let bestValue = row[0]!;
  for (let i = 1; i < row.length; i++) {
    const v = row[i]!;
    if (v > bestValue) {
      bestValue = v;
      best = i;
    }
  }
  return best;
}

/**
 * Plain softmax of a logits row at temperature `temperature` (> 0).
 * @param row logits // [vocab]
 * @returns probabilities // [vocab]
 */
export function softmax(row: ArrayLike<number>, temperature = 1): Float64Array {
  const vocab = row.length;
  const out = new Float64Array(vocab);
  let max = -Infinity;
  for (let i = 0; i < vocab; i++) if (row[i]! > max) max = row[i]!;
  if (max === Infinity) {
    // The limit: +Infinity logits share all the mass equally.
    let n = 0;
    for (let i = 0; i < vocab; i++) if (row[i] === Infinity) n++;
    for (let i = 0; i < vocab; i++) if (row[i] === Infinity) out[i] = 1 / n;
    return out;
  }
  const invT = 1 / temperature;
  let sum = 0;
  for (let i = 0; i < vocab; i++) {
    const e = Math.exp((row[i]! - max) * invT);
    out[i] = e;
    sum += e;
  }
  const inv = 1 / sum;
  for (let i = 0; i < vocab; i++) out[i] = out[i]! * inv;
  return out;
}

/**
 * softmax(row / T)[token] alone (what a policy needs of a greedy draft row), without building
 * the vector.
 * @param row logits // [vocab]
 */
export function softmaxAt(row: ArrayLike<number>, token: number, temperature = 1): number {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i]! > max) max = row[i]!;
  const invT = 1 / temperature;
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp((row[i]! - max) * invT);
  return Math.exp((row[token]! - max) * invT) / sum;
}

/**
 * The distribution sampled from for one logits row: softmax(logits / T), restricted to the
 * top-k tokens, then to the top-p nucleus of that (renormalised) distribution, renormalised
 * again. This is vLLM's and Hugging Face's order (`apply_top_k_top_p`; TopKLogitsWarper then
 * TopPLogitsWarper): top-p measures mass within what top-k kept. Tokens are ranked by logit,
 * ties by the lower id; the nucleus is the shortest ranked prefix whose mass reaches top_p.
 *
 * No sort of the vocabulary: top-k is a heap selection and only its k survivors are
 * exponentiated; top-p alone ranks only the tokens at its boundary (truncation.ts). With either
 * switched on the result is a TokenProbs listing its support, which `sample` and the acceptance
 * residual walk instead of the vocabulary.
 * @param row processed logits (penalties, bias and masks applied) // [vocab]
 * @param params temperature > 0
 * @returns probabilities // [vocab]; all zero when truncating a row whose every logit is -Infinity
 *   (a grammar's row after its end, which is never sampled)
 * @throws RangeError when the temperature is not positive
 */
export function toProbs(row: ArrayLike<number>, params: SamplingParams): Float64Array {
  if (!(params.temperature > 0)) throw new RangeError(`toProbs needs a temperature > 0, got ${params.temperature}`);
  const vocab = row.length;
  const topK = params.topK > 0 && params.topK < vocab ? params.topK : vocab;
  if (topK === vocab && params.topP >= 1) return softmax(row, params.temperature);
  const logits = row instanceof Float32Array ? row : Float32Array.from(row);
  if (topK === vocab) {
    const { ids, weights, mass } = nucleus(logits, params.temperature, params.topP);
    for (let j = 0; j < weights.length; j++) weights[j] = weights[j]! / mass;
    return TokenProbs.fromSparse(vocab, ids, weights);
  }
  const ranked = topKIds(logits, topK);
  if (ranked.length === 0) return TokenProbs.fromSparse(vocab, new Int32Array(0), []);
  const best = logits[ranked[0]!]!;
  const invT = 1 / params.temperature;
  const weights = new Float64Array(ranked.length);
  let total = 0;
  for (let j = 0; j < ranked.length; j++) {
    const w = best === Infinity ? (logits[ranked[j]!] === Infinity ? 1 : 0) : Math.exp((logits[ranked[j]!]! - best) * invT);
    weights[j] = w;
    total += w;
  }
  let keep = ranked.length;
  if (params.topP < 1) {
    const target = params.topP * total;
    let mass = 0;
    for (let j = 0; j < ranked.length; j++) {
      mass += weights[j]!;
      if (mass >= target) {
        keep = j + 1;
        break;
      }
    }
  }
  // Kept tokens in ascending id order, with their renormalised probabilities.
  const order = Array.from({ length: keep }, (_, j) => j).sort((a, b) => ranked[a]! - ranked[b]!);
  const ids = new Int32Array(keep);
  const probs = new Float64Array(keep);
  let kept = 0;
  for (let j = 0; j < keep; j++) kept += weights[j]!;
  let n = 0;
  for (const j of order) {
    if (!(weights[j]! > 0)) continue;
    ids[n] = ranked[j]!;
    probs[n++] = weights[j]! / kept;
  }
  return TokenProbs.fromSparse(vocab, ids.subarray(0, n), probs);
}

/**
 * Draw a token id from a probability vector (sums to 1 up to rounding): the first id, in
 * ascending order, where the running sum passes u ~ U[0, 1). A TokenProbs is walked over its
 * support only, with the same result.
 */
export function sample(probs: ArrayLike<number>, rng: Rng): number {
  const u = rng.next();
  let cumulative = 0;
  let last = 0;
  const support = supportOf(probs);
  if (support) {
    for (let j = 0; j < support.length; j++) {
      const i = support[j]!;
      cumulative += probs[i]!;
      last = i;
      if (u < cumulative) return i;
    }
    return last;
  }
  for (let i = 0; i < probs.length; i++) {
    const p = probs[i]!;
    if (p <= 0) continue;
    cumulative += p;
    last = i;
    if (u < cumulative) return i;
  }
  return last; // rounding left u just above the total mass
}
