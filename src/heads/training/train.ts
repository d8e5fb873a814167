/**
 * Training the acceptance head: minibatch AdamW on the soft-label weighted BCE of the paper
 * (head-graph.ts), the draft frozen (its hidden states are the features).
 *
 * Every matrix product, forward and backward, runs in ONNX Runtime: one `session.run()` of the
 * loss graph per minibatch returns the loss and the gradients. What stays in JavaScript is the
 * optimiser, a few element-wise passes over the parameter arrays per step.
 */
import { availableParallelism } from 'node:os';
import * as ort from 'onnxruntime-node';
import { Rng } from '../../engine/rng.js';
import {
  buildHeadLossGraph,
  CANDIDATE_FEATURES,
  cloneParams,
  DEFAULT_MISMATCH_WEIGHT,
  type HeadParams,
  rowStride,
  PARAM_NAMES,
  type ParamName,
  paramShape,
  weightedBce,
} from '../runtime/head-graph.js';
import { shuffle } from './training-prompts.js';

/**
 * Rows with features and labels, addressed by index (a data directory, or synthetic data).
 * A feature row is the hidden state (`width` values) followed by the CANDIDATE_FEATURES
 * candidate features (head-graph.ts).
 */
export interface RowSource {
  /** Width of the hidden state. */
  readonly width: number;
  /** Soft labels of every row // [rows] */
  readonly labels: Float32Array;
  /** Feature rows at `indices` into `into` // [indices.length, width + CANDIDATE_FEATURES] */
  gatherFeatures(indices: ArrayLike<number>, into?: Float32Array): Float32Array;
}

/**
 * PyTorch's default Linear initialisation, U(-1/sqrt(in), 1/sqrt(in)), for the block and the
 * output; the candidate weights start at zero (training starts from the hidden state alone).
 */
export function initHeadParams(width: number, seed = 0): HeadParams {
  const rng = new Rng(seed);
  const bound = 1 / Math.sqrt(width);
  const uniform = (n: number) => Float32Array.from({ length: n }, () => (2 * rng.next() - 1) * bound);
  return { width, W: uniform(width * width), b: uniform(width), v: uniform(width), c: uniform(1), u: new Float32Array(CANDIDATE_FEATURES) };
}

/** Rows held in memory. */
export class MemoryRows implements RowSource {
  constructor(
    readonly width: number,
    /** // [rows, width + CANDIDATE_FEATURES] */
    readonly features: Float32Array,
    readonly labels: Float32Array,
  ) {}

  gatherFeatures(indices: ArrayLike<number>, into = new Float32Array(indices.length * rowStride(this.width))): Float32Array {
    const w = rowStride(this.width);
    for (let i = 0; i < indices.length; i++) into.set(this.features.subarray(indices[i]! * w, (indices[i]! + 1) * w), i * w);
    return into;
  }
}

export interface TrainOptions {
  epochs: number;
  batchSize: number;
  /** Peak learning rate (after a linear warm-up over the first 5% of steps, cosine decay to 10% of it). */
  lr: number;
  /** Decoupled weight decay on the weight matrices (not the biases). */
  weightDecay: number;
  /** w of the loss: weight of the reject class. */
  mismatchWeight: number;
  seed: number;
  /** Intra-op threads of the training session (default: all cores). */
  threads?: number;
  onStep?: (progress: { epoch: number; step: number; steps: number; loss: number }) => void;
  onEpoch?: (epoch: EpochStats) => void;
}

export const DEFAULT_TRAIN_OPTIONS: Omit<TrainOptions, 'onStep' | 'onEpoch'> = {
  epochs: 4,
  batchSize: 256,
  lr: 1e-3,
  weightDecay: 0.01,
  mismatchWeight: DEFAULT_MISMATCH_WEIGHT,
  seed: 0,
};

export interface EpochStats {
  epoch: number;
  /** Mean minibatch loss of the epoch. */
  train_loss: number;
  /** Loss over the whole validation split (NaN without one). */
  val_loss: number;
  seconds: number;
}

export interface TrainResult {
  /** The parameters of the epoch with the lowest validation loss (the last without validation data). */
  params: HeadParams;
  bestEpoch: number;
  initialValLoss: number;
  history: EpochStats[];
  steps: number;
  seconds: number;
  /** Training rows processed per second (forward + backward + update), over all epochs. */
  rowsPerSecond: number;
}

const ADAM_BETA1 = 0.9;
const ADAM_BETA2 = 0.999;
const ADAM_EPS = 1e-8;
const WARMUP_FRACTION = 0.05;
const FINAL_LR_FRACTION = 0.1;
/** Rows per session run when only the loss is needed. */
const EVAL_BATCH = 8192;
/** Parameters that get weight decay. */
const DECAYED: ReadonlySet<ParamName> = new Set(['W', 'v']);

/** AdamW state for the head's parameters; `update` applies one step in place. */
export class AdamW {
  private readonly m: Record<ParamName, Float32Array>;
  private readonly v: Record<ParamName, Float32Array>;
  private t = 0;

  constructor(
    params: HeadParams,
    private readonly weightDecay: number,
  ) {
    const zeros = (n: ParamName) => new Float32Array(params[n].length);
    this.m = { W: zeros('W'), b: zeros('b'), v: zeros('v'), c: zeros('c'), u: zeros('u') };
    this.v = { W: zeros('W'), b: zeros('b'), v: zeros('v'), c: zeros('c'), u: zeros('u') };
  }

  update(params: HeadParams, grads: Record<ParamName, Float32Array>, lr: number): void {
    this.t++;
    const bc1 = 1 - ADAM_BETA1 ** this.t;
    const bc2 = 1 - ADAM_BETA2 ** this.t;
    const stepSize = lr / bc1;
    for (const name of PARAM_NAMES) {
      const p = params[name];
      const g = grads[name];
      const m = this.m[name];
      const v = this.v[name];
      const decay = DECAYED.has(name) ? 1 - lr * this.weightDecay : 1;
      for (let i = 0; i < p.length; i++) {
        const gi = g[i]!;
        const mi = (m[i] = ADAM_BETA1 * m[i]! + (1 - ADAM_BETA1) * gi);
        const vi = (v[i] = ADAM_BETA2 * v[i]! + (1 - ADAM_BETA2) * gi * gi);
        p[i] = p[i]! * decay - (stepSize * mi) / (Math.sqrt(vi / bc2) + ADAM_EPS);
      }
    }
  }
}

/** The loss graph in two sessions: with gradients (training) and without (validation). */
export class HeadLossRunner {
  private constructor(
    readonly width: number,
    private readonly train: ort.InferenceSession,
    private readonly evaluate: ort.InferenceSession,
    private readonly mismatchWeight: number,
  ) {}

  static async create(width: number, options: { mismatchWeight?: number; threads?: number } = {}): Promise<HeadLossRunner> {
    const sessionOptions: ort.InferenceSession.SessionOptions = {
      executionProviders: ['cpu'],
      graphOptimizationLevel: 'all',
      executionMode: 'sequential',
      intraOpNumThreads: options.threads ?? availableParallelism(),
    };
    const train = await ort.InferenceSession.create(buildHeadLossGraph(width, { gradients: true }).toBytes(), sessionOptions);
    const evaluate = await ort.InferenceSession.create(buildHeadLossGraph(width).toBytes(), sessionOptions);
    return new HeadLossRunner(width, train, evaluate, options.mismatchWeight ?? DEFAULT_MISMATCH_WEIGHT);
  }

  /** Loss and gradients of one minibatch. @param features // [n, width + CANDIDATE_FEATURES] */
  async gradients(params: HeadParams, features: Float32Array, labels: Float32Array, n: number): Promise<{ loss: number; grads: Record<ParamName, Float32Array> }> {
    const out = await this.train.run(this.feeds(params, features, labels, n));
    const grad = (name: ParamName) => out[`grad_${name}`]!.data as Float32Array;
    return { loss: (out.loss!.data as Float32Array)[0]!, grads: { W: grad('W'), b: grad('b'), v: grad('v'), c: grad('c'), u: grad('u') } };
  }

  /** P(accept) of every row, in batches. @param features // [n, width + CANDIDATE_FEATURES] */
  async probs(params: HeadParams, features: Float32Array, n: number): Promise<Float32Array> {
    const w = rowStride(this.width);
    const out = new Float32Array(n);
    const dummy = new Float32Array(Math.min(n, EVAL_BATCH));
    for (let start = 0; start < n; start += EVAL_BATCH) {
      const rows = Math.min(EVAL_BATCH, n - start);
      const x = features.subarray(start * w, (start + rows) * w);
      const result = await this.evaluate.run(this.feeds(params, x, dummy.subarray(0, rows), rows));
      out.set(result.probs!.data as Float32Array, start);
    }
    return out;
  }

  async release(): Promise<void> {
    await this.train.release();
    await this.evaluate.release();
  }

  private feeds(params: HeadParams, features: Float32Array, labels: Float32Array, n: number): Record<string, ort.Tensor> {
    const w = this.width;
    const stride = rowStride(w);
    const feeds: Record<string, ort.Tensor> = {
      features: new ort.Tensor('float32', features.subarray(0, n * stride), [n, stride]),
      labels: new ort.Tensor('float32', labels.subarray(0, n), [n]),
      mismatch_weight: new ort.Tensor('float32', Float32Array.of(this.mismatchWeight), []),
    };
    for (const name of PARAM_NAMES) feeds[name] = new ort.Tensor('float32', params[name], paramShape(name, w));
    return feeds;
  }
}

/** Learning rate at step `step` of `total`: linear warm-up, then cosine decay to FINAL_LR_FRACTION. */
export function learningRate(peak: number, step: number, total: number): number {
  const warmup = Math.max(1, Math.round(total * WARMUP_FRACTION));
  if (step < warmup) return (peak * (step + 1)) / warmup;
  const progress = Math.min(1, (step - warmup) / Math.max(1, total - warmup));
  return peak * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + Math.cos(Math.PI * progress)));
}

/** Validation loss and probabilities over `rows` of `source`. */
export async function validate(runner: HeadLossRunner, params: HeadParams, source: RowSource, rows: Int32Array, mismatchWeight: number): Promise<{ loss: number; probs: Float32Array }> {
  if (rows.length === 0) return { loss: NaN, probs: new Float32Array(0) };
  const features = source.gatherFeatures(rows);
  const probs = await runner.probs(params, features, rows.length);
  const labels = Float32Array.from(rows, (r) => source.labels[r]!);
  return { loss: weightedBce(probs, labels, mismatchWeight), probs };
}

/** Trains a head on `trainRows` of `source`, validating on `valRows` after every epoch. */
export async function trainHead(source: RowSource, trainRows: Int32Array, valRows: Int32Array, options: Partial<TrainOptions> = {}): Promise<TrainResult> {
  const opts: TrainOptions = { ...DEFAULT_TRAIN_OPTIONS, ...options };
  if (trainRows.length === 0) throw new Error('no training rows');
  const started = performance.now();
  const w = source.width;
  const runner = await HeadLossRunner.create(w, { mismatchWeight: opts.mismatchWeight, threads: opts.threads });
  try {
    const params = initHeadParams(w, opts.seed);
    const adam = new AdamW(params, opts.weightDecay);
    const rng = new Rng(opts.seed + 1);
    const order = Array.from(trainRows);
    const batch = Math.min(opts.batchSize, order.length);
    const perEpoch = Math.ceil(order.length / batch);
    const total = perEpoch * opts.epochs;
    const features = new Float32Array(batch * rowStride(w));
    const labels = new Float32Array(batch);
    const initialValLoss = (await validate(runner, params, source, valRows, opts.mismatchWeight)).loss;
    let best = { loss: Infinity, epoch: 0, params: cloneParams(params) };
    const history: EpochStats[] = [];
    let step = 0;
    let trainSeconds = 0;
    for (let epoch = 1; epoch <= opts.epochs; epoch++) {
      const epochStart = performance.now();
      shuffle(order, rng);
      let lossSum = 0;
      for (let b = 0; b < perEpoch; b++) {
        const idx = order.slice(b * batch, (b + 1) * batch);
        const n = idx.length;
        source.gatherFeatures(idx, features);
        for (let i = 0; i < n; i++) labels[i] = source.labels[idx[i]!]!;
        const { loss, grads } = await runner.gradients(params, features, labels, n);
        adam.update(params, grads, learningRate(opts.lr, step, total));
        lossSum += loss;
        step++;
        opts.onStep?.({ epoch, step, steps: total, loss });
      }
      trainSeconds += (performance.now() - epochStart) / 1000;
      const val = await validate(runner, params, source, valRows, opts.mismatchWeight);
      const stats: EpochStats = { epoch, train_loss: lossSum / perEpoch, val_loss: val.loss, seconds: (performance.now() - epochStart) / 1000 };
      history.push(stats);
      opts.onEpoch?.(stats);
      const score = Number.isNaN(val.loss) ? -epoch : val.loss;
      if (score < best.loss) best = { loss: score, epoch, params: cloneParams(params) };
    }
    return {
      params: best.params,
      bestEpoch: best.epoch,
      initialValLoss,
      history,
      steps: step,
      seconds: (performance.now() - started) / 1000,
      rowsPerSecond: (order.length * opts.epochs) / trainSeconds,
    };
  } finally {
    await runner.release();
  }
}
