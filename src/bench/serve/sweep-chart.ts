/**
 * The chart of a concurrency sweep: output tokens/s, TTFT median and TPOT median against
 * concurrency (log scale), one line per configuration (policy, and server variant when several).
 */
import { lineChartSvg } from '../line-chart.js';
import { PALETTE } from '../svg.js';
import type { ServeReport } from './report.js';
import type { ConfigResult } from './run-config.js';

/** Stroke dash patterns of the first, second, ... server variant (solid first). */
const VARIANT_DASHES = [undefined, '6 3', '2 2', '8 3 2 3'];

const PANELS: { title: string; yLabel: string; value: (c: ConfigResult) => number | null }[] = [
  { title: 'output throughput', yLabel: 'tokens/s', value: (c) => c.output_throughput },
  { title: 'time to first token (median)', yLabel: 'ms', value: (c) => c.ttft_ms?.median ?? null },
  { title: 'time per output token (median)', yLabel: 'ms', value: (c) => c.tpot_ms?.median ?? null },
];

/**
 * The SVG for a report whose points span several concurrency levels.
 * @throws RangeError when a point has no concurrency cap (it has no place on the axis)
 */
export function sweepChartSvg(report: ServeReport): string {
  const { configs, settings: s } = report;
  if (configs.some((c) => c.concurrency === null)) throw new RangeError('a sweep chart needs a concurrency level on every point');
  const series = [...new Set(configs.map((c) => c.label))];
  // A policy keeps its colour on every server variant; the variants differ by dash.
  const first = (label: string) => configs.find((c) => c.label === label)!;
  const policies = [...new Set(configs.map((c) => c.policy))];
  const variants = [...new Set(configs.map((c) => JSON.stringify(c.variant)))];
  const style = series.map((label) => ({
    color: PALETTE[policies.indexOf(first(label).policy) % PALETTE.length],
    dash: VARIANT_DASHES[variants.indexOf(JSON.stringify(first(label).variant)) % VARIANT_DASHES.length],
  }));
  const load = s.request_rate === null ? 'all at once' : `${s.request_rate} req/s`;
  return lineChartSvg({
    title: `specd bench serve: ${s.dataset}, ${s.num_prompts} prompts, ${s.max_tokens} tokens, ${load}, temperature ${s.temperature}`,
    series,
    style,
    xLabel: 'concurrency',
    logX: true,
    panels: PANELS.map((p) => ({
      title: p.title,
      yLabel: p.yLabel,
      points: series.map((label) => configs.filter((c) => c.label === label).map((c) => ({ x: c.concurrency!, y: p.value(c) }))),
    })),
  });
}
