/**
 * Logits processing and sampling.
 *
 * The draft's and the target's logits go through exactly the same processing (temperature,
 * top-k, top-p), so the acceptance rule compares the distributions that are actually sampled
 * from. Temperature 0 means greedy decoding (argmax, no randomness).
 */
import type { Rng } from './rng.js';

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

/** Plain softmax of a logits row at temperature `temperature` (> 0). */
export function softmax(row: ArrayLike<number>, temperature = 1): Float64Array {
  const out = new Float64Array(row.length);
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i]! > max) max = row[i]!;
  let sum = 0;
  for (let i = 0; i < row.length; i++) {
    const e = Math.exp((row[i]! - max) / temperature);
    out[i] = e;
    sum += e;
  }
  for (let i = 0; i < out.length; i++) out[i]! /= sum;
  return out;
}

/**
 * The distribution sampled from for one logits row: softmax(logits / T), restricted to the
 * top-k tokens and then to the top-p nucleus, renormalised. Requires temperature > 0.
 */
export function toProbs(row: ArrayLike<number>, params: SamplingParams): Float64Array {
  const probs = softmax(row, params.temperature);
  const vocab = probs.length;
  const topK = params.topK > 0 && params.topK < vocab ? params.topK : vocab;
  if (topK === vocab && params.topP >= 1) return probs;

  // Order token ids by probability, most likely first (ties: lower id first).
  const order = Array.from({ length: vocab }, (_, i) => i);
  order.sort((a, b) => probs[b]! - probs[a]! || a - b);
  let keep = topK;
  if (params.topP < 1) {
    let mass = 0;
    for (let i = 0; i < topK; i++) {
      mass += probs[order[i]!]!;
      if (mass >= params.topP) {
        keep = i + 1;
        break;
      }
    }
  }
  let kept = 0;
  for (let i = 0; i < keep; i++) kept += probs[order[i]!]!;
  for (let i = keep; i < vocab; i++) probs[order[i]!] = 0;
  for (let i = 0; i < keep; i++) probs[order[i]!]! /= kept;
  return probs;
}

/** Draw a token id from a probability vector (sums to 1 up to rounding). */
export function sample(probs: ArrayLike<number>, rng: Rng): number {
  const u = rng.next();
  let cumulative = 0;
  let last = 0;
  for (let i = 0; i < probs.length; i++) {
    const p = probs[i]!;
    if (p <= 0) continue;
    cumulative += p;
    last = i;
    if (u < cumulative) return i;
  }
  return last; // rounding left u just above the total mass
}
