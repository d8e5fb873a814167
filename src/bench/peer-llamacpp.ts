/**
 * specd against llama.cpp's llama-server on the same weights at the same quantization
 * (`specd bench peer`). The target and draft model directories are written as float32 GGUF
 * (src/gguf), quantized with the user's `llama-quantize` (Q8_0 for `q8`, Q4_0 for `q4`), and
 * decoded on the same prompt token ids, greedy, `maxTokens` each (end of text ignored on both
 * sides), the same threads. Per round and quantization, in turn:
 *
 * 1. llama-server with the target alone;
 * 2. llama-server with the draft (`-md`, `--spec-draft-n-max`, `--spec-draft-p-min`);
 * 2b. llama-server with each `--spec-type` list asked for (`llamaSpecTypes`: its draft-free
 *    n-gram proposers alone, or beside the draft with `draft-simple`);
 * 3. specd in-process (`dtype` q8 / q4 for both models) under each policy.
 *
 * Rounds repeat the whole sequence, so that a shared machine's bursts hit every configuration
 * alike. tokens/s = output tokens / wall time of the requests (prefill included; server starts
 * and model loads excluded). Ratios are against llama-server's target alone at the same
 * quantization, per round, and their median. Each specd policy's output is compared with specd
 * `none` at the same quantization (speculation is exact), and llama-server's with its draft
 * with its own target alone.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ModelPair } from '../pair/model-pair.js';
import { GREEDY } from '../engine/sampling.js';
import { type PolicySpec, policyLabel } from '../engine/stop-policy.js';
import { writeGguf } from '../gguf/gguf-file.js';
import { modelToGguf } from '../gguf/model-to-gguf.js';
import { type BarChart, barChartSvg } from './bar-chart.js';
import { LlamaServer, quantizeGguf } from './llama-server.js';
import { textTable } from './text-table.js';

/** specd's --dtype and the llama.cpp type of the same bits and block size (32, one scale each). */
export const GGML_QUANT = { q8: 'Q8_0', q4: 'Q4_0' } as const;
export type PeerQuant = keyof typeof GGML_QUANT;

/** The configuration that ratios are taken against. */
export const PEER_BASELINE = 'llama-server target only';

export interface PeerBenchOptions {
  target: string;
  draft: string;
  /** Acceptance head for specdec++ (undefined: the bundled head with the bundled pair; null: none). */
  head?: string | null;
  quants: PeerQuant[];
  /** Prompts as specd's chat template renders them (token ids), built once the target's tokenizer is loaded. */
  prompts: (pair: ModelPair) => number[][];
  maxTokens: number;
  rounds: number;
  /** Threads of the target on both sides (specd intra-op threads, llama-server -t). */
  threads: number;
  /** Intra-op threads of specd's draft. */
  draftThreads: number;
  policies: PolicySpec[];
  /** llama-server's --spec-draft-n-max and --spec-draft-p-min. */
  draftMax: number;
  pMin: number;
  /** llama-server `--spec-type` lists to run as well, e.g. `ngram-mod` or `draft-simple,ngram-mod` (LLAMA_SPEC_TYPES); none by default. */
  llamaSpecTypes?: string[];
  /** Slot context of llama-server (tokens). */
  context: number;
  llamaServer: string[];
  llamaQuantize: string[];
  /** Where the GGUF files are written. */
  ggufDir: string;
  log?: (line: string) => void;
}

/** One configuration in one round. */
export interface PeerRow {
  round: number;
  /** Q8_0 or Q4_0. */
  quant: string;
  engine: 'llama-server' | 'specd';
  config: string;
  tokens: number;
  seconds: number;
  tokens_per_s: number;
  /** Whether the output equals the reference's (specd none; llama-server target only) on every prompt; null for the references. */
  matches_reference: boolean | null;
}

/** A configuration over the rounds. */
export interface PeerSummary {
  quant: string;
  config: string;
  median_tokens_per_s: number;
  /** tokens/s over llama-server target only in the same round, per round. */
  ratio_per_round: number[];
  median_ratio: number;
  matches_reference: boolean | null;
}

export interface PeerResult {
  gguf: Record<string, Record<string, string>>;
  prompt_tokens: number[];
  rows: PeerRow[];
  summary: PeerSummary[];
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const sameOutputs = (a: number[][], b: number[][]) => a.length === b.length && a.every((x, i) => x.length === b[i]!.length && x.every((t, j) => t === b[i]![j]));

/**
 * Writes the GGUF files (float32, then each quantization by llama-quantize) of `role` → model
 * directory into `dir`; returns role → ggml type → path.
 * @throws NotConvertibleError for a model the writer does not handle, LlamaCppToolError when llama-quantize fails
 */
export function writePeerGguf(models: Record<string, string>, quants: PeerQuant[], llamaQuantize: string[], dir: string, threads: number): Record<string, Record<string, string>> {
  mkdirSync(dir, { recursive: true });
  const out: Record<string, Record<string, string>> = {};
  for (const [role, modelDir] of Object.entries(models)) {
    const f32 = join(dir, `${role}-F32.gguf`);
    writeGguf(f32, modelToGguf(modelDir));
    out[role] = { F32: f32 };
    for (const q of quants) {
      const path = join(dir, `${role}-${GGML_QUANT[q]}.gguf`);
      quantizeGguf(llamaQuantize, f32, path, GGML_QUANT[q], threads);
      out[role]![GGML_QUANT[q]] = path;
    }
  }
  return out;
}

/** Runs the comparison (module comment); specd's pairs are loaded once per quantization and released at the end. */
export async function runPeerBench(o: PeerBenchOptions): Promise<PeerResult> {
  const log = o.log ?? (() => {});
  log(`writing GGUF files into ${o.ggufDir}`);
  const gguf = writePeerGguf({ target: o.target, draft: o.draft }, o.quants, o.llamaQuantize, o.ggufDir, o.threads);
  const pairs = new Map<PeerQuant, ModelPair>();
  try {
    for (const q of o.quants) pairs.set(q, await ModelPair.load({ target: o.target, draft: o.draft, head: o.head, dtype: q, threads: o.threads, draftThreads: o.draftThreads }));
    const prompts = o.prompts(pairs.get(o.quants[0]!)!);
    const rows: PeerRow[] = [];
    const outputs = new Map<string, number[][]>();
    const record = (round: number, q: PeerQuant, engine: PeerRow['engine'], config: string, run: { outputs: number[][]; seconds: number }, reference?: string) => {
      const key = `${q} ${config}`;
      outputs.set(key, outputs.get(key) ?? run.outputs);
      const ref = reference === undefined ? undefined : outputs.get(`${q} ${reference}`);
      const tokens = run.outputs.reduce((n, x) => n + x.length, 0);
      const row: PeerRow = { round, quant: GGML_QUANT[q], engine, config, tokens, seconds: +run.seconds.toFixed(3), tokens_per_s: +(tokens / run.seconds).toFixed(1), matches_reference: ref ? sameOutputs(run.outputs, ref) : null };
      rows.push(row);
      log(`round ${round + 1}/${o.rounds} ${row.quant} ${config}: ${row.tokens_per_s} tok/s${row.matches_reference === false ? ' (output differs from its reference)' : ''}`);
    };
    const llamaCppDraft = `llama-server -md (n-max ${o.draftMax}, p-min ${o.pMin})`;
    for (let round = 0; round < o.rounds; round++) {
      for (const q of o.quants) {
        const t = GGML_QUANT[q];
        record(round, q, 'llama-server', PEER_BASELINE, await viaLlamaServer(o, ['-m', gguf.target![t]!], prompts));
        const speculative = ['-m', gguf.target![t]!, '-md', gguf.draft![t]!, '--spec-draft-n-max', String(o.draftMax), '--spec-draft-p-min', String(o.pMin)];
        record(round, q, 'llama-server', llamaCppDraft, await viaLlamaServer(o, speculative, prompts), PEER_BASELINE);
        for (const types of o.llamaSpecTypes ?? []) {
          const withDraft = types.split(',').includes('draft-simple');
          const args = [...(withDraft ? speculative : ['-m', gguf.target![t]!]), '--spec-type', types];
          record(round, q, 'llama-server', `llama-server --spec-type ${types}${withDraft ? ` (n-max ${o.draftMax}, p-min ${o.pMin})` : ''}`, await viaLlamaServer(o, args, prompts), PEER_BASELINE);
        }
        const noneLabel = specdLabel(q, { policy: 'none' });
        for (const p of o.policies) record(round, q, 'specd', specdLabel(q, p), await viaSpecd(pairs.get(q)!, p, prompts, o.maxTokens), p.policy === 'none' ? undefined : noneLabel);
      }
    }
    return { gguf, prompt_tokens: prompts.map((p) => p.length), rows, summary: summarizePeer(rows) };
  } finally {
    for (const pair of pairs.values()) await pair.release();
  }
}

function specdLabel(q: PeerQuant, p: PolicySpec): string {
  return `specd --dtype ${q} ${policyLabel(p)}`;
}

async function viaLlamaServer(o: PeerBenchOptions, args: string[], prompts: number[][]): Promise<{ outputs: number[][]; seconds: number }> {
  const server = await LlamaServer.start(o.llamaServer, { threads: o.threads, context: o.context, args });
  try {
    const outputs: number[][] = [];
    const t0 = performance.now();
    for (const prompt of prompts) outputs.push(await server.greedy(prompt, o.maxTokens));
    return { outputs, seconds: (performance.now() - t0) / 1000 };
  } finally {
    await server.stop();
  }
}

async function viaSpecd(pair: ModelPair, policy: PolicySpec, prompts: number[][], maxTokens: number): Promise<{ outputs: number[][]; seconds: number }> {
  // Suffix decoding's global tree starts empty, as a llama-server started for the run does.
  pair.decoder.suffixCaches.clear();
  const outputs: number[][] = [];
  const t0 = performance.now();
  for (const prompt of prompts) outputs.push(await pair.decoder.start(prompt, { maxTokens, sampling: GREEDY, eosTokenIds: [], policy }).run());
  return { outputs, seconds: (performance.now() - t0) / 1000 };
}

/** Per quantization and configuration: median tokens/s, the ratio to llama-server target only in each round, and their median. */
export function summarizePeer(rows: PeerRow[]): PeerSummary[] {
  const keys = [...new Map(rows.map((r) => [`${r.quant}\n${r.config}`, r])).values()];
  return keys.map(({ quant, config }) => {
    const mine = rows.filter((r) => r.quant === quant && r.config === config);
    const ratios = mine.map((r) => {
      const base = rows.find((b) => b.quant === quant && b.round === r.round && b.config === PEER_BASELINE)!;
      return +(r.tokens_per_s / base.tokens_per_s).toFixed(3);
    });
    const checks = mine.map((r) => r.matches_reference);
    return {
      quant,
      config,
      median_tokens_per_s: +median(mine.map((r) => r.tokens_per_s)).toFixed(1),
      ratio_per_round: ratios,
      median_ratio: +median(ratios).toFixed(3),
      matches_reference: checks.includes(null) ? null : checks.every(Boolean),
    };
  });
}

/** The summary as a text table (one row per quantization and configuration). */
export function formatPeerTable(summary: PeerSummary[]): string {
  const head = ['weights', 'configuration', 'median tok/s', `x ${PEER_BASELINE} (median)`, 'per round', 'same output'];
  const rows = summary.map((s) => [s.quant, s.config, s.median_tokens_per_s.toFixed(1), `${s.median_ratio.toFixed(2)}x`, s.ratio_per_round.map((r) => r.toFixed(2)).join(' '), s.matches_reference === null ? '-' : s.matches_reference ? 'yes' : 'NO']);
  return `${textTable(head, rows, 2).join('\n')}\n`;
}

/** A configuration's name short enough for a bar: `llama.cpp alone`, `llama.cpp -md`, `llama.cpp ngram-mod`, `specd fixed:4`. */
function shortConfig(config: string): string {
  if (config === PEER_BASELINE) return 'llama.cpp alone';
  return config
    .replace(/^llama-server -md .*/, 'llama.cpp -md')
    .replace(/^llama-server --spec-type (\S+).*/, 'llama.cpp $1')
    .replace(/^specd --dtype \w+ /, 'specd ');
}

/** A bar chart (SVG) of median tokens/s per configuration, one panel per quantization, each bar labelled with its ratio. */
export function peerChartSvg(summary: PeerSummary[], title: string): string {
  const quants = [...new Set(summary.map((s) => s.quant))];
  const chart: BarChart = {
    title,
    series: ['median tokens/s'],
    panels: quants.map((quant) => {
      const mine = summary.filter((s) => s.quant === quant);
      return {
        title: quant,
        yLabel: 'tokens/s',
        groups: mine.map((s) => shortConfig(s.config)),
        values: mine.map((s) => [s.median_tokens_per_s]),
        labels: mine.map((s) => [`${s.median_tokens_per_s.toFixed(0)}\n${s.median_ratio.toFixed(2)}x`]),
      };
    }),
    panelWidth: Math.max(360, 90 * Math.max(...quants.map((q) => summary.filter((s) => s.quant === q).length))),
  };
  return barChartSvg(chart);
}

/** llama-server's `--spec-type` values this comparison runs (its n-gram proposers, and its draft model as `draft-simple`). */
export const LLAMA_SPEC_TYPES = ['draft-simple', 'ngram-simple', 'ngram-map-k', 'ngram-map-k4v', 'ngram-mod', 'ngram-cache'] as const;

/**
 * Check a `--spec-type` list (comma-separated LLAMA_SPEC_TYPES, each once).
 * @returns the list as given, trimmed
 * @throws Error naming the first unknown or repeated type
 */
export function checkLlamaSpecTypes(text: string): string {
  const types = text.split(',').map((s) => s.trim());
  for (const [i, type] of types.entries()) {
    if (!(LLAMA_SPEC_TYPES as readonly string[]).includes(type)) throw new Error(`unknown llama-server --spec-type ${JSON.stringify(type)}; expected a comma-separated list of ${LLAMA_SPEC_TYPES.join(', ')}`);
    if (types.indexOf(type) !== i) throw new Error(`${type} is listed twice`);
  }
  return types.join(',');
}
