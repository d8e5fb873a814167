/**
 * Random GPT-2 weights for synthetic benchmark models of any size, and a draft that agrees
 * with its target.
 *
 * The draft is the target's first `draftLayers` blocks with the same embeddings, final norm and
 * lm_head; the target's later blocks write to the residual stream through output projections
 * scaled by `deepScale`. A small scale makes the target's next-token distribution a perturbation
 * of the draft's, so speculation has something to accept, as with a real distilled pair; the
 * scale sets how often they disagree. Values are uniform with the given standard deviations,
 * from a seeded generator, so the same options give the same models.
 */
import { Rng } from '../engine/rng.js';
import type { Gpt2Block, Gpt2Weights } from '../onnx/gpt2-weights.js';

export interface RandomGpt2Options {
  vocab: number;
  hidden: number;
  heads: number;
  layers: number;
  /** MLP width (default 4 x hidden). */
  inner?: number;
  /** Position table size (default 1024). */
  positions?: number;
  seed?: number;
  /** Blocks the draft keeps (default 2). */
  draftLayers?: number;
  /** Scale of the output projections of the blocks beyond the draft's (default 0.04). */
  deepScale?: number;
}

export function randomGpt2Pair(options: RandomGpt2Options): { target: Gpt2Weights; draft: Gpt2Weights } {
  const { vocab, hidden: E, heads, layers } = options;
  const inner = options.inner ?? 4 * E;
  const positions = options.positions ?? 1024;
  const draftLayers = options.draftLayers ?? 2;
  const deepScale = options.deepScale ?? 0.04;
  if (draftLayers < 1 || draftLayers > layers) throw new RangeError(`draft layers must be in 1..${layers}`);
  if (E % heads !== 0) throw new RangeError(`width ${E} is not a multiple of ${heads} heads`);
  const uniform = uniformArrays(options.seed ?? 0);
  const norm = () => ({ gain: uniform(E, 0.05, 1), bias: uniform(E, 0.02) });
  const linear = (rows: number, cols: number, scale = 1) => ({ weight: uniform(rows * cols, scale / Math.sqrt(rows)), bias: uniform(cols, 0.02 * scale) });

  const wte = uniform(vocab * E, 1);
  const wpe = uniform(positions * E, 1);
  const blocks: Gpt2Block[] = [];
  for (let b = 0; b < layers; b++) {
    const scale = b < draftLayers ? 1 : deepScale;
    blocks.push({ ln1: norm(), qkv: linear(E, 3 * E), proj: linear(E, E, scale), ln2: norm(), fc: linear(E, inner), out: linear(inner, E, scale) });
  }
  // Untied: with lm_head = wte^T the current token's own embedding dominates and greedy text repeats one token.
  // Logits come out with a spread of a few units: peaked distributions, as a trained model's are.
  const lmHead = uniform(E * vocab, 3 / Math.sqrt(E));
  const target: Gpt2Weights = { vocab, hidden: E, inner, heads, positions, epsilon: 1e-5, wte, wpe, blocks, lnf: norm(), lmHead };
  return { target, draft: { ...target, blocks: blocks.slice(0, draftLayers) } };
}

/**
 * A seeded source of Float32Arrays of n values drawn uniformly with the given standard deviation
 * and mean (half-width std * sqrt(3)), one 32-bit draw of the project's generator (engine/rng.ts) each.
 */
export function uniformArrays(seed: number): (n: number, std: number, mean?: number) => Float32Array {
  const rng = new Rng(seed);
  return (n, std, mean = 0) => rng.uniforms(n, std, mean);
}
