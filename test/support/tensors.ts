/** Comparing model outputs in tests. */
import assert from 'node:assert/strict';
import type { DecoderModel } from '../../src/engine/model.js';

/** The largest |a[i] - b[i]|; NaN anywhere gives NaN (so a tolerance check fails). @throws AssertionError when the lengths differ */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, 'length');
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= m)) m = d;
  }
  return m;
}

/** Logits of a prompt, one more token, 4 at once, a rollback and 2 more, from a fresh cache: the passes speculation makes. */
export async function speculationPasses(model: DecoderModel, prompt: number[]): Promise<Float32Array[]> {
  const cache = model.newCache();
  try {
    const out = [await model.forward(cache, prompt), await model.forward(cache, [7]), await model.forward(cache, [8, 9, 10, 11])];
    await cache.crop(prompt.length + 2);
    out.push(await model.forward(cache, [12, 13]));
    return out;
  } finally {
    cache.release();
  }
}
