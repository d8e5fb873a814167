/**
 * What the HTTP server costs over the engine: one stream through `specd serve`'s app against
 * the same generation run in-process, on the same machine, interleaved run by run; plus the
 * time to first token of a short prompt and the main thread's event-loop delay under load.
 *
 *   npm run build && node dist/bench/serve-overhead.js [--runs 5] [--max-tokens 512] [--json FILE]
 *
 * Both sides use the bundled pair, greedy decoding, policy fixed:4, the target on all cores
 * (one server worker), EOS biased away so every run produces exactly --max-tokens tokens. On a
 * shared machine other processes' bursts hit whichever side is running; the paired figure (the
 * median of HTTP / offline over adjacent runs) is the one to trust there.
 */
import { writeFileSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { ModelPair } from '../src/pair/model-pair.js';
import { GREEDY } from '../src/engine/sampling.js';
import type { PolicySpec } from '../src/engine/stop-policy.js';
import { generateText } from '../src/engine/text-generation.js';
import { buildApp } from '../src/server/app.js';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    'max-tokens': { type: 'string', default: '512' },
    json: { type: 'string' },
  },
});
const RUNS = Number(values.runs);
const MAX_TOKENS = Number(values['max-tokens']);
const CORES = availableParallelism();
const POLICY: PolicySpec = { policy: 'fixed', k: 4 };
const NO_EOS = { 256: -100, 258: -100 };
const QUESTION = 'Natalia sold 48 clips in April and half as many in May. How many clips did she sell altogether?';
const messages = [{ role: 'user', content: QUESTION }];

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

interface StreamTiming {
  tokens: number;
  ttftMs: number;
  totalMs: number;
}

/** One streamed chat completion; times from sending the request. */
async function stream(url: string, body: object): Promise<StreamTiming> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
  });
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  let ttftMs = NaN;
  let tokens = 0;
  let buffer = '';
  const decoder = new TextDecoder();
  for await (const part of res.body!) {
    buffer += decoder.decode(part as Uint8Array, { stream: true });
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(6, end); // after 'data: '
      buffer = buffer.slice(end + 2);
      if (event === '[DONE]') continue;
      const chunk = JSON.parse(event);
      if (Number.isNaN(ttftMs) && chunk.choices[0]?.delta?.content) ttftMs = performance.now() - t0;
      if (chunk.usage) tokens = chunk.usage.completion_tokens;
    }
  }
  return { tokens, ttftMs, totalMs: performance.now() - t0 };
}

async function main(): Promise<void> {
  const pair = await ModelPair.load({ threads: CORES });
  const app = await buildApp({ workers: 1, maxQueue: 64, policy: POLICY });
  await app.specd.engine.ready;
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  const request = { messages, max_tokens: MAX_TOKENS, temperature: 0, logit_bias: NO_EOS };

  const offlineRun = async () => {
    const t0 = performance.now();
    const r = await generateText(pair, { messages }, { maxTokens: MAX_TOKENS, sampling: GREEDY, policy: POLICY, adjustments: { logitBias: NO_EOS } });
    return { tokens: r.token_ids.length, ms: performance.now() - t0 };
  };

  // Warm-up: first-run allocations on both sides.
  await offlineRun();
  await stream(url, { ...request, max_tokens: 32 });

  const offline: number[] = [];
  const http: number[] = [];
  // Interleaved, alternating which goes first, so drift in the machine's speed hits both alike.
  for (let i = 0; i < RUNS; i++) {
    const runOffline = async () => {
      const o = await offlineRun();
      offline.push((o.tokens / o.ms) * 1000);
    };
    const runHttp = async () => {
      const h = await stream(url, request);
      http.push((h.tokens / h.totalMs) * 1000);
    };
    if (i % 2 === 0) {
      await runOffline();
      await runHttp();
    } else {
      await runHttp();
      await runOffline();
    }
  }
  await pair.release();

  // Time to first token of a short prompt, one request at a time.
  const ttft: number[] = [];
  for (let i = 0; i < 20; i++) ttft.push((await stream(url, { messages: [{ role: 'user', content: 'Hi!' }], max_tokens: 16, temperature: 0 })).ttftMs);

  // Event-loop delay while 8 concurrent streams generate (the engine's work is in the worker).
  app.specd.eventLoop.reset();
  const loadStart = performance.now();
  await Promise.all(Array.from({ length: 8 }, (_, i) => stream(url, { ...request, max_tokens: 256, temperature: 0.8, seed: i })));
  const loadS = (performance.now() - loadStart) / 1000;
  const loop = app.specd.eventLoop.snapshot();
  await app.close();

  const result = {
    machine: { cpu: cpus()[0]?.model ?? 'unknown', cores: CORES, node: process.version },
    settings: { model: 'specd-pair (bundled)', policy: 'fixed:4', temperature: 0, max_tokens: MAX_TOKENS, runs: RUNS, server_workers: 1, target_threads: CORES },
    offline_tokens_per_s: median(offline),
    http_tokens_per_s: median(http),
    http_vs_offline: median(http) / median(offline),
    /** Median over runs of HTTP / offline within the same pair of adjacent runs (robust to drift). */
    http_vs_offline_paired: median(http.map((h, i) => h / offline[i]!)),
    ttft_short_prompt_ms: { median: median(ttft), min: Math.min(...ttft), max: Math.max(...ttft) },
    event_loop_delay_under_load_ms: { p50: loop.p50 * 1000, p99: loop.p99 * 1000, max: loop.max * 1000, load_s: loadS, streams: 8 },
    runs: { offline, http },
  };
  process.stdout.write(
    `offline engine  ${result.offline_tokens_per_s.toFixed(1)} tok/s (median of ${RUNS})\n` +
      `HTTP stream     ${result.http_tokens_per_s.toFixed(1)} tok/s (${(result.http_vs_offline * 100).toFixed(1)}% of offline; paired runs: median ${(result.http_vs_offline_paired * 100).toFixed(1)}%)\n` +
      `TTFT, short prompt: median ${result.ttft_short_prompt_ms.median.toFixed(1)} ms (min ${result.ttft_short_prompt_ms.min.toFixed(1)}, max ${result.ttft_short_prompt_ms.max.toFixed(1)})\n` +
      `event-loop delay, 8 streams for ${loadS.toFixed(1)} s: p50 ${(loop.p50 * 1000).toFixed(2)} ms, p99 ${(loop.p99 * 1000).toFixed(2)} ms, max ${(loop.max * 1000).toFixed(2)} ms\n`,
  );
  if (values.json) writeFileSync(values.json, `${JSON.stringify(result, null, 2)}\n`);
}

await main();
