/**
 * The serving benchmark's report: its JSON document (schema in bench/README.md), the speedup of
 * each configuration over the baseline, and the side-by-side table (rows: metrics, columns:
 * configurations) for the terminal and as Markdown.
 */
import { availableParallelism, arch, cpus, release, totalmem, type } from 'node:os';
import { DISTRIBUTION_STATS, type LatencySummary } from './latency-stats.js';
import type { ConfigResult } from './run-config.js';
import { textTable } from '../text-table.js';

export const REPORT_SCHEMA = 'specd-bench-serve/1';

export interface Machine {
  cpu: string;
  cores: number;
  memory_gib: number;
  os: string;
  node: string;
}

export interface ServeSettings {
  /** The command line that made the report. */
  command: string;
  /** The server's URL (`--url`), or null when the benchmark started its own (`--spawn`). */
  url: string | null;
  spawn: boolean;
  server_args: string[];
  dataset: string;
  num_prompts: number;
  max_tokens: number;
  random_input_len: number | null;
  random_output_len: number | null;
  /** Requests per second; null: all at once. */
  request_rate: number | null;
  /** Most requests in flight; null: no cap. */
  concurrency: number | null;
  temperature: number;
  seed: number;
  extra_body: Record<string, unknown> | null;
  /** Passes over the prompts per configuration, interleaved. */
  repeats: number;
}

export interface ServeReport {
  schema: typeof REPORT_SCHEMA;
  created: string;
  machine: Machine;
  settings: ServeSettings;
  /** The configuration the speedups are relative to: `none` if it ran, else the first. */
  baseline: string;
  configs: ConfigResult[];
}

export function machineInfo(): Machine {
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: availableParallelism(),
    memory_gib: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    os: `${type()} ${release()} ${arch()}`,
    node: process.version,
  };
}

/** A command line as a POSIX shell would take it back. */
export function shellJoin(words: readonly string[]): string {
  return words.map((w) => (/^[\w@%+=:,./-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/** Set each configuration's speedup (output throughput over the baseline's); returns the baseline's label. */
export function applySpeedups(configs: ConfigResult[]): string {
  const base = configs.find((c) => c.label === 'none') ?? configs[0];
  if (!base) return '';
  const ratio = (x: number, b: number | undefined) => (b !== undefined && b > 0 ? x / b : null);
  for (const c of configs) {
    c.speedup = ratio(c.output_throughput, base.output_throughput);
    c.runs.forEach((r, i) => (r.speedup = ratio(r.output_throughput, base.runs[i]?.output_throughput)));
  }
  return base.label;
}

interface Row {
  name: string;
  cell: (c: ConfigResult) => string;
}

const fixed = (digits: number) => (x: number | null | undefined) => (x === null || x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(digits));
const f0 = fixed(0);
const f1 = fixed(1);
const f2 = fixed(2);
const pct = (x: number | null | undefined) => (x === null || x === undefined ? '-' : `${(x * 100).toFixed(1)}%`);

const LATENCIES: { key: keyof LatencySummary; name: string }[] = [
  { key: 'ttft_ms', name: 'TTFT' },
  { key: 'tpot_ms', name: 'TPOT' },
  { key: 'itl_ms', name: 'ITL' },
  { key: 'e2e_ms', name: 'E2E latency' },
];

function speedupRange(c: ConfigResult): string {
  const s = c.runs.map((r) => r.speedup).filter((x): x is number => x !== null);
  return s.length < 2 ? '-' : `${Math.min(...s).toFixed(2)}-${Math.max(...s).toFixed(2)}x`;
}

function rows(baseline: string, repeats: number): Row[] {
  return [
    { name: 'Successful requests', cell: (c) => String(c.completed) },
    { name: 'Failed requests', cell: (c) => String(c.failed) },
    { name: 'Duration (s)', cell: (c) => f2(c.duration_s) },
    { name: 'Total input tokens', cell: (c) => String(c.total_input_tokens) },
    { name: 'Total output tokens', cell: (c) => String(c.total_output_tokens) },
    { name: 'Request throughput (req/s)', cell: (c) => f2(c.request_throughput) },
    { name: 'Output throughput (tok/s)', cell: (c) => f1(c.output_throughput) },
    { name: 'Total token throughput (tok/s)', cell: (c) => f1(c.total_token_throughput) },
    { name: `Output speedup vs ${baseline}`, cell: (c) => (c.speedup === null ? '-' : `${c.speedup.toFixed(2)}x`) },
    ...(repeats > 1 ? [{ name: 'Speedup per pass (min-max)', cell: speedupRange }] : []),
    ...LATENCIES.flatMap(({ key, name }) => DISTRIBUTION_STATS.map((stat) => ({ name: `${name} ${stat} (ms)`, cell: (c: ConfigResult) => f1(c[key]?.[stat]) }))),
    { name: 'Acceptance rate', cell: (c) => pct(c.speculation?.acceptance_rate) },
    { name: 'Accepted tokens / round', cell: (c) => f2(c.speculation?.accepted_per_round) },
    { name: 'Mean acceptance length', cell: (c) => f2(c.speculation?.mean_acceptance_length) },
    { name: 'Speculative rounds', cell: (c) => f0(c.speculation?.drafts) },
    { name: 'Draft / accepted tokens', cell: (c) => (c.speculation ? `${c.speculation.draft_tokens} / ${c.speculation.accepted_tokens}` : '-') },
  ];
}

function cells(configs: readonly ConfigResult[], baseline: string): string[][] {
  const repeats = Math.max(0, ...configs.map((c) => c.runs.length));
  return rows(baseline, repeats).map((r) => [r.name, ...configs.map(r.cell)]);
}

/** The side-by-side table for the terminal, with the first errors of each configuration below it. */
export function formatComparison(configs: readonly ConfigResult[], baseline: string): string {
  const head = ['', ...configs.map((c) => c.label)];
  const body = cells(configs, baseline);
  const out = textTable(head, body, 1);
  for (const c of configs) for (const e of c.errors) out.push(`error (${c.label}): ${e}`);
  return `${out.join('\n')}\n`;
}

const mdEscape = (s: string) => s.replace(/\|/g, '\\|');

/** The report as Markdown: what ran where, then the table; `chart` is a link to the SVG, if one was written. */
export function markdownReport(report: ServeReport, chart?: string): string {
  const { settings: s, machine: m } = report;
  const load = [s.request_rate === null ? 'all requests at once' : `Poisson arrivals at ${s.request_rate} req/s`, s.concurrency === null ? 'no concurrency cap' : `at most ${s.concurrency} in flight`].join(', ');
  const lines = [
    '# specd bench serve',
    '',
    `\`${s.command}\``,
    '',
    `- Machine: ${m.cpu}, ${m.cores} cores, ${m.memory_gib} GiB, ${m.os}, Node ${m.node}`,
    `- Server: ${s.spawn ? `started by the benchmark, one per configuration (\`${shellJoin(['specd', 'serve', '--port', '0', ...s.server_args])}\` and the configuration's policy)` : s.url}`,
    `- Workload: ${s.num_prompts} prompts from ${s.dataset}${s.dataset === 'random' ? ` (${s.random_input_len} characters in, ${s.random_output_len} tokens out)` : `, max ${s.max_tokens} tokens`}, temperature ${s.temperature}, seed ${s.seed}; ${load}`,
    `- Speedup: output throughput over \`${report.baseline}\`; ${s.repeats > 1 ? `${s.repeats} passes per configuration, interleaved round by round, pooled` : 'configurations ran one after another'}`,
    '',
    `| metric | ${report.configs.map((c) => `\`${mdEscape(c.label)}\``).join(' | ')} |`,
    `|---|${report.configs.map(() => '---:').join('|')}|`,
    ...cells(report.configs, report.baseline).map((r) => `| ${r.map(mdEscape).join(' | ')} |`),
  ];
  const errors = report.configs.flatMap((c) => c.errors.map((e) => `- \`${c.label}\`: ${e}`));
  if (errors.length) lines.push('', 'First errors:', '', ...errors);
  if (chart) lines.push('', `![latency percentiles and throughput per configuration](${chart})`);
  return `${lines.join('\n')}\n`;
}
