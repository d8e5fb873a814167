/**
 * One configuration of a serving benchmark: a warm-up request; per pass over the prompts a
 * scrape of `/metrics`, the load, another scrape; then the figures `vllm bench serve` reports
 * (requests, throughput, TTFT / TPOT / ITL / e2e latency) with the speculation figures from the
 * metrics' deltas, over all passes together.
 */
import type http from 'node:http';
import { type LatencySummary, type RequestLatency, requestLatency, summarizeLatencies } from './latency-stats.js';
import { runLoad } from './load-generator.js';
import { addCounts, countDelta, type SpeculationCounts, type SpeculationFigures, speculationFigures } from './speculation-delta.js';
import { requestJson, type StreamedResponse, streamRequest } from './stream-request.js';
import { type RequestSettings, requestFor, type WorkItem } from './workload.js';

export interface Target {
  url: string;
  agent: http.Agent;
  apiKey?: string;
}

/** One request's outcome, as kept in the JSON report. */
export interface RequestRecord {
  id: string;
  ok: boolean;
  error?: string;
  prompt_tokens: number | null;
  output_tokens: number;
  ttft_ms: number | null;
  tpot_ms: number | null;
  e2e_ms: number;
  /** Content chunks received (tokens arrive several per chunk when speculating). */
  chunks: number;
}

export interface ConfigResult extends LatencySummary {
  /** What the column is called: the policy, with the server variant in brackets when several ran. */
  label: string;
  /** The --compare entry, or the server's own policy without --compare. */
  policy: string;
  /** The server variant's `--server-args` words (--spawn), else null. */
  variant: string[] | null;
  /** Most requests in flight during this point's passes; null: no cap. */
  concurrency: number | null;
  /** The `speculative` request field sent (with --url), or null. */
  speculative: Record<string, unknown> | null;
  /** The extra `specd serve` flags (with --spawn), or null. */
  server_args: string[] | null;
  completed: number;
  failed: number;
  /** The first few distinct error messages. */
  errors: string[];
  duration_s: number;
  request_throughput: number;
  output_throughput: number;
  total_token_throughput: number;
  total_input_tokens: number;
  total_output_tokens: number;
  /** output_throughput over the baseline configuration's (set by the comparison). */
  speedup: number | null;
  /**
   * Against the same policy on the first server variant at the same concurrency: output
   * throughput and TTFT median ratios (this / first). Null for the first variant and with one.
   */
  vs_first_variant: VariantRatios | null;
  /** Each pass over the prompts (--repeats) on its own; speedup against the baseline's pass of the same round. */
  runs: { duration_s: number; output_throughput: number; speedup: number | null }[];
  speculation: SpeculationFigures | null;
  requests: RequestRecord[];
}

export interface VariantRatios {
  output_throughput: number | null;
  ttft_median: number | null;
}

export interface RunOptions {
  requestRate: number;
  concurrency: number;
  seed: number;
  onProgress?: (done: number) => void;
}

const MAX_ERRORS = 5;

async function scrapeMetrics(target: Target): Promise<string | null> {
  const res = await requestJson(new URL('/metrics', target.url), target.agent, { apiKey: target.apiKey }).catch(() => null);
  return res && res.status === 200 ? res.body : null;
}

function record(id: string, r: StreamedResponse, outputTokens: number, lat: RequestLatency): RequestRecord {
  return {
    id,
    ok: r.ok,
    ...(r.error !== undefined ? { error: r.error } : {}),
    prompt_tokens: r.usage?.prompt_tokens ?? null,
    output_tokens: outputTokens,
    ttft_ms: lat.ttftMs,
    tpot_ms: lat.tpotMs,
    e2e_ms: lat.e2eMs,
    chunks: r.contentMs.length,
  };
}

/** One short request, which also checks that the server takes these requests at all. */
export async function warmUp(target: Target, items: readonly WorkItem[], settings: RequestSettings, label: string): Promise<void> {
  const { path, body } = requestFor({ ...items[0]!, maxTokens: Math.min(8, items[0]!.maxTokens) }, 0, settings);
  const warm = await streamRequest(new URL(path, target.url), target.agent, body, target.apiKey);
  if (!warm.ok) throw new Error(`${label}: the warm-up request failed: ${warm.error}`);
}

/** What one pass over the prompts gave, before it is summarised. */
export interface RawRun {
  responses: StreamedResponse[];
  durationS: number;
  /** The metrics' increase over the pass; null if /metrics could not be read. */
  counts: SpeculationCounts | null;
}

/** Send every item to `target` under the load schedule, between two scrapes of /metrics. */
export async function runOnce(target: Target, items: readonly WorkItem[], settings: RequestSettings, opts: RunOptions): Promise<RawRun> {
  const send = (i: number) => {
    const { path, body } = requestFor(items[i]!, i, settings);
    return streamRequest(new URL(path, target.url), target.agent, body, target.apiKey);
  };
  const before = await scrapeMetrics(target);
  const run = await runLoad(items.length, send, { ...opts, onDone: opts.onProgress });
  const after = await scrapeMetrics(target);
  let counts: SpeculationCounts | null = null;
  try {
    if (before !== null && after !== null) counts = countDelta(before, after);
  } catch (err) {
    // The latency and throughput figures stand without the server's counters.
    process.stderr.write(`warning: cannot read ${target.url}/metrics: ${(err as Error).message}\n`);
  }
  return { responses: run.results, durationS: run.durationS, counts };
}

/**
 * A configuration's figures over one or more passes: requests pooled, durations added (so
 * throughput is all tokens over all the time spent), metric counts added; `runs` keeps each
 * pass's own duration and throughput.
 */
export function summarizeConfig(meta: Pick<ConfigResult, 'label' | 'policy' | 'variant' | 'concurrency' | 'speculative' | 'server_args'>, items: readonly WorkItem[], runs: readonly RawRun[]): ConfigResult {
  const raw = runs.flatMap((r) => r.responses);
  const ids = runs.flatMap(() => items.map((it) => it.id));
  // Output tokens from the server's usage; without it, one per content chunk.
  const outputs = raw.map((r) => r.usage?.completion_tokens ?? r.contentMs.length);
  const lats = raw.map((r, i) => requestLatency({ ...r, outputTokens: outputs[i]! }));
  const requests = raw.map((r, i) => record(ids[i]!, r, outputs[i]!, lats[i]!));
  const ok = requests.filter((r) => r.ok);
  const totalIn = ok.reduce((a, r) => a + (r.prompt_tokens ?? 0), 0);
  const totalOut = ok.reduce((a, r) => a + r.output_tokens, 0);
  const d = runs.reduce((a, r) => a + r.durationS, 0);
  const counts = runs.every((r) => r.counts) ? runs.map((r) => r.counts!).reduce(addCounts) : null;
  return {
    ...meta,
    completed: ok.length,
    failed: raw.length - ok.length,
    errors: [...new Set(requests.filter((r) => !r.ok).map((r) => r.error!))].slice(0, MAX_ERRORS),
    duration_s: d,
    request_throughput: ok.length / d,
    output_throughput: totalOut / d,
    total_token_throughput: (totalIn + totalOut) / d,
    total_input_tokens: totalIn,
    total_output_tokens: totalOut,
    speedup: null,
    vs_first_variant: null,
    runs: runs.map((r) => {
      const out = r.responses.reduce((a, x) => a + (x.ok ? (x.usage?.completion_tokens ?? x.contentMs.length) : 0), 0);
      return { duration_s: r.durationS, output_throughput: out / r.durationS, speedup: null };
    }),
    ...summarizeLatencies(lats.filter((_, i) => raw[i]!.ok)),
    speculation: counts ? speculationFigures(counts) : null,
    requests,
  };
}
