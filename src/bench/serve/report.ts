/**
 * The serving benchmark's report: its JSON document (schema in bench/README.md), the speedup of
 * each point over the baseline policy and the ratios against the first server variant, the
 * side-by-side table (rows: metrics, columns: configurations) for one concurrency level, and the
 * sweep's tables for several, for the terminal and as Markdown.
 */
import { availableParallelism, arch, cpus, release, totalmem, type } from 'node:os';
import { DISTRIBUTION_STATS, type LatencySummary } from './latency-stats.js';
import type { ConfigResult } from './run-config.js';
import { textTable } from '../text-table.js';
import { shellJoin } from './server-process.js';
import { levelName, sweepTable, type Table, variantRatioTable } from './sweep-table.js';

export { shellJoin };

export const REPORT_SCHEMA = 'specd-bench-serve/2';

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
  /** The server variants (--server-args, each value one), split into words; empty when none was given. */
  server_args: string[][];
  dataset: string;
  num_prompts: number;
  max_tokens: number;
  random_input_len: number | null;
  random_output_len: number | null;
  /** Requests per second; null: all at once. */
  request_rate: number | null;
  /** The concurrency levels (most requests in flight), in the order given; null: one run with no cap. */
  concurrency: number[] | null;
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
  /** The policy the speedups are relative to, per variant and concurrency: `none` if it ran, else the first. */
  baseline: string;
  /** Every point: per concurrency level (in the order given), each configuration (variant by variant, policy by policy). */
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

const ratio = (x: number | null | undefined, b: number | null | undefined) => (x !== null && x !== undefined && b !== null && b !== undefined && b > 0 ? x / b : null);
const sameWords = (a: readonly string[] | null, b: readonly string[] | null) => JSON.stringify(a) === JSON.stringify(b);

/**
 * Set each point's speedup: its output throughput over the baseline policy's on the same server
 * variant at the same concurrency (per pass too). The baseline policy is `none` if it ran, else
 * the first configuration's; a group without it (one policy per server, no --compare) is its own.
 * Returns the baseline policy.
 */
export function applySpeedups(configs: ConfigResult[]): string {
  const policy = configs.some((c) => c.policy === 'none') ? 'none' : configs[0]?.policy;
  if (policy === undefined) return '';
  for (const c of configs) {
    const group = configs.filter((o) => o.concurrency === c.concurrency && sameWords(o.variant, c.variant));
    const base = group.find((o) => o.policy === policy) ?? group[0]!;
    c.speedup = ratio(c.output_throughput, base.output_throughput);
    c.runs.forEach((r, i) => (r.speedup = ratio(r.output_throughput, base.runs[i]?.output_throughput)));
  }
  return policy;
}

/**
 * With several server variants, set each point's `vs_first_variant`: its output throughput and
 * TTFT median over those of the same policy (the only configuration, without --compare) on the
 * first variant at the same concurrency. The first variant's points keep null.
 */
export function applyVariantRatios(configs: ConfigResult[], first: readonly string[] | null): void {
  for (const c of configs) {
    if (c.variant === null || first === null || sameWords(c.variant, first)) continue;
    const candidates = configs.filter((o) => o.concurrency === c.concurrency && sameWords(o.variant, first));
    const ref = candidates.find((o) => o.policy === c.policy) ?? (candidates.length === 1 ? candidates[0] : undefined);
    if (!ref) continue;
    c.vs_first_variant = { output_throughput: ratio(c.output_throughput, ref.output_throughput), ttft_median: ratio(c.ttft_ms?.median, ref.ttft_ms?.median) };
  }
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

/** The concurrency levels of a report's points, in the order they were given. */
export function reportLevels(configs: readonly ConfigResult[]): (number | null)[] {
  return [...new Set(configs.map((c) => c.concurrency))];
}

const errorLine = (c: ConfigResult, e: string) => `error (${c.label}${c.concurrency === null ? '' : `, concurrency ${c.concurrency}`}): ${e}`;

/**
 * What the terminal shows: one concurrency level, the side-by-side table (as without a sweep);
 * several, one row per point. Then, with several server variants, the ratios against the first.
 */
export function formatReport(report: ServeReport): string {
  const levels = reportLevels(report.configs);
  const out: string[] = [];
  if (levels.length === 1) out.push(formatComparison(report.configs, report.baseline).trimEnd());
  else {
    const t = sweepTable(report.configs, report.baseline);
    out.push(...textTable(t.head, t.rows, t.leftColumns));
    for (const c of report.configs) for (const e of c.errors) out.push(errorLine(c, e));
  }
  const ratios = variantRatioTable(report.configs);
  if (ratios) out.push('', `Against the first server variant [${ratios.first}] (same policy and concurrency):`, ...textTable(ratios.table.head, ratios.table.rows, ratios.table.leftColumns));
  return `${out.join('\n')}\n`;
}

const mdEscape = (s: string) => s.replace(/\|/g, '\\|');

function mdTable(t: Table): string[] {
  return [`| ${t.head.map(mdEscape).join(' | ')} |`, `|${t.head.map((_, i) => (i < t.leftColumns ? '---' : '---:')).join('|')}|`, ...t.rows.map((r) => `| ${r.map(mdEscape).join(' | ')} |`)];
}

function sideBySide(configs: readonly ConfigResult[], baseline: string): string[] {
  return [
    `| metric | ${configs.map((c) => `\`${mdEscape(c.label)}\``).join(' | ')} |`,
    `|---|${configs.map(() => '---:').join('|')}|`,
    ...cells(configs, baseline).map((r) => `| ${r.map(mdEscape).join(' | ')} |`),
  ];
}

/**
 * The report as Markdown: what ran where, then the side-by-side table (one concurrency level) or
 * the sweep's table and one side-by-side table per level; the ratios against the first server
 * variant when there are several; `chart` is a link to the SVG, if one was written.
 */
export function markdownReport(report: ServeReport, chart?: string): string {
  const { settings: s, machine: m } = report;
  const levels = reportLevels(report.configs);
  const variants = s.server_args.length ? s.server_args : [[]];
  const cap = s.concurrency === null ? 'no concurrency cap' : s.concurrency.length === 1 ? `at most ${s.concurrency[0]} in flight` : `at most ${s.concurrency.join(', ')} in flight in turn`;
  const load = [s.request_rate === null ? 'all requests at once' : `Poisson arrivals at ${s.request_rate} req/s`, cap].join(', ');
  const servers =
    variants.length === 1
      ? `started by the benchmark, one per configuration (\`${shellJoin(['specd', 'serve', '--port', '0', ...variants[0]!])}\` and the configuration's policy)`
      : `started by the benchmark, one per configuration, ${variants.length} variants (${variants.map((v) => `\`${shellJoin(['specd', 'serve', '--port', '0', ...v])}\``).join(', ')}) with each policy`;
  const lines = [
    '# specd bench serve',
    '',
    `\`${s.command}\``,
    '',
    `- Machine: ${m.cpu}, ${m.cores} cores, ${m.memory_gib} GiB, ${m.os}, Node ${m.node}`,
    `- Server: ${s.spawn ? servers : s.url}`,
    `- Workload: ${s.num_prompts} prompts from ${s.dataset}${s.dataset === 'random' ? ` (${s.random_input_len} characters in, ${s.random_output_len} tokens out)` : `, max ${s.max_tokens} tokens`}, temperature ${s.temperature}, seed ${s.seed}; ${load}`,
    `- Speedup: output throughput over \`${report.baseline}\`${levels.length > 1 || variants.length > 1 ? ' on the same server variant at the same concurrency' : ''}; ${s.repeats > 1 ? `${s.repeats} passes per configuration, interleaved round by round, pooled` : 'configurations ran one after another'}`,
    '',
  ];
  if (levels.length === 1) lines.push(...sideBySide(report.configs, report.baseline));
  else {
    lines.push(...mdTable(sweepTable(report.configs, report.baseline)));
    for (const level of levels) lines.push('', `## Concurrency ${levelName(level)}`, '', ...sideBySide(report.configs.filter((c) => c.concurrency === level), report.baseline));
  }
  const ratios = variantRatioTable(report.configs);
  if (ratios) lines.push('', `## Against the first server variant \`${mdEscape(ratios.first)}\``, '', 'Same policy and concurrency; output tokens/s above 1 is faster, TTFT median below 1 answers sooner.', '', ...mdTable(ratios.table));
  const errors = report.configs.flatMap((c) => c.errors.map((e) => `- \`${c.label}\`${c.concurrency === null ? '' : ` at concurrency ${c.concurrency}`}: ${e}`));
  if (errors.length) lines.push('', 'First errors:', '', ...errors);
  if (chart) lines.push('', levels.length > 1 ? `![output throughput, TTFT and TPOT against concurrency per configuration](${chart})` : `![latency percentiles and throughput per configuration](${chart})`);
  return `${lines.join('\n')}\n`;
}
