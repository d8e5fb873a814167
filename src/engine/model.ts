/**
 * A decoder-only language model on ONNX Runtime: loads the session once, checks its layout,
 * and runs forward passes that extend a sequence's KV cache.
 */
import { availableParallelism } from 'node:os';
import * as ort from 'onnxruntime-node';
import { type Device, executionProviders } from './device.js';
import { KVCache, type KvDtype, type KvLayout } from './kv-cache.js';
import { ModelLoadError } from '../errors.js';
import { checkExternalData } from '../onnx/external-data.js';
import { type ModelDir, readModelDir } from './model-dir.js';

export interface LoadOptions {
  device?: Device;
  deviceId?: number;
  /** Intra-op threads for this session (CPU); default: all cores. */
  threads?: number;
  /** ONNX variant (fp32, fp16, q4, ...). */
  dtype?: string;
  /** ONNX bytes to load instead of the directory's graph file (e.g. a draft prepared in memory). */
  model?: Uint8Array;
}

export interface ModelInfo extends KvLayout {
  dir: string;
  onnxPath: string;
  vocabSize: number;
  /** Longest sequence the model supports (Infinity when the config does not say). */
  maxPositions: number;
  eosTokenIds: number[];
  generationDefaults: ModelDir['generationDefaults'];
}

const KEY_INPUT = /^past_key_values\.(\d+)\.key$/;
/** Extra output of a draft prepared for an acceptance head: the input of the lm_head. */
export const HIDDEN_OUTPUT = 'last_hidden_state';
/** Extra output of a draft with the acceptance head fused into its graph: the head's hidden-state logit at each position. */
export const ACCEPT_OUTPUT = 'accept_logit';

function hostFloat32(t: ort.Tensor): Float32Array {
  return t.type === 'float16' ? float16ToFloat32(t.data as Uint16Array) : (t.data as Float32Array);
}

export class DecoderModel {
  /** Milliseconds spent inside session.run() and how many runs, since load. */
  runMs = 0;
  runs = 0;
  private readonly hasPositionIds: boolean;
  private readonly hasAttentionMask: boolean;

  private constructor(
    private readonly session: ort.InferenceSession,
    readonly info: ModelInfo,
  ) {
    this.hasPositionIds = session.inputNames.includes('position_ids');
    this.hasAttentionMask = session.inputNames.includes('attention_mask');
  }

  static async load(dir: string, opts: LoadOptions = {}): Promise<DecoderModel> {
    const modelDir = readModelDir(dir, opts.dtype);
    const sessionOptions: ort.InferenceSession.SessionOptions = {
      executionProviders: executionProviders(opts.device ?? 'cpu', opts.deviceId),
      graphOptimizationLevel: 'all',
      executionMode: 'sequential',
      intraOpNumThreads: opts.threads ?? availableParallelism(),
    };
    // ONNX Runtime's error for a truncated data file names the graph file; this one names the data file.
    if (!opts.model) checkExternalData(modelDir.onnxPath);
    let session: ort.InferenceSession;
    try {
      session = opts.model
        ? await ort.InferenceSession.create(opts.model, sessionOptions)
        : await ort.InferenceSession.create(modelDir.onnxPath, sessionOptions);
    } catch (err) {
      throw new ModelLoadError(`cannot load ${modelDir.onnxPath}: ${(err as Error).message}`, modelDir.onnxPath);
    }
    return new DecoderModel(session, inspectLayout(session, modelDir));
  }

  newCache(): KVCache {
    return new KVCache(this.info);
  }

  /**
   * Feed `tokens` at positions cache.length, cache.length + 1, ...; extends the cache and
   * returns the logits of every fed position.
   * @returns logits [tokens.length, vocab], row-major
   */
  async forward(cache: KVCache, tokens: readonly number[]): Promise<Float32Array> {
    return (await this.forwardWithHidden(cache, tokens)).logits;
  }

  /** Whether the graph outputs `last_hidden_state` (a draft prepared for an acceptance head). */
  get hasHiddenState(): boolean {
    return this.session.outputNames.includes(HIDDEN_OUTPUT);
  }

  /** Whether the graph outputs `accept_logit` (a draft with the acceptance head fused in). */
  get hasAcceptLogit(): boolean {
    return this.session.outputNames.includes(ACCEPT_OUTPUT);
  }

  /**
   * `forward`, also returning the final hidden states and the fused head's logit when the
   * graph outputs them.
   * @returns logits [tokens.length, vocab], hidden [tokens.length, width], acceptLogit [tokens.length], row-major
   */
  async forwardWithHidden(
    cache: KVCache,
    tokens: readonly number[],
  ): Promise<{ logits: Float32Array; hidden?: Float32Array; acceptLogit?: Float32Array }> {
    const past = cache.length;
    const n = tokens.length;
    const total = past + n;
    if (total > this.info.maxPositions) {
      throw new RangeError(`sequence of ${total} tokens exceeds the model's context of ${this.info.maxPositions}`);
    }
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', BigInt64Array.from(tokens, BigInt), [1, n]),
    };
    if (this.hasAttentionMask) feeds.attention_mask = new ort.Tensor('int64', new BigInt64Array(total).fill(1n), [1, total]);
    if (this.hasPositionIds) {
      const pos = new BigInt64Array(n);
      for (let i = 0; i < n; i++) pos[i] = BigInt(past + i);
      feeds.position_ids = new ort.Tensor('int64', pos, [1, n]);
    }
    cache.addFeeds(feeds);

    const t0 = performance.now();
    const out = await this.session.run(feeds);
    this.runMs += performance.now() - t0;
    this.runs++;

    cache.update(out, total);
    const hidden = out[HIDDEN_OUTPUT] as ort.Tensor | undefined;
    const acceptLogit = out[ACCEPT_OUTPUT] as ort.Tensor | undefined;
    return { logits: hostFloat32(out.logits as ort.Tensor), hidden: hidden && hostFloat32(hidden), acceptLogit: acceptLogit && hostFloat32(acceptLogit) };
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/** Check the session has the decoder layout and read its KV geometry, reporting every problem at once. */
function inspectLayout(session: ort.InferenceSession, dir: ModelDir): ModelInfo {
  const file = dir.onnxPath;
  const inputs = session.inputNames;
  const outputs = session.outputNames;
  const layers = inputs.filter((n) => KEY_INPUT.test(n)).length;
  const missing: string[] = [];
  if (!inputs.includes('input_ids')) missing.push('input input_ids');
  if (!outputs.includes('logits')) missing.push('output logits');
  if (layers === 0) missing.push('inputs past_key_values.{i}.key/value');
  for (let i = 0; i < layers; i++) {
    for (const kind of ['key', 'value']) {
      if (!inputs.includes(`past_key_values.${i}.${kind}`)) missing.push(`input past_key_values.${i}.${kind}`);
      if (!outputs.includes(`present.${i}.${kind}`)) missing.push(`output present.${i}.${kind}`);
    }
  }
  if (missing.length > 0) {
    throw new ModelLoadError(`${file}: not a decoder in the transformers.js/optimum layout; missing ${missing.join(', ')}`, file);
  }
  if (dir.config.layers !== undefined && dir.config.layers !== layers) {
    throw new ModelLoadError(`${dir.dir}/config.json: ${dir.config.layers} layers, but ${file} has ${layers}`, `${dir.dir}/config.json`, 'num_hidden_layers');
  }

  // KV geometry: the session's metadata first, the config second.
  const meta = session.inputMetadata.find((m) => m.name === 'past_key_values.0.key');
  let dtype: KvDtype = 'float32';
  let kvHeads = dir.config.kvHeads;
  let headDim = dir.config.headDim;
  if (meta && meta.isTensor) {
    if (meta.type !== 'float32' && meta.type !== 'float16') {
      throw new ModelLoadError(`${file}: KV cache type ${meta.type} is not supported (float32 or float16)`, file);
    }
    dtype = meta.type;
    const [, h, , d] = meta.shape;
    if (typeof h === 'number') kvHeads = h;
    if (typeof d === 'number') headDim = d;
  }
  if (kvHeads === undefined || headDim === undefined) {
    throw new ModelLoadError(`${dir.dir}/config.json: cannot tell the KV head count and head size (num_key_value_heads, head_dim)`, `${dir.dir}/config.json`);
  }
  return {
    dir: dir.dir,
    onnxPath: file,
    layers,
    kvHeads,
    headDim,
    dtype,
    vocabSize: dir.config.vocabSize,
    maxPositions: dir.config.maxPositions ?? Infinity,
    eosTokenIds: dir.eosTokenIds,
    generationDefaults: dir.generationDefaults,
  };
}

/** IEEE half-precision bits to float32. */
export function float16ToFloat32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const h = src[i]!;
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0) out[i] = sign * frac * 2 ** -24;
    else if (exp === 31) out[i] = frac ? NaN : sign * Infinity;
    else out[i] = sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  return out;
}
