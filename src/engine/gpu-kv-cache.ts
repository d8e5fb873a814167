/**
 * The KV cache kept on the GPU (WebGPU sessions).
 *
 * The decoder session returns `present.*` as GPU buffers (its `preferredOutputLocation`), and
 * they are fed back as the next pass's `past_key_values.*` without a host round trip. The
 * rollback stays on the GPU too: `KvCropper` is a small graph of one `Slice` per cache tensor,
 * run on the same execution provider, that keeps the first n positions of every layer's key
 * and value in one `run()`. Tensors a pass or a crop replaces are disposed at once, so GPU
 * memory follows the live sequences, not the garbage collector.
 */
import * as ort from 'onnxruntime-node';
import { GraphBuilder } from '../onnx/graph-builder.js';
import { LayerKVCache, type KvLayout } from './kv-cache.js';

/** Crops every tensor of a layer-ordered KV cache on the device it lives on. */
export class KvCropper {
  private constructor(
    private readonly session: ort.InferenceSession,
    private readonly count: number,
  ) {}

  /** Build the Slice graph for `layout` and load it with the decoder's execution providers. */
  static async create(layout: KvLayout, executionProviders: ort.InferenceSession.ExecutionProviderConfig[]): Promise<KvCropper> {
    const g = new GraphBuilder({ opset: 17, name: 'kv_crop' });
    const count = layout.layers * 2;
    const shape = ['batch', layout.kvHeads, 'length', layout.headDim];
    const ends = g.input('keep', 'int64', [1]);
    const starts = g.constant('int64', [0]);
    const axes = g.constant('int64', [2]);
    const location: Record<string, ort.Tensor.DataLocation> = {};
    for (let i = 0; i < count; i++) {
      const x = g.input(`x${i}`, layout.dtype, shape);
      g.output(g.op('Slice', [x, starts, ends, axes]), `y${i}`, layout.dtype, ['batch', layout.kvHeads, 'kept', layout.headDim]);
      location[`y${i}`] = 'gpu-buffer';
    }
    const session = await ort.InferenceSession.create(g.toBytes(), { executionProviders, preferredOutputLocation: location, logSeverityLevel: 3 });
    return new KvCropper(session, count);
  }

  /** The first `n` positions of each tensor, as new GPU tensors (the inputs are left as they are). */
  async crop(tensors: readonly ort.Tensor[], n: number): Promise<ort.Tensor[]> {
    if (tensors.length !== this.count) throw new Error(`expected ${this.count} KV tensors, got ${tensors.length}`);
    const feeds: Record<string, ort.Tensor> = { keep: new ort.Tensor('int64', BigInt64Array.of(BigInt(n)), [1]) };
    tensors.forEach((t, i) => (feeds[`x${i}`] = t));
    const out = await this.session.run(feeds);
    return tensors.map((_, i) => out[`y${i}`] as ort.Tensor);
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/** The cache on the GPU: crops with the Slice graph and disposes the buffers it drops. */
export class GpuKVCache extends LayerKVCache {
  constructor(
    layout: KvLayout,
    private readonly cropper: KvCropper,
  ) {
    super(layout);
  }

  protected cropped(n: number): Promise<ort.Tensor[]> {
    return this.cropper.crop(this.tensors, n);
  }

  protected override replace(next: ort.Tensor[]): void {
    for (const t of this.tensors) if (t.location === 'gpu-buffer') t.dispose();
    super.replace(next);
  }
}
