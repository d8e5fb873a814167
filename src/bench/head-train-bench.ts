/**
 * Training throughput of the acceptance head on synthetic features: rows per second of full
 * training steps (gather a minibatch, forward + backward in ONNX Runtime, AdamW in JS) at a
 * given width, beside the forward pass of the plain-JS reference for scale.
 */
import { Rng } from '../engine/rng.js';
import { headReference, paramCount, rowStride } from '../heads/runtime/head-graph.js';
import { AdamW, HeadLossRunner, initHeadParams, MemoryRows } from '../heads/training/train.js';

export interface HeadTrainBenchResult {
  width: number;
  parameters: number;
  batch_size: number;
  steps: number;
  /** Mean time of one step, split into its parts. */
  step_ms: number;
  ort_ms: number;
  adamw_ms: number;
  gather_ms: number;
  rows_per_s: number;
  /** Forward pass only, plain JavaScript loops (headReference), rows per second. */
  js_forward_rows_per_s: number;
}

export async function benchHeadTraining(width: number, options: { batchSize: number; steps: number; threads?: number }): Promise<HeadTrainBenchResult> {
  const { batchSize, steps } = options;
  const rows = batchSize * 4;
  const rng = new Rng(width);
  const stride = rowStride(width);
  const source = new MemoryRows(width, rng.normals(rows * stride, 1), Float32Array.from({ length: rows }, () => rng.next()));
  const runner = await HeadLossRunner.create(width, { threads: options.threads });
  const params = initHeadParams(width, 0);
  const adam = new AdamW(params, 0.01);
  const features = new Float32Array(batchSize * stride);
  const labels = new Float32Array(batchSize);
  let gather = 0;
  let ort = 0;
  let update = 0;
  const step = async () => {
    const idx = Array.from({ length: batchSize }, () => Math.floor(rng.next() * rows));
    const t0 = performance.now();
    source.gatherFeatures(idx, features);
    idx.forEach((r, i) => (labels[i] = source.labels[r]!));
    const t1 = performance.now();
    const { grads } = await runner.gradients(params, features, labels, batchSize);
    const t2 = performance.now();
    adam.update(params, grads, 1e-4);
    const t3 = performance.now();
    return [t1 - t0, t2 - t1, t3 - t2] as const;
  };
  await step(); // warm-up
  for (let i = 0; i < steps; i++) {
    const [g, o, u] = await step();
    gather += g;
    ort += o;
    update += u;
  }
  await runner.release();
  const total = gather + ort + update;

  const jsRows = Math.max(1, Math.min(64, Math.floor(2e8 / (3 * width * width))));
  const t0 = performance.now();
  headReference(params, source.features.subarray(0, jsRows * stride), jsRows);
  const jsMs = performance.now() - t0;
  return {
    width,
    parameters: paramCount(width),
    batch_size: batchSize,
    steps,
    step_ms: total / steps,
    ort_ms: ort / steps,
    adamw_ms: update / steps,
    gather_ms: gather / steps,
    rows_per_s: (batchSize * steps) / (total / 1000),
    js_forward_rows_per_s: jsRows / (jsMs / 1000),
  };
}
