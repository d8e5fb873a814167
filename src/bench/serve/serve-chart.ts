/**
 * The serving benchmark's chart: TTFT, TPOT, ITL and e2e latency at p50 / p90 / p99, one bar per
 * configuration, and each configuration's output throughput labelled with its speedup.
 */
import { barChartSvg } from '../bar-chart.js';
import type { ServeReport } from './report.js';

const PANELS = [
  { key: 'ttft_ms', title: 'time to first token' },
  { key: 'tpot_ms', title: 'time per output token' },
  { key: 'itl_ms', title: 'inter-chunk latency (ITL)' },
  { key: 'e2e_ms', title: 'end-to-end latency' },
] as const;

const PERCENTILES = [
  { key: 'median', name: 'p50' },
  { key: 'p90', name: 'p90' },
  { key: 'p99', name: 'p99' },
] as const;

export function serveChartSvg(report: ServeReport): string {
  const { configs, settings: s } = report;
  const cap = s.concurrency === null ? null : `concurrency ${s.concurrency.join(', ')}`;
  const load = s.request_rate === null ? (cap ?? 'all at once') : `${s.request_rate} req/s${cap === null ? '' : `, ${cap}`}`;
  return barChartSvg({
    title: `specd bench serve: ${s.dataset}, ${s.num_prompts} prompts, ${load}, temperature ${s.temperature}`,
    series: configs.map((c) => c.label),
    columns: 5,
    panelWidth: 300,
    panels: [
      ...PANELS.map((p) => ({
        title: p.title,
        yLabel: 'ms',
        groups: PERCENTILES.map((q) => q.name),
        values: PERCENTILES.map((q) => configs.map((c) => c[p.key]?.[q.key] ?? null)),
      })),
      {
        title: `output throughput (speedup vs ${report.baseline})`,
        yLabel: 'tokens/s',
        groups: ['output tok/s'],
        values: [configs.map((c) => c.output_throughput)],
        labels: [configs.map((c) => `${c.output_throughput.toFixed(0)}${c.speedup === null ? '' : `\n${c.speedup.toFixed(2)}x`}`)],
      },
    ],
  });
}
