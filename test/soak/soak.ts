/**
 * `npm run soak`: starts `specd serve` as a child process and runs many concurrent streaming
 * clients against it for a while, then reports requests served, 429s (expected: more clients
 * than workers + queue; a refused client waits Retry-After and tries again), unexpected errors,
 * time to first token (p50, p99) and the server's resident memory after warm-up and at the
 * end. Exits non-zero on any unexpected error, when memory grew by more than --max-growth, or
 * when the server does not exit 0 on SIGTERM.
 *
 *   npm run soak -- --clients 48 --duration 60 --warmup 20 --max-tokens 32 --max-queue 16
 *
 * Every flag also reads from the environment (SOAK_CLIENTS, SOAK_DURATION, ...); extra
 * arguments after `--serve` go to `specd serve`.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { metricValue, NO_EOS, sseData, streamChat } from '../support/http-client.js';
import { residentBytes, startServe } from '../support/serve-process.js';

const PROMPTS = [
  'Tell me a story about a lighthouse keeper.',
  'Natalia sold 48 clips in April and half as many in May. How many clips did she sell altogether?',
  'Write a haiku about ONNX.',
  'Explain speculative decoding in two sentences.',
  'List three prime numbers and say why they are prime.',
];

const argv = process.argv.slice(2);
const serveAt = argv.indexOf('--serve');
const { values } = parseArgs({
  args: serveAt < 0 ? argv : argv.slice(0, serveAt),
  options: {
    clients: { type: 'string', default: process.env.SOAK_CLIENTS ?? '48' },
    duration: { type: 'string', default: process.env.SOAK_DURATION ?? '60' },
    warmup: { type: 'string', default: process.env.SOAK_WARMUP ?? '20' },
    'max-tokens': { type: 'string', default: process.env.SOAK_MAX_TOKENS ?? '32' },
    'max-queue': { type: 'string', default: process.env.SOAK_MAX_QUEUE ?? '16' },
    'max-growth': { type: 'string', default: process.env.SOAK_MAX_GROWTH ?? '0.2' },
    json: { type: 'string', default: process.env.SOAK_JSON },
  },
});
const clients = Number(values.clients);
const durationS = Number(values.duration);
const warmupS = Number(values.warmup);
const maxTokens = Number(values['max-tokens']);
const maxGrowth = Number(values['max-growth']);
const serveArgs = serveAt < 0 ? [] : argv.slice(serveAt + 1);

const percentile = (sorted: number[], p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]! : NaN);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const mb = (bytes: number) => Math.round((bytes / 2 ** 20) * 10) / 10;

async function main(): Promise<number> {
  const server = await startServe(['--max-queue', values['max-queue'], '--no-head', ...serveArgs]);
  const pid = server.child.pid!;
  process.stderr.write(`soak: ${clients} streaming clients for ${durationS} s against ${server.url} (pid ${pid})\n`);

  let ok = 0;
  let refused = 0;
  const unexpected: string[] = [];
  const ttfts: number[] = [];
  const t0 = Date.now();
  const end = t0 + durationS * 1000;
  let warmRss: number | undefined;
  let peakRss = 0;
  const rssSamples: { t: number; mb: number }[] = [];

  const sampler = (async () => {
    while (Date.now() < end) {
      await sleep(1000);
      const rss = residentBytes(pid);
      peakRss = Math.max(peakRss, rss);
      rssSamples.push({ t: Math.round((Date.now() - t0) / 1000), mb: mb(rss) });
      if (warmRss === undefined && Date.now() - t0 >= warmupS * 1000) warmRss = rss;
    }
  })();

  const client = async (c: number) => {
    for (let i = 0; Date.now() < end; i++) {
      const payload = {
        messages: [{ role: 'user', content: PROMPTS[(c + i) % PROMPTS.length]! }],
        max_tokens: 1 + ((c * 7 + i * 13) % maxTokens),
        temperature: (c + i) % 3 === 0 ? 0 : 0.8,
        seed: c * 1000 + i,
        logit_bias: NO_EOS,
        stream_options: { include_usage: true },
      };
      try {
        const outcome = await streamChat(server.url, payload);
        if (outcome.status === 429) {
          refused++;
          await sleep(Number(outcome.retryAfter ?? 1) * 1000);
          continue;
        }
        const data = sseData(outcome.body);
        const failed = outcome.status !== 200 || data.at(-1) !== '[DONE]' || data.some((d) => d.startsWith('{"error"'));
        if (failed) unexpected.push(`${outcome.status}: ${outcome.body.slice(-300)}`);
        else {
          ok++;
          if (outcome.ttftMs !== undefined && Date.now() - t0 >= warmupS * 1000) ttfts.push(outcome.ttftMs);
        }
      } catch (err) {
        unexpected.push(`request failed: ${(err as Error).message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: clients }, (_, c) => client(c)));
  await sampler;

  const endRss = residentBytes(pid);
  const metricsRss = await metricValue(server.url, 'process_resident_memory_bytes');
  const running = await metricValue(server.url, 'specd_num_requests_running');
  const exitCode = await server.stop();
  const elapsedS = (Date.now() - t0) / 1000;
  ttfts.sort((a, b) => a - b);
  const growth = warmRss ? endRss / warmRss - 1 : NaN;

  const report = {
    clients,
    duration_s: Math.round(elapsedS * 10) / 10,
    requests_ok: ok,
    requests_per_s: Math.round((ok / elapsedS) * 10) / 10,
    rejected_429: refused,
    unexpected_errors: unexpected.length,
    ttft_ms: { p50: Math.round(percentile(ttfts, 0.5)), p99: Math.round(percentile(ttfts, 0.99)), samples: ttfts.length },
    rss_mb: { after_warmup: warmRss ? mb(warmRss) : null, end: mb(endRss), peak: mb(peakRss), metrics_end: mb(metricsRss), growth: Math.round(growth * 1000) / 1000 },
    running_after: running,
    server_exit_code: exitCode,
    rss_samples: rssSamples,
  };
  process.stdout.write(
    [
      `clients             ${clients}`,
      `duration            ${report.duration_s} s (warm-up ${warmupS} s)`,
      `requests ok         ${ok} (${report.requests_per_s}/s)`,
      `429 (queue full)    ${refused}`,
      `unexpected errors   ${unexpected.length}`,
      `TTFT p50 / p99      ${report.ttft_ms.p50} / ${report.ttft_ms.p99} ms (${ttfts.length} requests after warm-up)`,
      `server RSS          ${report.rss_mb.after_warmup} MB after warm-up, ${report.rss_mb.end} MB at the end (${(growth * 100).toFixed(1)}%), peak ${report.rss_mb.peak} MB`,
      `server exit code    ${exitCode}`,
      '',
    ].join('\n'),
  );
  for (const u of unexpected.slice(0, 5)) process.stderr.write(`soak: unexpected: ${u}\n`);
  if (values.json) writeFileSync(values.json, `${JSON.stringify(report, null, 2)}\n`);

  const problems = [
    unexpected.length > 0 && `${unexpected.length} unexpected errors`,
    !(growth <= maxGrowth) && `server RSS grew by ${(growth * 100).toFixed(1)}% (limit ${maxGrowth * 100}%)`,
    running !== 0 && `${running} generations still running at the end`,
    exitCode !== 0 && `server exited with ${exitCode}`,
    ok === 0 && 'no request succeeded',
  ].filter((p): p is string => typeof p === 'string');
  for (const p of problems) process.stderr.write(`soak: FAIL: ${p}\n`);
  return problems.length ? 1 : 0;
}

process.exitCode = await main();
