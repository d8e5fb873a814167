/**
 * `specd head train` end to end: train a head on a data directory (train.ts), measure it on
 * the validation split (eval.ts), choose its threshold (threshold.ts) and write
 * NAME.head.onnx + NAME.head.json (head-file.ts).
 */
import { basename, resolve } from 'node:path';
import { DEFAULT_SPECDEC_K_MAX, DEFAULT_SPECDEC_K_MIN } from '../../engine/stop-policy.js';
import { evaluatePredictions, type HeadEvaluation } from './eval.js';
import { HeadData } from './head-data.js';
import { HEAD_FORMAT, headArchitecture, type HeadMetadata, saveHead } from '../runtime/head-file.js';
import { THRESHOLD_GRID, type ThresholdSelection } from './threshold.js';
import { DEFAULT_TRAIN_OPTIONS, HeadLossRunner, trainHead, type TrainOptions, type TrainResult } from './train.js';

export interface BuildHeadOptions extends Partial<TrainOptions> {
  /** Share of prompts held out for validation. */
  valFraction: number;
  kMin?: number;
  kMax?: number;
}

export const DEFAULT_VAL_FRACTION = 0.1;

export interface BuildHeadResult {
  onnxPath: string;
  jsonPath: string;
  meta: HeadMetadata;
  training: TrainResult;
  evaluation: HeadEvaluation;
}

export async function buildHead(dataDir: string, out: string, buildOptions: BuildHeadOptions): Promise<BuildHeadResult> {
  const options = { ...DEFAULT_TRAIN_OPTIONS, ...buildOptions };
  const data = HeadData.open(dataDir);
  const seed = options.seed;
  const trainRows = data.splitRows('train', options.valFraction, seed);
  const valRows = data.splitRows('val', options.valFraction, seed);
  const source = data.inMemory();
  const training = await trainHead(source, trainRows, valRows, options);

  // Validation predictions of the kept parameters: calibration and the threshold.
  const runner = await HeadLossRunner.create(data.width, { threads: options.threads });
  const evalRows = valRows.length > 0 ? valRows : trainRows;
  const probs = await runner.probs(training.params, source.gatherFeatures(evalRows), evalRows.length);
  await runner.release();
  const evaluation = evaluatePredictions(data, evalRows, probs, {
    split: valRows.length > 0 ? 'val' : 'train',
    kMin: options.kMin ?? DEFAULT_SPECDEC_K_MIN,
    kMax: options.kMax ?? DEFAULT_SPECDEC_K_MAX,
  });
  const m = data.manifest;
  const { thresholds, by_temperature: byTemperature, ...rest } = evaluation;
  const perTemperature = byTemperature.filter((b) => b.thresholds);
  const meta: HeadMetadata = {
    format: HEAD_FORMAT,
    architecture: headArchitecture(training.params),
    draft: { ...m.draft, width: data.width },
    target: m.target,
    recommended_threshold: thresholds?.recommended ?? 0.7,
    ...(perTemperature.length > 0 ? { recommended_thresholds: perTemperature.map((b) => ({ temperature: b.temperature, threshold: b.thresholds!.recommended })) } : {}),
    threshold_selection: thresholds
      ? {
          method: thresholds.method,
          k_min: thresholds.k_min,
          k_max: thresholds.k_max,
          costs: thresholds.costs,
          best_fixed: thresholds.best_fixed,
          simulated_gain_over_best_fixed: round(thresholds.simulated_gain_over_best_fixed, 4),
          grid: thresholdGrid(thresholds),
          by_temperature: perTemperature.map((b) => ({
            temperature: b.temperature,
            recommended: b.thresholds!.recommended,
            best_fixed: b.thresholds!.best_fixed,
            simulated_gain_over_best_fixed: round(b.thresholds!.simulated_gain_over_best_fixed, 4),
            grid: thresholdGrid(b.thresholds!),
          })),
        }
      : { method: 'no step costs in the data manifest; the paper default 0.7' },
    training: {
      data: {
        dir: basename(resolve(dataDir)),
        sources: m.settings.sources,
        prompts: data.records.length,
        rows: data.rows,
        train_rows: trainRows.length,
        val_rows: valRows.length,
        max_tokens: m.settings.max_tokens,
        temperatures: m.settings.temperatures,
        mix_ratio: m.settings.mix_ratio,
        seed: m.settings.seed,
      },
      epochs: options.epochs,
      batch_size: options.batchSize,
      lr: options.lr,
      weight_decay: options.weightDecay,
      mismatch_weight: options.mismatchWeight,
      val_fraction: options.valFraction,
      seed,
      best_epoch: training.bestEpoch,
      steps: training.steps,
      seconds: round(training.seconds, 1),
      rows_per_second: Math.round(training.rowsPerSecond),
      loss: { initial_val: round(training.initialValLoss, 5), epochs: training.history.map((h) => ({ ...h, train_loss: round(h.train_loss, 5), val_loss: round(h.val_loss, 5), seconds: round(h.seconds, 1) })) },
    },
    calibration: {
      split: rest.split,
      ...roundAll(rest.calibration),
      by_temperature: byTemperature.map((b) => ({ temperature: b.temperature, ...roundAll(b.calibration) })),
    },
    created: new Date().toISOString(),
  };
  const paths = saveHead(out, training.params, meta);
  return { ...paths, meta, training, evaluation };
}

function thresholdGrid(t: ThresholdSelection): { h: number; tokens_per_ms: number; drafted_per_round: number }[] {
  return t.specdec.map((r, i) => ({ h: THRESHOLD_GRID[i]!, tokens_per_ms: round(r.tokens_per_ms, 5), drafted_per_round: round(r.mean_drafted_per_round, 3) }));
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

function roundAll<T>(value: T): T {
  return JSON.parse(JSON.stringify(value, (_k, v: unknown) => (typeof v === 'number' && !Number.isInteger(v) ? round(v, 5) : v))) as T;
}
