/**
 * Per-request latencies from a streamed response's timeline, and their summary over a run, as
 * `vllm bench serve` computes them:
 *
 *   TTFT  first content chunk - request sent
 *   e2e   end of the stream - request sent
 *   TPOT  (e2e - TTFT) / (output tokens - 1), for requests with more than one output token
 *   ITL   the gaps between successive content chunks (a speculative server sends several tokens
 *         per chunk, so ITL is per chunk, not per token)
 *
 * Percentiles interpolate linearly between order statistics (numpy's default).
 */

/** What the client saw of one request; times in ms on one monotonic clock. */
export interface RequestTimeline {
  sentMs: number;
  /** Arrival times of the chunks that carried text. */
  contentMs: number[];
  endMs: number;
  /** Output tokens: the server's usage, else the number of content chunks. */
  outputTokens: number;
}

export interface RequestLatency {
  ttftMs: number | null;
  e2eMs: number;
  tpotMs: number | null;
  itlMs: number[];
}

export function requestLatency(t: RequestTimeline): RequestLatency {
  const first = t.contentMs[0];
  const ttftMs = first === undefined ? null : first - t.sentMs;
  const e2eMs = t.endMs - t.sentMs;
  const tpotMs = ttftMs !== null && t.outputTokens > 1 ? (e2eMs - ttftMs) / (t.outputTokens - 1) : null;
  const itlMs = t.contentMs.slice(1).map((ms, i) => ms - t.contentMs[i]!);
  return { ttftMs, e2eMs, tpotMs, itlMs };
}

/** The p-th percentile (0..100) of ascending `sorted`, interpolating linearly. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const pos = ((sorted.length - 1) * p) / 100;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

export interface Distribution {
  mean: number;
  median: number;
  p90: number;
  p99: number;
}

export const DISTRIBUTION_STATS = ['mean', 'median', 'p90', 'p99'] as const;

/** Mean, median, p90 and p99 of `values`; null when there are none. */
export function distribution(values: readonly number[]): Distribution | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return {
    mean: sorted.reduce((a, b) => a + b, 0) / sorted.length,
    median: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
  };
}

export interface LatencySummary {
  ttft_ms: Distribution | null;
  tpot_ms: Distribution | null;
  itl_ms: Distribution | null;
  e2e_ms: Distribution | null;
}

/** The four distributions over successful requests (ITL pools every request's gaps). */
export function summarizeLatencies(latencies: readonly RequestLatency[]): LatencySummary {
  const present = (xs: (number | null)[]) => xs.filter((x): x is number => x !== null);
  return {
    ttft_ms: distribution(present(latencies.map((l) => l.ttftMs))),
    tpot_ms: distribution(present(latencies.map((l) => l.tpotMs))),
    itl_ms: distribution(latencies.flatMap((l) => l.itlMs)),
    e2e_ms: distribution(latencies.map((l) => l.e2eMs)),
  };
}
