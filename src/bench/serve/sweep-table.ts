/**
 * The tables of a concurrency sweep: one row per point (concurrency level x configuration) with
 * the headline figures, and, with several server variants, each variant's output throughput and
 * TTFT median against the first variant's (same policy, same concurrency).
 */
import { variantName } from './configs.js';
import type { ConfigResult } from './run-config.js';

export interface Table {
  head: string[];
  rows: string[][];
  /** Columns counted from the left that hold names (left-aligned). */
  leftColumns: number;
}

const fixed = (digits: number) => (x: number | null | undefined) => (x === null || x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(digits));
const f1 = fixed(1);
const f2 = fixed(2);
const times = (x: number | null | undefined) => (x === null || x === undefined || !Number.isFinite(x) ? '-' : `${x.toFixed(2)}x`);

/** A concurrency level as a table shows it: the number, or `no cap`. */
export const levelName = (c: number | null): string => (c === null ? 'no cap' : String(c));

/** One row per point, in report order: throughput, speedup over the baseline policy, TTFT and TPOT median / p99. */
export function sweepTable(configs: readonly ConfigResult[], baseline: string): Table {
  return {
    head: ['concurrency', 'configuration', 'req/s', 'output tok/s', `speedup vs ${baseline}`, 'TTFT median (ms)', 'TTFT p99 (ms)', 'TPOT median (ms)', 'TPOT p99 (ms)', 'failed'],
    rows: configs.map((c) => [
      levelName(c.concurrency),
      c.label,
      f2(c.request_throughput),
      f1(c.output_throughput),
      times(c.speedup),
      f1(c.ttft_ms?.median),
      f1(c.ttft_ms?.p99),
      f2(c.tpot_ms?.median),
      f2(c.tpot_ms?.p99),
      String(c.failed),
    ]),
    leftColumns: 2,
  };
}

/**
 * Each later variant against the first, per policy and concurrency: output tokens/s ratio (above
 * 1 is faster) and TTFT median ratio (below 1 answers sooner). Null when there is one variant.
 */
export function variantRatioTable(configs: readonly ConfigResult[]): { first: string; table: Table } | null {
  const withRatios = configs.filter((c) => c.vs_first_variant !== null);
  const first = configs.find((c) => c.variant !== null)?.variant;
  if (withRatios.length === 0 || !first) return null;
  return {
    first: variantName(first),
    table: {
      head: ['concurrency', 'policy', 'variant', 'output tok/s ratio', 'TTFT median ratio'],
      rows: withRatios.map((c) => [levelName(c.concurrency), c.policy, variantName(c.variant!), times(c.vs_first_variant!.output_throughput), times(c.vs_first_variant!.ttft_median)]),
      leftColumns: 3,
    },
  };
}
