/** The offline benchmark's speedup chart: each policy's speedup over `none`, grouped by data set. */
import { barChartSvg } from './bar-chart.js';
import type { OfflineResult } from './offline.js';

export function speedupChartSvg(results: readonly OfflineResult[], title: string): string {
  const datasets = [...new Set(results.map((r) => r.dataset))];
  const policies = [...new Set(results.filter((r) => r.policy !== 'none').map((r) => r.policy))];
  const speedup = (d: string, p: string) => results.find((r) => r.dataset === d && r.policy === p)?.speedup_vs_none ?? null;
  return barChartSvg({
    title,
    series: policies,
    panelWidth: Math.max(480, 60 + datasets.length * (policies.length * 22 + 30)),
    panels: [
      {
        title: 'speedup over target-only decoding (none = 1)',
        yLabel: 'tokens/s over none',
        groups: datasets,
        values: datasets.map((d) => policies.map((p) => speedup(d, p))),
        labels: datasets.map((d) => policies.map((p) => {
          const v = speedup(d, p);
          return v === null ? null : `${v.toFixed(2)}`;
        })),
        reference: 1,
      },
    ],
  });
}
