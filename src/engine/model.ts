/**
 * A decoder-only language model on ONNX Runtime: loads the session once, checks its layout,
 * and runs forward passes that extend a sequence's KV cache.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { ModelLoadError } from '../errors.js';
import { checkExternalData } from '../onnx/external-data.js';
import { GRAPH_KIND_KEY, LOGITS_FROM_INPUT } from '../onnx/gpt2-graph.js';
import { kvRowsOutput, PACKED_INDEX_INPUT, PADDED_SOURCE_INPUT, PAST_LENGTH_INPUT, ROW_INDEPENDENT_KIND } from '../onnx/inplace-attention.js';
import { decoderGraphView, embeddingTables, NotRebuildableError } from '../onnx/graph-reading.js';
import { onnx, readModel, type ModelProto } from '../onnx/graph-builder.js';
import { changesLogits, DraftVocabError, type DraftVocabMap, type LogitColumns, mapDraftVocab } from '../onnx/draft-vocab-graph.js';
import { type Device, executionProviders, providerFailure } from './device.js';
import { GpuKVCache, KvCropper } from './gpu-kv-cache.js';
import { defaultGraph, fusedDecoder, fusedGraphError, type GraphChoice } from './graph-choice.js';
import { addKvFeeds, HostKVCache, type KVCache, type KvDtype, type KvLayout } from './kv-cache.js';
import { KvSlotPool, PooledKVCache } from './kv-pool.js';
import { spinningConfig } from './session-threads.js';
import { type ModelDir, readModelDir } from './model-dir.js';

export interface LoadOptions {
  device?: Device;
  deviceId?: number;
  /** Intra-op threads for this session (CPU); default: all cores. */
  threads?: number;
  /**
   * Whether the session's intra-op threads spin-wait for work between runs (ONNX Runtime's
   * `session.intra_op.allow_spinning`); default false (session-threads.ts).
   */
  spinning?: boolean;
  /** ONNX variant (fp32, fp16, q4, ...). */
  dtype?: string;
  /** ONNX bytes to load instead of the directory's graph file (e.g. a draft prepared in memory). */
  model?: Uint8Array;
  /** Run the exported graph or a rebuild (graph-choice.ts); default: inplace on the CPU, fused on WebGPU, exported on CUDA. */
  graph?: GraphChoice;
  /** Keep the decoded graph (`DecoderModel.graphProto`), e.g. to build a draft's one-run draft phase from it (draft-phase.ts). */
  keepGraph?: boolean;
  /**
   * A draft's logits laid out in the target's vocabulary, its lm_head restricted to a token map
   * (onnx/draft-vocab-graph.ts); needs a rebuilt graph. `info.vocabSize` is then `outVocab`.
   */
  vocabMap?: DraftVocabMap;
  /**
   * With `vocabMap`: 'kept' returns rows of the map's columns alone ([n, vocabMap.ids.length],
   * column c is token `logitIds[c]`), 'vocabulary' (default) rows of `info.vocabSize`.
   */
  logitColumns?: LogitColumns;
  /**
   * Automatic prefix caching (prefix-cache.ts) for a cache written in place: finished sequences'
   * rows stay in the pool and new caches start from the longest prefix of their prompt they
   * hold. Default false (each cache starts empty).
   */
  prefixCaching?: boolean;
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

/**
 * What a forward pass returns: logits [n, vocab], hidden [n, width], acceptLogit [n], row-major;
 * vocab is `logitIds.length` for a model that returns kept columns only (`DecoderModel.logitIds`).
 */
export interface ForwardOutputs {
  logits: Float32Array;
  hidden?: Float32Array;
  acceptLogit?: Float32Array;
}

/**
 * Longest input a WebGPU pass of a graph with fused attention (com.microsoft MultiHeadAttention)
 * is given: in onnxruntime-node 1.30 that operator computes wrong attention on WebGPU when 32 or
 * more positions are fed at once (measured: at 31 logits match the exported graph to 5e-5, at 32
 * they differ by 1-2), so longer inputs (prompts) are fed in pieces of at most 31 positions.
 */
export const MAX_WEBGPU_ATTENTION_SPAN = 31;

/**
 * Longest input one pass of an in-place graph is fed (inplace-attention.ts); a longer prompt
 * goes in pieces. Its attention over the fed tokens themselves is explicit ([heads, S, S] scores),
 * which for long prompts costs more than the pieces' passes (measured in docs/benchmarks.md,
 * "Where a token's time goes").
 */
export const INPLACE_PREFILL_CHUNK = 256;

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
  /**
   * The token id of each logits column when a row holds a draft's kept columns only
   * (`LoadOptions.logitColumns` 'kept'), ascending // [columns]; undefined when a row has
   * `info.vocabSize` columns, column j being token j.
   */
  logitIds?: Int32Array;
  private readonly hasPositionIds: boolean;
  private readonly hasAttentionMask: boolean;
  /** Whether the graph computes logits only for the rows asked for (built graphs, gpt2-graph.ts and llama-graph.ts). */
  private readonly hasLogitsFrom: boolean;
  /** Set when the graph writes the KV cache in place (inplace-attention.ts): the slots of every sequence's cache. */
  private readonly pool?: KvSlotPool;

  private constructor(
    private readonly session: ort.InferenceSession,
    readonly info: ModelInfo,
    readonly device: Device,
    /** Set when the KV cache stays on the GPU (WebGPU): the rollback graph. */
    private readonly cropper?: KvCropper,
    /** Most tokens one pass may feed; longer inputs are fed in pieces (see MAX_WEBGPU_ATTENTION_SPAN). */
    private readonly maxSpan = Infinity,
    /** The decoded graph the session runs, when loaded with `keepGraph` (weights inline). */
    private graph?: ModelProto,
    /** With prefix caching: what the cached rows depend on besides the tokens (model file, graph, dtype). */
    prefixIdentity?: string,
    /** The graph's attention is the row-independent one (KvSlotPool's option). */
    rowIndependent = false,
  ) {
    this.hasPositionIds = session.inputNames.includes('position_ids');
    this.hasAttentionMask = session.inputNames.includes('attention_mask');
    this.hasLogitsFrom = session.inputNames.includes(LOGITS_FROM_INPUT);
    if (session.inputNames.includes(PAST_LENGTH_INPUT)) this.pool = new KvSlotPool(info, info.maxPositions, prefixIdentity, rowIndependent);
  }

  /** The decoded graph the session runs, when loaded with `keepGraph` and not dropped since. */
  get graphProto(): ModelProto | undefined {
    return this.graph;
  }

  /** Let go of the decoded graph (its weights are a copy of the session's). */
  dropGraph(): void {
    this.graph = undefined;
  }

  /** Whether the KV cache is written in place (no copy of the past per pass; rollback = a length change). */
  get kvInPlace(): boolean {
    return this.pool !== undefined;
  }

  /** The in-place cache's slots and their memory, for reports (undefined when the cache is not written in place). */
  get kvPool(): KvSlotPool | undefined {
    return this.pool;
  }

  static async load(dir: string, opts: LoadOptions = {}): Promise<DecoderModel> {
    const modelDir = readModelDir(dir, opts.dtype);
    const device = opts.device ?? 'cpu';
    const providers = executionProviders(device, opts.deviceId);
    const sessionOptions: ort.InferenceSession.SessionOptions = {
      executionProviders: providers,
      graphOptimizationLevel: 'all',
      executionMode: 'sequential',
      intraOpNumThreads: opts.threads ?? availableParallelism(),
      extra: spinningConfig(opts.spinning),
      // Errors only: on GPU providers ONNX Runtime warns at every load that shape arithmetic runs on the CPU, as intended.
      logSeverityLevel: 3,
    };
    // ONNX Runtime's error for a truncated data file names the graph file; this one names the data file.
    if (!opts.model) checkExternalData(modelDir.onnxPath);
    const graph = opts.graph ?? defaultGraph(device);
    if (graph === 'inplace' && device !== 'cpu') {
      throw new ModelLoadError(`--graph inplace runs on the CPU only (the ${device} provider keeps its KV cache apart from the host memory it would be written into); use --graph fused or exported`, modelDir.onnxPath);
    }
    let { bytes, model } = chooseGraph(modelDir, opts.model, graph, opts.graph !== undefined);
    if (model) checkPositionTable(model, modelDir);
    if (opts.vocabMap && changesLogits(opts.vocabMap)) {
      if (!model) {
        throw new ModelLoadError(`${modelDir.onnxPath}: a draft vocabulary map (--speculative-token-map, or a vocab_size other than the target's) needs a rebuilt graph (--graph inplace or fused), not the exported one`, modelDir.onnxPath);
      }
      try {
        mapDraftVocab(model, opts.vocabMap, opts.logitColumns);
      } catch (err) {
        if (!(err instanceof DraftVocabError)) throw err;
        // The map's draft width is config.json's vocab_size: a graph of another width disagrees with it.
        const config = join(modelDir.dir, 'config.json');
        throw new ModelLoadError(`${modelDir.onnxPath}: cannot lay the draft's logits onto the target's vocabulary: ${err.message}; the graph disagrees with ${config} (vocab_size ${opts.vocabMap.draftVocab})`, config);
      }
      bytes = onnx.ModelProto.encode(model).finish();
    }
    let maxSpan = Infinity;
    if (device === 'webgpu') {
      const header = model ?? readModel(bytes ?? readFileSync(modelDir.onnxPath));
      sessionOptions.preferredOutputLocation = webgpuOutputLocations(header);
      const kind = header.metadataProps.find((p) => p.key === GRAPH_KIND_KEY)?.value ?? '';
      if (kind.includes('attention=fused')) maxSpan = MAX_WEBGPU_ATTENTION_SPAN;
    }
    let session: ort.InferenceSession;
    try {
      session = bytes
        ? await ort.InferenceSession.create(bytes, sessionOptions)
        : await ort.InferenceSession.create(modelDir.onnxPath, sessionOptions);
    } catch (err) {
      throw new ModelLoadError(`cannot load ${modelDir.onnxPath}: ${providerFailure(device, (err as Error).message)}`, modelDir.onnxPath);
    }
    const info = inspectLayout(session, modelDir);
    if (opts.vocabMap) info.vocabSize = opts.vocabMap.outVocab;
    const cropper = device === 'webgpu' ? await KvCropper.create(info, providers) : undefined;
    if (session.inputNames.includes(PAST_LENGTH_INPUT)) maxSpan = INPLACE_PREFILL_CHUNK;
    const kept = opts.keepGraph ? (model ?? readModel(bytes ?? readFileSync(modelDir.onnxPath))) : undefined;
    const kind = model?.metadataProps.find((p) => p.key === GRAPH_KIND_KEY)?.value ?? 'exported';
    const identity = opts.prefixCaching ? JSON.stringify({ model: modelDir.onnxPath, bytes: opts.model?.length, graph: kind, dtype: info.dtype }) : undefined;
    const loaded = new DecoderModel(session, info, device, cropper, maxSpan, kept, identity, kind.includes(ROW_INDEPENDENT_KIND));
    if (opts.vocabMap && changesLogits(opts.vocabMap) && opts.logitColumns === 'kept') loaded.logitIds = opts.vocabMap.ids;
    return loaded;
  }

  /**
   * A KV cache for one sequence, where this model keeps it: a slot of its pool (in-place graphs),
   * host tensors, or the GPU with WebGPU. Empty, except with prefix caching (`LoadOptions.prefixCaching`),
   * where it may start holding a prefix of `prompt` (at most all but its last token): its `length`
   * says how many positions, and the sequence's passes go on from there.
   */
  newCache(prompt: readonly number[] = []): KVCache {
    if (this.pool) return this.pool.acquire(prompt);
    return this.cropper ? new GpuKVCache(this.info, this.cropper) : new HostKVCache(this.info);
  }

  /**
   * Feed `tokens` at positions cache.length, cache.length + 1, ...; extends the cache and
   * returns the logits of the last `rows` fed positions (default: all). Graphs that cannot
   * compute fewer rows (exported ones) return all of them: index the result from its end.
   * @returns logits [rows or tokens.length, vocab], row-major
   */
  async forward(cache: KVCache, tokens: readonly number[], rows = Infinity): Promise<Float32Array> {
    return (await this.forwardWithHidden(cache, tokens, rows)).logits;
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
   * @returns logits [rows or tokens.length, vocab] (as `forward`), hidden [tokens.length, width], acceptLogit [tokens.length], row-major
   */
  async forwardWithHidden(cache: KVCache, tokens: readonly number[], rows = Infinity): Promise<ForwardOutputs> {
    if (tokens.length <= this.maxSpan) return this.pass(cache, tokens, rows);
    // Refused before the first piece runs, so that a failed call leaves the cache as it was.
    this.checkContext(cache.length + tokens.length);
    const parts: ForwardOutputs[] = [];
    const firstRow = tokens.length - Math.min(rows, tokens.length);
    for (let i = 0; i < tokens.length; i += this.maxSpan) {
      const piece = tokens.slice(i, i + this.maxSpan);
      parts.push(await this.pass(cache, piece, Math.max(0, i + piece.length - Math.max(firstRow, i))));
    }
    const join = (pick: (o: ForwardOutputs) => Float32Array | undefined): Float32Array | undefined => {
      const arrays = parts.map(pick);
      if (arrays.some((a) => a === undefined)) return undefined;
      const out = new Float32Array(arrays.reduce((n, a) => n + a!.length, 0));
      let at = 0;
      for (const a of arrays) {
        out.set(a!, at);
        at += a!.length;
      }
      return out;
    };
    return { logits: join((o) => o.logits)!, hidden: join((o) => o.hidden), acceptLogit: join((o) => o.acceptLogit) };
  }

  /** One session run over `tokens`, with logits for (at least) the last `rows` of them. */
  private async pass(cache: KVCache, tokens: readonly number[], rows: number): Promise<ForwardOutputs> {
    const past = cache.length;
    const n = tokens.length;
    const total = past + n;
    this.checkContext(total);
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', BigInt64Array.from(tokens, BigInt), [1, n]),
    };
    if (this.hasAttentionMask) feeds.attention_mask = new ort.Tensor('int64', new BigInt64Array(total).fill(1n), [1, total]);
    if (this.hasPositionIds) {
      const pos = new BigInt64Array(n);
      for (let i = 0; i < n; i++) pos[i] = BigInt(past + i);
      feeds.position_ids = new ort.Tensor('int64', pos, [1, n]);
    }
    // At least one row: an empty lm_head product is not worth a special case in every provider.
    const logitRows = Math.max(1, Math.min(rows, n));
    if (this.hasLogitsFrom) feeds[LOGITS_FROM_INPUT] = new ort.Tensor('int64', BigInt64Array.of(BigInt(n - logitRows)), [1]);
    if (this.pool) {
      // One sequence: packed and padded layouts coincide.
      const identity = BigInt64Array.from({ length: n }, (_, i) => BigInt(i));
      feeds[PAST_LENGTH_INPUT] = new ort.Tensor('int64', BigInt64Array.of(BigInt(past)), [1]);
      feeds[PADDED_SOURCE_INPUT] = new ort.Tensor('int64', identity, [1, n]);
      feeds[PACKED_INDEX_INPUT] = new ort.Tensor('int64', identity, [n]);
    }
    cache.addFeeds(feeds, total);
    const out = await this.run(feeds);

    cache.update(out, total, tokens);
    const hidden = out[HIDDEN_OUTPUT] as ort.Tensor | undefined;
    const acceptLogit = out[ACCEPT_OUTPUT] as ort.Tensor | undefined;
    const logits = rows === 0 && this.hasLogitsFrom ? new Float32Array(0) : hostFloat32(out.logits as ort.Tensor);
    return { logits, hidden: hidden && hostFloat32(hidden), acceptLogit: acceptLogit && hostFloat32(acceptLogit) };
  }

  /**
   * One pass over several sequences (continuous batching): sequence b feeds `inputs[b]` after its
   * cached positions. With a cache written in place this is one session run: the tokens go in
   * packed (no padding: the projections, the MLP and the lm_head compute T = sum of the inputs'
   * lengths rows), and the attention runs per sequence over the pool's slots from the lowest to
   * the highest of the batch's (inplace-attention.ts), shorter inputs padded there and slots in the
   * range that are not in the batch given a padding row and no past; padding is neither attended
   * to by real tokens nor kept in a cache, so each sequence's result is what it would be alone.
   * Other caches (exported graphs, WebGPU) run one sequence after another.
   * @returns per sequence: logits [inputs[b].length, vocab], and when the graph outputs them
   *   hidden [inputs[b].length, width] and acceptLogit [inputs[b].length], row-major
   * @throws RangeError for caches of another model, a cache given twice, an empty input, or a
   *   sequence past the context (checked before anything runs)
   */
  async forwardBatch(caches: readonly KVCache[], inputs: readonly (readonly number[])[]): Promise<ForwardOutputs[]> {
    if (caches.length === 0 || caches.length !== inputs.length) throw new RangeError(`${caches.length} caches for ${inputs.length} inputs`);
    inputs.forEach((x, b) => {
      if (x.length === 0) throw new RangeError(`batch entry ${b} feeds no tokens`);
      this.checkContext(caches[b]!.length + x.length);
    });
    if (new Set(caches).size !== caches.length) throw new RangeError('a cache appears twice in one batch');
    const pool = this.pool;
    if (!pool) {
      const outs: ForwardOutputs[] = [];
      for (let b = 0; b < caches.length; b++) outs.push(await this.forwardWithHidden(caches[b]!, inputs[b]!));
      return outs;
    }
    const seqs = caches.map((c) => {
      if (!(c instanceof PooledKVCache) || c.slotPool !== pool) throw new RangeError('every cache of a batch must come from this model');
      return c;
    });
    const slots = seqs.map((c) => c.slot);
    const first = Math.min(...slots);
    const entries = Math.max(...slots) - first + 1;
    const entryOf = new Map(slots.map((slot, i) => [slot - first, i]));
    const fed = Math.max(...inputs.map((x) => x.length));
    // Tokens packed in the order of the inputs; the attention's padded layout over the slots' range.
    const offsets: number[] = []; // each input's first packed row
    let total = 0;
    for (const x of inputs) {
      offsets.push(total);
      total += x.length;
    }
    const ids = new BigInt64Array(total);
    const positions = new BigInt64Array(total);
    const packedIndex = new BigInt64Array(total);
    const paddedSource = new BigInt64Array(entries * fed); // slots not in the batch read packed row 0; their results are dropped
    const pasts = new BigInt64Array(entries);
    for (let e = 0; e < entries; e++) {
      const i = entryOf.get(e);
      if (i === undefined) continue;
      const x = inputs[i]!;
      const past = seqs[i]!.length;
      const at = offsets[i]!;
      pasts[e] = BigInt(past);
      for (let t = 0; t < x.length; t++) {
        ids[at + t] = BigInt(x[t]!);
        positions[at + t] = BigInt(past + t);
        packedIndex[at + t] = BigInt(e * fed + t);
      }
      for (let t = 0; t < fed; t++) paddedSource[e * fed + t] = BigInt(at + Math.min(t, x.length - 1)); // padding repeats the last row
    }
    pool.reserve(Math.max(...seqs.map((c, i) => c.length + inputs[i]!.length)));
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', ids, [1, total]),
      position_ids: new ort.Tensor('int64', positions, [1, total]),
      [PAST_LENGTH_INPUT]: new ort.Tensor('int64', pasts, [entries]),
      [PADDED_SOURCE_INPUT]: new ort.Tensor('int64', paddedSource, [entries, fed]),
      [PACKED_INDEX_INPUT]: new ort.Tensor('int64', packedIndex, [total]),
      [LOGITS_FROM_INPUT]: new ort.Tensor('int64', BigInt64Array.of(0n), [1]),
    };
    addKvFeeds(feeds, pool.batchTensors(first, entries));
    const out = await this.run(feeds);

    const logits = hostFloat32(out.logits as ort.Tensor);
    const hidden = out[HIDDEN_OUTPUT] as ort.Tensor | undefined;
    const acceptLogit = out[ACCEPT_OUTPUT] as ort.Tensor | undefined;
    const hiddenData = hidden && hostFloat32(hidden);
    const acceptData = acceptLogit && hostFloat32(acceptLogit);
    const rowsOf = (data: Float32Array | undefined, from: number, n: number): Float32Array | undefined => {
      if (!data) return undefined;
      const width = data.length / total;
      return data.slice(from * width, (from + n) * width);
    };
    return seqs.map((c, i) => {
      const n = inputs[i]!.length;
      c.append(out, offsets[i]!, inputs[i]!);
      return { logits: rowsOf(logits, offsets[i]!, n)!, hidden: rowsOf(hiddenData, offsets[i]!, n), acceptLogit: rowsOf(acceptData, offsets[i]!, n) };
    });
  }

  /** session.run, counted in runMs and runs. */
  private async run(feeds: Record<string, ort.Tensor>): Promise<ort.InferenceSession.OnnxValueMapType> {
    const t0 = performance.now();
    const out = await this.session.run(feeds);
    this.runMs += performance.now() - t0;
    this.runs++;
    return out;
  }

  /** @throws RangeError when a sequence of `total` tokens would not fit the model's context */
  private checkContext(total: number): void {
    if (total > this.info.maxPositions) {
      throw new RangeError(`sequence of ${total} tokens exceeds the model's context of ${this.info.maxPositions}`);
    }
  }

  /** Logits of `tokens` fed from an empty cache, which is released afterwards (scoring a whole sequence). */
  async score(tokens: readonly number[]): Promise<ForwardOutputs> {
    const cache = this.newCache();
    try {
      return await this.forwardWithHidden(cache, tokens);
    } finally {
      cache.release();
    }
  }

  async release(): Promise<void> {
    await this.session.release();
    await this.cropper?.release();
  }
}

/**
 * The graph bytes to load (undefined: the directory's file as it is) and, when it was decoded on
 * the way, the graph itself. A fused rebuild that is not possible is an error when asked for,
 * and a one-line notice when it was only the default.
 */
/**
 * Refuses a config whose context (max_position_embeddings / n_positions) is longer than the
 * graph's learned position table (GPT-2's `wpe`, rows = positions): such a model would fail at
 * the first position past the table, in the middle of a request.
 * @throws ModelLoadError naming config.json and the field
 */
function checkPositionTable(model: ModelProto, dir: ModelDir): void {
  const context = dir.config.maxPositions;
  if (context === undefined) return;
  const rows = embeddingTables(decoderGraphView(model)).positions?.dims[0];
  if (rows === undefined || context <= rows) return;
  const file = join(dir.dir, 'config.json');
  throw new ModelLoadError(`${file}: the context of ${context} positions (max_position_embeddings / n_positions) is longer than the graph's position table of ${rows} rows; set it to ${rows} or less`, file, 'max_position_embeddings');
}

function chooseGraph(dir: ModelDir, bytes: Uint8Array | undefined, graph: GraphChoice, asked: boolean): { bytes?: Uint8Array; model?: ModelProto } {
  if (graph === 'exported') return { bytes };
  try {
    return fusedDecoder(bytes ? { bytes } : { path: dir.onnxPath }, dir.config, graph);
  } catch (err) {
    if (err instanceof ModelLoadError) throw err;
    if (!(err instanceof NotRebuildableError)) throw new ModelLoadError(`cannot load ${dir.onnxPath}: ${(err as Error).message}`, dir.onnxPath);
    if (asked) throw fusedGraphError(dir.onnxPath, err, graph);
    process.stderr.write(`specd: ${dir.dir}: running the exported graph (no ${graph} rebuild: ${err.message})\n`);
    return { bytes };
  }
}

/**
 * WebGPU output placement: `present.*` stay on the GPU to be fed back as the next pass's past;
 * everything the host reads (logits, hidden state, the head's logit) comes back to host memory.
 */
function webgpuOutputLocations(model: ModelProto): Record<string, ort.Tensor.DataLocation> {
  const outputs = model.graph?.output ?? [];
  return Object.fromEntries(outputs.map((o) => [o.name ?? '', o.name?.startsWith('present.') ? 'gpu-buffer' : 'cpu']));
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
  // A graph that writes its cache in place (inplace-attention.ts) outputs each layer's new rows instead of present.*.
  const inPlace = inputs.includes(PAST_LENGTH_INPUT);
  for (let i = 0; i < layers; i++) {
    if (inPlace && !outputs.includes(kvRowsOutput(i))) missing.push(`output ${kvRowsOutput(i)}`);
    for (const kind of ['key', 'value']) {
      if (!inputs.includes(`past_key_values.${i}.${kind}`)) missing.push(`input past_key_values.${i}.${kind}`);
      if (!inPlace && !outputs.includes(`present.${i}.${kind}`)) missing.push(`output present.${i}.${kind}`);
    }
  }
  if (missing.length > 0) {
    throw new ModelLoadError(`${file}: not a decoder in the transformers.js/optimum layout; missing ${missing.join(', ')}`, file);
  }
  if (dir.config.layers !== undefined && dir.config.layers !== layers) {
    throw new ModelLoadError(`${dir.dir}/config.json: ${dir.config.layers} layers, but ${file} has ${layers}`, `${dir.dir}/config.json`, 'num_hidden_layers');
  }

  // KV geometry: the session's metadata first, the config second.
  // [batch, kv_heads, length, head_dim]; keys of an in-place graph are transposed, its values are not.
  const meta = session.inputMetadata.find((m) => m.name === (inPlace ? 'past_key_values.0.value' : 'past_key_values.0.key'));
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
