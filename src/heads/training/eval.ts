/**
 * How good an acceptance head is, on held-out rows with soft labels a in [0, 1]:
 *
 * - Brier score: mean (P - a)^2, beside that of the constant predictor mean(a) (skill =
 *   1 - brier / brier_constant);
 * - AUC: probability that a random accepted token gets a higher P than a random rejected one,
 *   each row counting as accepted with weight a and rejected with weight 1 - a;
 * - reliability table: rows bucketed by P, mean P against mean label per bucket, and the
 *   expected calibration error (bucket-size-weighted |mean P - mean a|);
 * - the weighted BCE of training;
 * - acceptance rate, draft length, discard and verification rates and simulated tokens/ms
 *   against the threshold h (threshold.ts), beside fixed K.
 */
import { temperatureLabel } from '../../engine/sampling.js';
import { DEFAULT_SPECDEC_K_MAX, DEFAULT_SPECDEC_K_MIN } from '../../engine/stop-policy.js';
import type { HeadData, StepCosts } from './head-data.js';
import { DEFAULT_MISMATCH_WEIGHT, weightedBce } from '../runtime/head-graph.js';
import { selectThreshold, type SimSequence, type ThresholdSelection } from './threshold.js';

export interface ReliabilityBucket {
  lo: number;
  hi: number;
  count: number;
  mean_predicted: number;
  mean_label: number;
}

export interface Calibration {
  rows: number;
  mean_label: number;
  mean_predicted: number;
  brier: number;
  brier_constant: number;
  brier_skill: number;
  auc: number;
  ece: number;
  weighted_bce: number;
  reliability: ReliabilityBucket[];
}

export function brierScore(probs: ArrayLike<number>, labels: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < labels.length; i++) s += (probs[i]! - labels[i]!) ** 2;
  return labels.length ? s / labels.length : NaN;
}

/** Weighted Mann-Whitney AUC with soft labels (ties count half). */
export function aucScore(probs: ArrayLike<number>, labels: ArrayLike<number>): number {
  const order = Array.from({ length: labels.length }, (_, i) => i).sort((a, b) => probs[a]! - probs[b]!);
  let negBelow = 0; // rejected weight of rows with a lower P
  let pairs = 0;
  let pos = 0;
  let neg = 0;
  for (let i = 0; i < order.length; ) {
    let j = i;
    let groupPos = 0;
    let groupNeg = 0;
    while (j < order.length && probs[order[j]!] === probs[order[i]!]) {
      groupPos += labels[order[j]!]!;
      groupNeg += 1 - labels[order[j]!]!;
      j++;
    }
    pairs += groupPos * (negBelow + groupNeg / 2);
    negBelow += groupNeg;
    pos += groupPos;
    neg += groupNeg;
    i = j;
  }
  return pos > 0 && neg > 0 ? pairs / (pos * neg) : NaN;
}

export function reliabilityTable(probs: ArrayLike<number>, labels: ArrayLike<number>, buckets = 10): ReliabilityBucket[] {
  const table = Array.from({ length: buckets }, (_, b) => ({ lo: b / buckets, hi: (b + 1) / buckets, count: 0, sumP: 0, sumA: 0 }));
  for (let i = 0; i < labels.length; i++) {
    const b = Math.min(buckets - 1, Math.floor(probs[i]! * buckets));
    table[b]!.count++;
    table[b]!.sumP += probs[i]!;
    table[b]!.sumA += labels[i]!;
  }
  return table.map((t) => ({
    lo: t.lo,
    hi: t.hi,
    count: t.count,
    mean_predicted: t.count ? t.sumP / t.count : NaN,
    mean_label: t.count ? t.sumA / t.count : NaN,
  }));
}

export function calibration(probs: ArrayLike<number>, labels: ArrayLike<number>, mismatchWeight = DEFAULT_MISMATCH_WEIGHT): Calibration {
  const n = labels.length;
  let meanA = 0;
  let meanP = 0;
  for (let i = 0; i < n; i++) {
    meanA += labels[i]! / n;
    meanP += probs[i]! / n;
  }
  const brier = brierScore(probs, labels);
  let constant = 0;
  for (let i = 0; i < n; i++) constant += (meanA - labels[i]!) ** 2 / n;
  const reliability = reliabilityTable(probs, labels);
  const ece = reliability.reduce((s, b) => s + (b.count ? (b.count / n) * Math.abs(b.mean_predicted - b.mean_label) : 0), 0);
  return {
    rows: n,
    mean_label: meanA,
    mean_predicted: meanP,
    brier,
    brier_constant: constant,
    brier_skill: 1 - brier / constant,
    auc: aucScore(probs, labels),
    ece,
    weighted_bce: weightedBce(probs, labels, mismatchWeight),
    reliability,
  };
}

/**
 * The held-out responses of a data set as simulation sequences, given P(accept) of each of
 * `rows`; only those decoded at `temperature` when it is given.
 */
export function simSequences(data: HeadData, rows: Int32Array, probs: Float32Array, temperature?: number): SimSequence[] {
  const at = new Map<number, number>();
  rows.forEach((r, i) => at.set(r, i));
  const out: SimSequence[] = [];
  for (const rec of data.records) {
    if (rec.rows === 0 || !at.has(rec.row_start) || (temperature !== undefined && rec.temperature !== temperature)) continue;
    const first = at.get(rec.row_start)!;
    out.push({ labels: data.labels.subarray(rec.row_start, rec.row_start + rec.rows), probs: probs.subarray(first, first + rec.rows) });
  }
  return out;
}

export interface HeadEvaluation {
  split: string;
  /** Over all rows (every temperature). */
  calibration: Calibration;
  thresholds?: ThresholdSelection;
  /** The same for the rows of each decoding temperature of the data (0: greedy). */
  by_temperature: { temperature: number; calibration: Calibration; thresholds?: ThresholdSelection }[];
}

/**
 * Calibration and the threshold sweep of predictions `probs` for `rows` of `data` (rows must
 * cover whole records, as the splits do), over all rows and per decoding temperature.
 */
export function evaluatePredictions(
  data: HeadData,
  rows: Int32Array,
  probs: Float32Array,
  options: { split: string; costs?: StepCosts; kMin?: number; kMax?: number },
): HeadEvaluation {
  const costs = options.costs ?? data.manifest.costs;
  const bounds = { kMin: options.kMin ?? DEFAULT_SPECDEC_K_MIN, kMax: options.kMax ?? DEFAULT_SPECDEC_K_MAX };
  const rowTemperature = new Float64Array(data.rows);
  for (const rec of data.records) rowTemperature.fill(rec.temperature, rec.row_start, rec.row_start + rec.rows);
  const part = (temperature?: number) => {
    const keep = rows.reduce<number[]>((a, r, i) => (temperature === undefined || rowTemperature[r] === temperature ? (a.push(i), a) : a), []);
    return {
      calibration: calibration(
        Float32Array.from(keep, (i) => probs[i]!),
        Float32Array.from(keep, (i) => data.labels[rows[i]!]!),
      ),
      thresholds: costs ? selectThreshold(simSequences(data, rows, probs, temperature), costs, bounds) : undefined,
    };
  };
  const temperatures = [...new Set(Array.from(rows, (r) => rowTemperature[r]!))].sort((a, b) => a - b);
  return {
    split: options.split,
    ...part(),
    by_temperature: temperatures.length > 1 ? temperatures.map((temperature) => ({ temperature, ...part(temperature) })) : [],
  };
}

/** The evaluation as terminal tables: over all rows, then a summary per decoding temperature. */
export function formatEvaluation(e: HeadEvaluation): string {
  const lines = formatPart(`split ${e.split}`, e);
  if (e.by_temperature.length > 0) {
    lines.push('', 'per decoding temperature   rows  mean a  mean P   AUC    ECE  best fixed  recommended h  simulated gain');
    for (const b of e.by_temperature) {
      const c = b.calibration;
      const t = b.thresholds;
      lines.push(
        `${temperatureLabel(b.temperature).padEnd(24)} ${String(c.rows).padStart(7)}  ${fmt(c.mean_label)}  ${fmt(c.mean_predicted)}  ${fmt(c.auc)}  ${fmt(c.ece)}  ${(t?.best_fixed ?? '-').padStart(10)}  ${String(t?.recommended ?? '-').padStart(13)}  ${t ? `${((t.simulated_gain_over_best_fixed - 1) * 100).toFixed(1)}%`.padStart(14) : '-'}`,
      );
    }
  }
  return `${lines.join('\n')}\n`;
}

function formatPart(title: string, e: { calibration: Calibration; thresholds?: ThresholdSelection }): string[] {
  const c = e.calibration;
  const lines: string[] = [];
  lines.push(`${title}: ${c.rows} rows, mean label ${c.mean_label.toFixed(3)}, mean P ${c.mean_predicted.toFixed(3)}`);
  lines.push(
    `Brier ${c.brier.toFixed(4)} (constant predictor ${c.brier_constant.toFixed(4)}, skill ${c.brier_skill.toFixed(3)}), AUC ${c.auc.toFixed(3)}, ECE ${c.ece.toFixed(3)}, weighted BCE ${c.weighted_bce.toFixed(4)}`,
  );
  lines.push('', 'reliability    rows  mean P  mean a');
  for (const b of c.reliability) {
    lines.push(`[${b.lo.toFixed(1)}, ${b.hi.toFixed(1)})  ${String(b.count).padStart(7)}  ${fmt(b.mean_predicted)}  ${fmt(b.mean_label)}`);
  }
  const t = e.thresholds;
  if (t) {
    lines.push(
      '',
      `simulated decoding (draft ${(t.costs.draft_round_ms ?? 0).toFixed(3)} ms/round + ${t.costs.draft_step_ms.toFixed(3)} ms/step, target ${t.costs.target_ms[0]!.toFixed(2)} ms/pass of 1 token; K_min ${t.k_min}, K_max ${t.k_max})`,
    );
    lines.push('policy           drafted/round  acceptance  discard  verification  tokens/ms');
    for (const r of [...t.fixed, ...t.specdec]) {
      lines.push(
        `${r.policy.padEnd(16)} ${r.mean_drafted_per_round.toFixed(2).padStart(13)}  ${pct(r.acceptance_rate).padStart(10)}  ${pct(r.discard_rate).padStart(7)}  ${r.verification_rate.toFixed(3).padStart(12)}  ${r.tokens_per_ms.toFixed(4).padStart(9)}`,
      );
    }
    lines.push(
      '',
      `recommended threshold ${t.recommended} (best fixed: ${t.best_fixed}; simulated gain ${((t.simulated_gain_over_best_fixed - 1) * 100).toFixed(1)}%)`,
    );
  }
  return lines;
}

const fmt = (x: number) => (Number.isNaN(x) ? '     -' : x.toFixed(3).padStart(6));
const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
