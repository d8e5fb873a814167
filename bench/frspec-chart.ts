/**
 * The chart of bench/frspec.ts results: per result file (one pair shape), the median pass time
 * of the target and of each draft variant, and each configuration's tokens/s over `none` for
 * greedy decoding and the model's default sampling.
 *
 *   node dist/bench/frspec-chart.js OUT.svg LABEL=RESULT.json [LABEL=RESULT.json ...]
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { barChartSvg, type BarPanel } from '../src/bench/bar-chart.js';

interface Result {
  passes: Record<string, { median_ms: number }>;
  generation: { sampling: string; configuration: string; ratio_to_none: number; acceptance: number | null }[];
}

const [out, ...inputs] = process.argv.slice(2);
if (!out || inputs.length === 0) throw new Error('usage: frspec-chart OUT.svg LABEL=RESULT.json [...]');
const panels: BarPanel[] = [];
const samplings = new Set<string>();
for (const input of inputs) {
  const [label, file] = input.split('=') as [string, string];
  const r = JSON.parse(readFileSync(file, 'utf8')) as Result;
  const passNames = Object.keys(r.passes);
  panels.push({ title: `${label}: one pass, median ms`, yLabel: 'ms', groups: passNames, values: passNames.map((n) => [r.passes[n]!.median_ms, null]) });
  const configs = [...new Set(r.generation.map((g) => g.configuration))];
  const kinds = [...new Set(r.generation.map((g) => g.sampling))];
  kinds.forEach((k) => samplings.add(k));
  panels.push({
    title: `${label}: tokens/s over none`,
    yLabel: 'x none',
    groups: configs,
    values: configs.map((c) => kinds.map((k) => r.generation.find((g) => g.configuration === c && g.sampling === k)?.ratio_to_none ?? null)),
    labels: configs.map((c) =>
      kinds.map((k) => {
        const g = r.generation.find((x) => x.configuration === c && x.sampling === k);
        return g ? `${g.ratio_to_none.toFixed(2)}${g.acceptance === null ? '' : `\nacc ${g.acceptance.toFixed(2)}`}` : null;
      }),
    ),
    reference: 1,
  });
}
const series = [...samplings].map((s) => s.split(':')[0]!);
writeFileSync(out, barChartSvg({ title: 'FR-Spec: the draft restricted to a 32,768-token map (bench/frspec.ts)', series, panels, columns: 2, panelWidth: 420 }));
