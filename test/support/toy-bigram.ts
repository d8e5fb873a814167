/**
 * A toy target for distribution tests without a model: p(next | text) over V = 6 tokens
 * depends on the last token (a bigram model with zeros), a prompt that repeats itself (so that
 * draft-free proposers match often), and the target's exact joint distribution of the first
 * three tokens after the prompt, to compare sampled counts with (statistics.ts chiSquare).
 */
export const TOY_V = 6;

/** w / sum(w). */
export const normalise = (w: readonly number[]): Float64Array => {
  const s = w.reduce((a, b) => a + b, 0);
  return Float64Array.from(w, (x) => x / s);
};

/** p(next | last token) // [TOY_V][TOY_V] */
export const TOY_BIGRAM = [
  [30, 25, 20, 15, 10, 0],
  [5, 40, 5, 30, 20, 0],
  [10, 10, 10, 10, 10, 50],
  [0, 20, 20, 20, 20, 20],
  [60, 5, 5, 5, 5, 20],
  [15, 15, 15, 15, 15, 25],
].map(normalise);

/** The target's p(next | text) // [TOY_V] */
export const toyTargetAt = (text: readonly number[]): Float64Array => TOY_BIGRAM[text[text.length - 1]!]!;

/** A prompt that repeats itself, so that prompt lookup and suffix decoding match often. */
export const TOY_PROMPT = [0, 1, 3, 4, 0, 1, 3, 2, 5, 0, 1];

/** q = one-hot(y): a copied candidate's point mass // [TOY_V] */
export const toyOneHot = (y: number): Float64Array => {
  const q = new Float64Array(TOY_V);
  q[y] = 1;
  return q;
};

/** The index of three tokens in the joint distribution: (a V + b) V + c. */
export const tripleIndex = (a: number, b: number, c: number): number => (a * TOY_V + b) * TOY_V + c;

/** The target's own joint distribution of the first three tokens after TOY_PROMPT // [TOY_V^3] */
export function toyTargetJoint(): Float64Array {
  const out = new Float64Array(TOY_V ** 3);
  const p1 = toyTargetAt(TOY_PROMPT);
  for (let a = 0; a < TOY_V; a++) {
    const p2 = TOY_BIGRAM[a]!;
    for (let b = 0; b < TOY_V; b++) for (let c = 0; c < TOY_V; c++) out[tripleIndex(a, b, c)] = p1[a]! * p2[b]! * TOY_BIGRAM[b]![c]!;
  }
  return out;
}
