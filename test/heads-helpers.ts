/**
 * Shared helpers of the heads-*.test.ts suites (not a test file itself): acceptance heads for
 * fixture drafts and a chi-square goodness-of-fit test.
 */
import { join } from 'node:path';
import { headArchitecture, HEAD_FORMAT, saveHead } from '../src/heads/head-file.js';
import { type HeadParams, initHeadParams } from '../src/heads/head-graph.js';
import { draftIdentity } from '../src/heads/prepare-draft.js';

/** Writes a head for the draft in `draftDir` (random parameters unless given); returns its .head.onnx path. */
export function writeTestHead(dir: string, draftDir: string, width: number, options: { params?: HeadParams; seed?: number; threshold?: number; name?: string } = {}): string {
  const params = options.params ?? initHeadParams(width, options.seed ?? 0);
  const { onnxPath } = saveHead(join(dir, options.name ?? 'test'), params, {
    format: HEAD_FORMAT,
    architecture: headArchitecture(width),
    draft: { ...draftIdentity(draftDir), width },
    recommended_threshold: options.threshold ?? 0.5,
    created: new Date(0).toISOString(),
  });
  return onnxPath;
}

/** A head whose P(accept) is the constant `p` for every input (all weights 0, output bias logit(p)). */
export function constantHeadParams(width: number, p: number): HeadParams {
  return {
    width,
    W: new Float32Array(width * width),
    b: new Float32Array(width),
    v: new Float32Array(width),
    c: Float32Array.of(Math.log(p / (1 - p))),
  };
}

/** Standard normal upper tail. */
function normalSf(z: number): number {
  // Abramowitz-Stegun 7.1.26 on erfc, |error| < 1.5e-7.
  const x = Math.abs(z) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * x);
  const erfc = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))) * Math.exp(-x * x);
  return z >= 0 ? erfc / 2 : 1 - erfc / 2;
}

/**
 * Pearson's chi-square of `counts` against `probs`, cells with expected count below 5 pooled;
 * p-value by the Wilson-Hilferty approximation. Observations in zero-probability cells make
 * the p-value 0.
 */
export function chiSquarePValue(counts: ArrayLike<number>, probs: ArrayLike<number>): { stat: number; dof: number; pValue: number } {
  let n = 0;
  for (let i = 0; i < counts.length; i++) n += counts[i]!;
  const cells: { obs: number; exp: number }[] = [];
  const pool = { obs: 0, exp: 0 };
  for (let i = 0; i < counts.length; i++) {
    const exp = n * probs[i]!;
    if (probs[i]! <= 0) {
      if (counts[i]! > 0) return { stat: Infinity, dof: 0, pValue: 0 };
      continue;
    }
    if (exp < 5) {
      pool.obs += counts[i]!;
      pool.exp += exp;
    } else cells.push({ obs: counts[i]!, exp });
  }
  if (pool.exp > 0) cells.push(pool);
  let stat = 0;
  for (const c of cells) stat += (c.obs - c.exp) ** 2 / c.exp;
  const dof = cells.length - 1;
  if (dof <= 0) return { stat, dof, pValue: 1 };
  const z = (Math.cbrt(stat / dof) - (1 - 2 / (9 * dof))) / Math.sqrt(2 / (9 * dof));
  return { stat, dof, pValue: normalSf(z) };
}
