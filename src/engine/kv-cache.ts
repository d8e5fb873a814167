/**
 * A sequence's key/value cache for one model, and its rollback.
 *
 * Each layer has a key and a value tensor shaped [batch, kv_heads, length, head_dim]. After
 * a forward pass the model's `present.*` outputs replace the cache; `crop(n)` is the KV
 * rollback of speculative decoding: it keeps the first n positions of the sequence axis and
 * drops the rejected candidates. `HostKVCache` (here) keeps the tensors in host memory and crops
 * them in place; `GpuKVCache` (gpu-kv-cache.ts) keeps them on the GPU and crops them there. Both
 * serve graphs that copy the past into `present.*` at every pass (exported graphs); graphs that
 * write the cache in place use `PooledKVCache` (kv-pool.ts), where a crop is a length change.
 */
import * as ort from 'onnxruntime-node';

export type KvDtype = 'float32' | 'float16';

export interface KvLayout {
  layers: number;
  kvHeads: number;
  headDim: number;
  dtype: KvDtype;
}

type KvData = Float32Array | Uint16Array;

/**
 * A sequence's KV cache as the engine uses it: fed as `past_key_values.*`, replaced by a
 * forward pass's `present.*`, rolled back by `crop`. `HostKVCache` keeps it in host memory
 * (CPU and CUDA sessions); `GpuKVCache` (gpu-kv-cache.ts) keeps it on the GPU (WebGPU).
 */
export interface KVCache {
  /** Positions the cache covers. */
  readonly length: number;
  /**
   * Add the cache to a pass's feeds as `past_key_values.*`.
   * @param total positions the cache will cover after the pass (a cache written in place makes room for them)
   */
  addFeeds(feeds: Record<string, ort.Tensor>, total: number): void;
  /**
   * Take the outputs of a forward pass that covered `length` positions (`present.*`, or the new
   * rows of a cache written in place), fed `tokens` (the new positions' tokens: what a pooled
   * cache's prefix caching matches later prompts against).
   */
  update(outputs: Record<string, ort.OnnxValue>, length: number, tokens: readonly number[]): void;
  /** KV rollback: keep positions [0, n). */
  crop(n: number): Promise<void>;
  /** Free what the cache holds on a device; the cache is empty afterwards. Idempotent. */
  release(): void;
}

/** Layer-ordered cache tensors (layer i's key at 2i, value at 2i + 1) as a pass's `past_key_values.*` feeds. */
export function addKvFeeds(feeds: Record<string, ort.Tensor>, tensors: readonly ort.Tensor[]): void {
  for (let i = 0; i < tensors.length / 2; i++) {
    feeds[`past_key_values.${i}.key`] = tensors[2 * i]!;
    feeds[`past_key_values.${i}.value`] = tensors[2 * i + 1]!;
  }
}

/** Checks a crop request against the cache's length. */
export function checkCrop(length: number, n: number): void {
  if (n > length || n < 0) throw new RangeError(`cannot crop a KV cache of length ${length} to ${n}`);
}

/**
 * The bookkeeping both caches share: layer-ordered `past_key_values.*` tensors and their length.
 * Subclasses say how to crop (`cropped`) and what to do with tensors they drop (`replace`).
 */
export abstract class LayerKVCache implements KVCache {
  /** past_key_values.{i}.key / .value in layer order. */
  protected tensors: ort.Tensor[];
  private len = 0;

  constructor(readonly layout: KvLayout) {
    this.tensors = this.empty();
  }

  get length(): number {
    return this.len;
  }

  addFeeds(feeds: Record<string, ort.Tensor>): void {
    addKvFeeds(feeds, this.tensors);
  }

  update(outputs: Record<string, ort.OnnxValue>, length: number): void {
    const next: ort.Tensor[] = [];
    for (let i = 0; i < this.layout.layers; i++) {
      next.push(outputs[`present.${i}.key`] as ort.Tensor, outputs[`present.${i}.value`] as ort.Tensor);
    }
    this.replace(next);
    this.len = length;
  }

  async crop(n: number): Promise<void> {
    checkCrop(this.len, n);
    if (n === this.len) return;
    this.replace(await this.cropped(n));
    this.len = n;
  }

  release(): void {
    this.replace(this.empty());
    this.len = 0;
  }

  /** The cache's tensors keeping positions [0, n) (n < length). */
  protected abstract cropped(n: number): Promise<ort.Tensor[]>;

  /** Make `next` the cache's tensors. */
  protected replace(next: ort.Tensor[]): void {
    this.tensors = next;
  }

  /** Zero-length host tensors: the cache of an empty sequence. */
  protected empty(): ort.Tensor[] {
    const { kvHeads, headDim, dtype, layers } = this.layout;
    const empty = new ort.Tensor(dtype, dtype === 'float16' ? new Uint16Array(0) : new Float32Array(0), [1, kvHeads, 0, headDim]);
    return Array.from({ length: layers * 2 }, () => empty);
  }
}

/** The cache in host memory (CPU and CUDA sessions): crops in place. */
export class HostKVCache extends LayerKVCache {
  protected async cropped(n: number): Promise<ort.Tensor[]> {
    return this.tensors.map((t) => this.cropTensor(t, n));
  }

  /**
   * Crop in place: row r = (batch, head) of the kept prefix moves from offset r * len * dim to
   * r * n * dim, which never overtakes unread data, so `copyWithin` can compact the buffer
   * front to back. The tensor then views the front of the same buffer: no allocation, and
   * about a sixth of the copying of a fresh buffer (the first row stays where it is).
   */
  private cropTensor(t: ort.Tensor, n: number): ort.Tensor {
    const [batch, heads, len, dim] = t.dims as [number, number, number, number];
    const data = t.data as KvData;
    const keep = n * dim; // contiguous elements kept per (batch, head) row
    for (let row = 1; row < batch * heads; row++) {
      data.copyWithin(row * keep, row * len * dim, row * len * dim + keep);
    }
    return this.makeTensor(data.subarray(0, batch * heads * keep), n, batch);
  }

  private makeTensor(data: KvData, len: number, batch = 1): ort.Tensor {
    const { kvHeads, headDim, dtype } = this.layout;
    return new ort.Tensor(dtype, data, [batch, kvHeads, len, headDim]);
  }
}
