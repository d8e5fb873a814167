/**
 * Reading a decoder model directory in the transformers.js / optimum layout:
 *
 *   config.json                 architecture (GPT-2 or Llama/Qwen field names)
 *   generation_config.json      optional: eos_token_id, sampling defaults
 *   tokenizer.json              the tokenizer
 *   tokenizer_config.json       chat_template, special tokens
 *   onnx/model{,_fp16,_q4,...}.onnx (+ model.onnx_data, model.onnx_data_1, ...)
 *
 * For dtypes q8 and q4 a model without its own variant file gets model.onnx quantized
 * (quantized-weights.ts).
 *
 * Precedence for shared settings: config.json < generation_config.json (< the request, later).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ModelLoadError } from '../errors.js';
import { parseLlama3RopeScaling, type Llama3RopeScaling } from '../onnx/rope.js';
import { isQuantizedDtype, quantizedWeightsFile } from './quantized-weights.js';

export { ModelLoadError };

/** Architecture facts normalised across config naming schemes. */
export interface ModelConfig {
  modelType: string;
  vocabSize: number;
  layers?: number;
  heads?: number;
  kvHeads?: number;
  hidden?: number;
  headDim?: number;
  /** Longest sequence (prompt + output) the model was trained for. */
  maxPositions?: number;
  /** RMSNorm epsilon (`rms_norm_eps`), where the config gives one. */
  rmsNormEps?: number;
  /** Rotary embeddings' base (`rope_theta`), where the config gives one. */
  ropeTheta?: number;
  /** Why rotary embeddings are neither the plain ones nor Llama 3.x's (`rope_scaling` of a type other than none/default/llama3, `partial_rotary_factor` < 1), or undefined. */
  ropeVariant?: string;
  /** `rope_scaling` of type `llama3` (onnx/rope.ts). */
  ropeScaling?: Llama3RopeScaling;
  /** Attention window (`sliding_window`) when the model uses one shorter than its context. */
  slidingWindow?: number;
}

export interface ModelDir {
  dir: string;
  onnxPath: string;
  config: ModelConfig;
  /** Token ids that end generation (generation_config.json, else config.json). */
  eosTokenIds: number[];
  /** Sampling defaults from generation_config.json, if any. */
  generationDefaults: { temperature?: number; topP?: number; topK?: number };
}

/** ONNX variants by dtype, as transformers.js names them. */
export const ONNX_VARIANTS: Record<string, string> = {
  fp32: 'model.onnx',
  fp16: 'model_fp16.onnx',
  q8: 'model_quantized.onnx',
  int8: 'model_int8.onnx',
  uint8: 'model_uint8.onnx',
  q4: 'model_q4.onnx',
  q4f16: 'model_q4f16.onnx',
  bnb4: 'model_bnb4.onnx',
};

export function readModelDir(dirArg: string, dtype = 'fp32'): ModelDir {
  const dir = resolve(dirArg);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new ModelLoadError(`model directory not found: ${dir}`, dir);
  }
  const configPath = join(dir, 'config.json');
  const raw = readJson(configPath, true)!;
  const config = normaliseConfig(raw, configPath);

  const genPath = join(dir, 'generation_config.json');
  const gen = readJson(genPath, false) ?? {};
  const eos = gen.eos_token_id ?? raw.eos_token_id;
  const eosTokenIds = eos === undefined || eos === null ? [] : (Array.isArray(eos) ? eos : [eos]).map(Number);
  if (eosTokenIds.some((id) => !Number.isInteger(id) || id < 0 || id >= config.vocabSize)) {
    throw new ModelLoadError(`${gen.eos_token_id !== undefined ? genPath : configPath}: eos_token_id ${JSON.stringify(eos)} is not a token id below vocab_size ${config.vocabSize}`, gen.eos_token_id !== undefined ? genPath : configPath, 'eos_token_id');
  }

  for (const f of ['tokenizer.json', 'tokenizer_config.json']) {
    if (!existsSync(join(dir, f))) throw new ModelLoadError(`missing ${join(dir, f)}`, join(dir, f));
  }

  const variant = ONNX_VARIANTS[dtype];
  if (!variant) throw new ModelLoadError(`unknown dtype "${dtype}"; expected one of ${Object.keys(ONNX_VARIANTS).join(', ')}`, dir, 'dtype');
  let onnxPath = join(dir, 'onnx', variant);
  // q8 / q4 without a file of the model's own: model.onnx quantized into the cache (quantized-weights.ts).
  if (isQuantizedDtype(dtype)) onnxPath = quantizedWeightsFile(onnxPath, join(dir, 'onnx', ONNX_VARIANTS.fp32!), dtype);
  if (!existsSync(onnxPath)) {
    throw new ModelLoadError(`missing ${onnxPath} (expected the transformers.js layout: onnx/${variant} in the model directory)`, onnxPath);
  }

  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
  return {
    dir,
    onnxPath,
    config,
    eosTokenIds,
    generationDefaults: { temperature: num(gen.temperature), topP: num(gen.top_p), topK: num(gen.top_k) },
  };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = Record<string, any>;

function readJson(path: string, required: boolean): Json | undefined {
  if (!existsSync(path)) {
    if (required) throw new ModelLoadError(`missing ${path}`, path);
    return undefined;
  }
  try {
    const v = JSON.parse(readFileSync(path, 'utf8'));
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not a JSON object');
    return v;
  } catch (err) {
    throw new ModelLoadError(`${path} is not valid JSON: ${(err as Error).message}`, path);
  }
}

/**
 * The longest context a config may declare: 2^24 = 16,777,216 positions (above every released
 * model's, e.g. 10M for Llama 4 Scout). A rebuilt Llama-family graph holds cos and sin tables of
 * positions x head_dim / 2 float32 each, 8 GiB at this bound with head_dim 128.
 */
export const MAX_CONTEXT = 2 ** 24;

/** Map GPT-2 (`n_layer`, `n_head`, `n_embd`) and Llama/Qwen (`num_hidden_layers`, ...) names onto one shape. */
export function normaliseConfig(raw: Json, file = 'config.json'): ModelConfig {
  const pick = (...names: string[]): number | undefined => {
    for (const n of names) {
      const v = raw[n] ?? raw.text_config?.[n];
      if (v !== undefined && v !== null) {
        if (!Number.isInteger(v) || v <= 0) throw new ModelLoadError(`${file}: field ${n} must be a positive integer, got ${JSON.stringify(v)}`, file, n);
        return v;
      }
    }
    return undefined;
  };
  const vocabSize = pick('vocab_size');
  if (vocabSize === undefined) throw new ModelLoadError(`${file}: missing field vocab_size`, file, 'vocab_size');
  const heads = pick('num_attention_heads', 'n_head', 'num_heads');
  const hidden = pick('hidden_size', 'n_embd', 'd_model');
  const maxPositions = pick('max_position_embeddings', 'n_positions', 'n_ctx', 'seq_length');
  if (maxPositions !== undefined && maxPositions > MAX_CONTEXT) {
    throw new ModelLoadError(
      `${file}: a context of ${maxPositions} positions (max_position_embeddings / n_positions) is beyond what specd can hold (at most ${MAX_CONTEXT}: the rotary tables of a rebuilt graph alone would take positions x head_dim x 4 bytes)`,
      file,
      'max_position_embeddings',
    );
  }
  const real = (name: string): number | undefined => {
    const v = raw[name] ?? raw.text_config?.[name];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new ModelLoadError(`${file}: field ${name} must be a positive number, got ${JSON.stringify(v)}`, file, name);
    return v;
  };
  const scaling = raw.rope_scaling ?? raw.text_config?.rope_scaling;
  const scalingType = scaling && typeof scaling === 'object' ? (scaling.rope_type ?? scaling.type) : undefined;
  const partial = real('partial_rotary_factor');
  let ropeScaling: Llama3RopeScaling | undefined;
  try {
    ropeScaling = parseLlama3RopeScaling(scaling);
  } catch (err) {
    throw new ModelLoadError(`${file}: ${(err as Error).message}`, file, 'rope_scaling');
  }
  const ropeVariant =
    scaling !== undefined && scaling !== null && scalingType !== 'default' && scalingType !== 'none' && !ropeScaling
      ? `rope_scaling ${JSON.stringify(scaling)}`
      : partial !== undefined && partial < 1
        ? `partial_rotary_factor ${partial}`
        : undefined;
  const window = raw.sliding_window ?? raw.text_config?.sliding_window;
  const windowed = (raw.use_sliding_window ?? raw.text_config?.use_sliding_window) !== false && typeof window === 'number' && window < (maxPositions ?? Infinity);
  return {
    modelType: typeof raw.model_type === 'string' ? raw.model_type : 'unknown',
    vocabSize,
    layers: pick('num_hidden_layers', 'n_layer', 'num_layers'),
    heads,
    kvHeads: pick('num_key_value_heads', 'multi_query_group_num') ?? heads,
    hidden,
    headDim: pick('head_dim') ?? (hidden && heads ? hidden / heads : undefined),
    maxPositions,
    rmsNormEps: real('rms_norm_eps'),
    ropeTheta: real('rope_theta'),
    ropeVariant,
    ...(ropeScaling ? { ropeScaling } : {}),
    slidingWindow: windowed ? window : undefined,
  };
}
