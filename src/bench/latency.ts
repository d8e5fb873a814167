/**
 * `specd bench latency`: what one forward pass of a model costs on a device, the numbers that
 * decide whether speculation pays there: ms per decoded token (one token per pass, greedy;
 * median, p90 and p99), a verification pass of 5 tokens (K = 4 candidates + 1), the KV rollback,
 * and the prefill, at one or more context lengths. Each model runs on each device and graph
 * (exported / fused / inplace) from the same prompt; the greedy tokens of every configuration are
 * compared with the first configuration's at the same context.
 */
import { barChartSvg } from './bar-chart.js';
import { percentile } from './serve/latency-stats.js';
import { textTable } from './text-table.js';
import { DecoderModel } from '../engine/model.js';
import type { Device } from '../engine/device.js';
import type { GraphChoice } from '../engine/graph-choice.js';
import { argmax } from '../engine/sampling.js';

export interface LatencyCase {
  role: string;
  dir: string;
  device: Device;
  graph: GraphChoice;
  threads?: number;
}

export interface LatencyResult {
  role: string;
  model: string;
  device: Device;
  graph: GraphChoice;
  prompt_tokens: number;
  /** Position the decoding reaches: prompt + decoded tokens (the verification passes run there). */
  context_tokens: number;
  load_s: number;
  prefill_ms: number;
  /** Median, 90th and 99th percentile of single-token passes. */
  decode_ms_per_token: number;
  decode_ms_p90: number;
  decode_ms_p99: number;
  /** Median of 5-token passes on the same context (then rolled back). */
  verify5_ms: number;
  /** Median of rolling 5 positions back. */
  crop_ms: number;
  /** Greedy tokens equal to the first configuration's of the same role (null for that one). */
  same_tokens_as_first: boolean | null;
  tokens: number[];
}

/** The p-th percentile (0..100) of `xs`. */
const quantile = (xs: readonly number[], p: number) => percentile([...xs].sort((a, b) => a - b), p);

/** Measure one case: load, prefill `prompt`, decode `tokens` tokens, then time verify passes and crops. */
export async function measureLatency(c: LatencyCase, prompt: readonly number[], tokens: number, first?: LatencyResult): Promise<LatencyResult> {
  const t0 = performance.now();
  const model = await DecoderModel.load(c.dir, { device: c.device, graph: c.graph, threads: c.threads });
  const loadS = (performance.now() - t0) / 1000;
  const vocab = model.info.vocabSize;
  const cache = model.newCache();
  try {
    // One untimed pass first: shader compilation and allocator warm-up are not per-token costs.
    await model.forward(cache, prompt.slice(0, 1));
    await cache.crop(0);
    const p0 = performance.now();
    let logits = await model.forward(cache, prompt, 1);
    const prefillMs = performance.now() - p0;
    const out: number[] = [];
    const decode: number[] = [];
    for (let i = 0; i < tokens; i++) {
      const next = argmax(logits.subarray(logits.length - vocab));
      out.push(next);
      const s = performance.now();
      logits = await model.forward(cache, [next], 1);
      decode.push(performance.now() - s);
    }
    const verify: number[] = [];
    const crop: number[] = [];
    const keep = cache.length;
    for (let i = 0; i < 10; i++) {
      const s = performance.now();
      await model.forward(cache, out.slice(0, 5), 5);
      verify.push(performance.now() - s);
      const c0 = performance.now();
      await cache.crop(keep);
      crop.push(performance.now() - c0);
    }
    const warm = decode.slice(Math.min(3, decode.length - 1));
    return {
      role: c.role,
      model: model.info.dir,
      device: c.device,
      graph: c.graph,
      prompt_tokens: prompt.length,
      context_tokens: prompt.length + tokens,
      load_s: loadS,
      prefill_ms: prefillMs,
      decode_ms_per_token: quantile(warm, 50),
      decode_ms_p90: quantile(warm, 90),
      decode_ms_p99: quantile(warm, 99),
      verify5_ms: quantile(verify, 50),
      crop_ms: quantile(crop, 50),
      same_tokens_as_first: first ? first.tokens.every((t, i) => t === out[i]) : null,
      tokens: out,
    };
  } finally {
    cache.release();
    await model.release();
  }
}

export function formatLatencyTable(results: LatencyResult[]): string {
  const head = ['model', 'device', 'graph', 'context', 'load s', 'prefill ms', 'ms/token', 'p90', 'p99', 'verify 5 ms', 'rollback ms', 'same tokens'];
  const rows = results.map((r) => [
    r.role,
    r.device,
    r.graph,
    String(r.context_tokens),
    r.load_s.toFixed(1),
    r.prefill_ms.toFixed(1),
    r.decode_ms_per_token.toFixed(2),
    r.decode_ms_p90.toFixed(2),
    r.decode_ms_p99.toFixed(2),
    r.verify5_ms.toFixed(2),
    r.crop_ms.toFixed(3),
    r.same_tokens_as_first === null ? '(ref)' : r.same_tokens_as_first ? 'yes' : 'no',
  ]);
  return textTable(head, rows, 3).join('\n') + '\n';
}

/**
 * Bar chart: ms per decoded token (median), a panel per model, a group per device (per context
 * length when several were measured), a bar per graph (and device, across contexts).
 */
export function latencyChartSvg(results: LatencyResult[], title: string): string {
  const roles = [...new Set(results.map((r) => r.role))];
  const contexts = [...new Set(results.map((r) => r.context_tokens))];
  const byContext = contexts.length > 1;
  const devices = [...new Set(results.map((r) => r.device))];
  const graphs = [...new Set(results.map((r) => r.graph))];
  const series = byContext ? devices.flatMap((d) => graphs.map((g) => [d, g] as const)) : graphs.map((g) => [undefined, g] as const);
  const groups = byContext ? contexts.map(String) : devices;
  return barChartSvg({
    title,
    series: series.map(([d, g]) => (byContext && devices.length > 1 ? `${d} ${g} graph` : `${g} graph`)),
    panels: roles.map((role) => ({
      title: role,
      yLabel: 'ms per token',
      groups: byContext ? groups.map((c) => `${c} positions`) : groups,
      values: groups.map((group) =>
        series.map(([d, graph]) =>
          results.find((r) => r.role === role && r.graph === graph && (byContext ? r.device === d && String(r.context_tokens) === group : r.device === group))?.decode_ms_per_token ?? null,
        ),
      ),
    })),
  });
}

/**
 * A prompt of `length` tokens: the data set's prompts (chat-encoded, in order) joined and cut,
 * so that long contexts are text the model has seen the like of.
 * @throws RangeError when the prompts together are shorter than `length`
 */
export function contextPrompt(encoded: Iterable<number[]>, length: number): number[] {
  const out: number[] = [];
  for (const ids of encoded) {
    out.push(...ids);
    if (out.length >= length) return out.slice(0, length);
  }
  throw new RangeError(`the data set's prompts hold ${out.length} tokens, fewer than ${length}`);
}
