/**
 * The acceptance head at run time: its metadata, its candidate weights, and an ONNX Runtime
 * session on the draft's execution provider that maps hidden states to the head's logit.
 *
 * The engine normally runs the head fused into the draft's graph (head-fusion.ts), in which
 * case `predict` is never called and the session is never created; it is created on first
 * use, for drafts whose head runs on its own and for batch evaluation.
 */
import * as ort from 'onnxruntime-node';
import { type Device, executionProviders } from '../../engine/device.js';
import { acceptProbability } from '../../engine/candidate-features.js';
import type { AcceptancePredictor, TemperatureThreshold } from '../../engine/stop-policy.js';
import { ModelLoadError } from '../../errors.js';
import { readHeadFile, type HeadMetadata } from './head-file.js';
import { HEAD_INPUT, HEAD_OUTPUT, rowStride } from './head-graph.js';
import type { ModelProto } from '../../onnx/graph-builder.js';

export interface HeadLoadOptions {
  device?: Device;
  deviceId?: number;
  /** Intra-op threads of the head's session (default 1, like the draft). */
  threads?: number;
}

/** Rows per session run in `predictBatch`. */
const BATCH_ROWS = 4096;

export class AcceptanceHead implements AcceptancePredictor {
  readonly width: number;
  readonly recommendedThreshold: number;
  readonly thresholdsByTemperature: readonly TemperatureThreshold[];
  readonly candidateWeights: Float32Array;
  private session: ort.InferenceSession | undefined;
  private sessionPromise: Promise<ort.InferenceSession> | undefined;

  private constructor(
    readonly onnxPath: string,
    readonly model: ModelProto,
    private readonly bytes: Uint8Array,
    readonly meta: HeadMetadata,
    private readonly options: HeadLoadOptions,
  ) {
    this.width = meta.architecture.width;
    this.recommendedThreshold = meta.recommended_threshold;
    this.thresholdsByTemperature = meta.recommended_thresholds ?? [];
    this.candidateWeights = Float32Array.from(meta.architecture.candidate_weights);
  }

  /** Reads `NAME.head.onnx` and `NAME.head.json` (no session yet). */
  static load(onnxPath: string, options: HeadLoadOptions = {}): AcceptanceHead {
    const file = readHeadFile(onnxPath);
    return new AcceptanceHead(file.onnxPath, file.model, file.bytes, file.meta, options);
  }

  /** The hidden-state part of the logit. @param hidden // [width] */
  async predictLogit(hidden: Float32Array): Promise<number> {
    const session = this.session ?? (await this.open());
    const out = await session.run({ [HEAD_INPUT]: new ort.Tensor('float32', hidden, [1, this.width]) });
    return (out[HEAD_OUTPUT]!.data as Float32Array)[0]!;
  }

  /**
   * P(accept) of many feature rows (hidden state, then candidate features, as in training data).
   * @param features // [n, width + CANDIDATE_FEATURES]
   * @returns // [n]
   */
  async predictBatch(features: Float32Array, n: number): Promise<Float32Array> {
    const session = this.session ?? (await this.open());
    const w = this.width;
    const stride = rowStride(w);
    const out = new Float32Array(n);
    for (let start = 0; start < n; start += BATCH_ROWS) {
      const rows = Math.min(BATCH_ROWS, n - start);
      const x = new Float32Array(rows * w);
      for (let r = 0; r < rows; r++) x.set(features.subarray((start + r) * stride, (start + r) * stride + w), r * w);
      const result = await session.run({ [HEAD_INPUT]: new ort.Tensor('float32', x, [rows, w]) });
      const logits = result[HEAD_OUTPUT]!.data as Float32Array;
      for (let r = 0; r < rows; r++) {
        const at = (start + r) * stride + w;
        out[start + r] = acceptProbability(logits[r]!, this.candidateWeights, features.subarray(at, at + stride - w));
      }
    }
    return out;
  }

  async release(): Promise<void> {
    const session = this.session;
    this.session = undefined;
    this.sessionPromise = undefined;
    await session?.release();
  }

  private async open(): Promise<ort.InferenceSession> {
    this.sessionPromise ??= ort.InferenceSession.create(this.bytes, {
      executionProviders: executionProviders(this.options.device ?? 'cpu', this.options.deviceId),
      graphOptimizationLevel: 'all',
      executionMode: 'sequential',
      intraOpNumThreads: this.options.threads ?? 1,
    }).catch((err: Error) => {
      throw new ModelLoadError(`cannot load ${this.onnxPath}: ${err.message}`, this.onnxPath);
    });
    this.session = await this.sessionPromise;
    return this.session;
  }
}
