/**
 * `npm run soak:multi-turn`: starts `specd serve` (prefix caching on, a KV-cache budget small
 * enough that cached rows must leave) and runs random multi-turn conversations against it for a
 * while: each client opens conversations on one of a few shared system prompts, runs 1 to
 * --max-turns turns of random questions and lengths, greedy or sampled, each turn sending the
 * whole conversation on /v1/chat/completions (streamed) or continuing a stored response with
 * `previous_response_id` on /v1/responses. Samples the server's resident memory every second
 * and reports requests, the prefix cache's hit rate (its /metrics counters), TTFT of later turns,
 * and the memory; writes the samples as JSON and an SVG chart.
 *
 * Exits non-zero on any unexpected error, when no turn was served from the cache, or when
 * memory kept growing: the highest sample of the last third of the run (after --warmup) above
 * the highest of the first third by more than --max-growth (a leak keeps growing; a bounded
 * cache levels off).
 *
 *   npm run soak:multi-turn -- --clients 8 --duration 600 --warmup 60 --json soak.json --chart soak.svg
 *
 * Arguments after `--serve` go to `specd serve` (default: --kv-cache-memory-bytes 48M).
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { lineChartSvg } from '../../src/bench/line-chart.js';
import { Rng } from '../../src/engine/rng.js';
import { metricValue, NO_EOS, sseData, streamChat } from '../support/http-client.js';
import { residentBytes, startServe } from '../support/serve-process.js';

const argv = process.argv.slice(2);
const serveAt = argv.indexOf('--serve');
const { values } = parseArgs({
  args: serveAt < 0 ? argv : argv.slice(0, serveAt),
  options: {
    clients: { type: 'string', default: '8' },
    duration: { type: 'string', default: '600' },
    warmup: { type: 'string', default: '60' },
    'max-turns': { type: 'string', default: '6' },
    'max-tokens': { type: 'string', default: '24' },
    'system-prompts': { type: 'string', default: '4' },
    'max-growth': { type: 'string', default: '0.15' },
    seed: { type: 'string', default: '7' },
    json: { type: 'string' },
    chart: { type: 'string' },
  },
});
const clients = Number(values.clients);
const durationS = Number(values.duration);
const warmupS = Number(values.warmup);
const maxTurns = Number(values['max-turns']);
const maxTokens = Number(values['max-tokens']);
const maxGrowth = Number(values['max-growth']);
const serveArgs = serveAt < 0 ? ['--kv-cache-memory-bytes', '48M'] : argv.slice(serveAt + 1);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const mb = (bytes: number) => Math.round((bytes / 2 ** 20) * 10) / 10;
const percentile = (sorted: number[], p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]! : NaN);
const words = (rng: Rng, n: number) => Array.from({ length: n }, () => Array.from({ length: 2 + Math.floor(rng.next() * 6) }, () => String.fromCharCode(97 + Math.floor(rng.next() * 26))).join('')).join(' ');

async function main(): Promise<number> {
  const server = await startServe(['--no-head', ...serveArgs]);
  const pid = server.child.pid!;
  const url = server.url;
  process.stderr.write(`soak: ${clients} multi-turn clients for ${durationS} s against ${url} (pid ${pid}), specd serve ${serveArgs.join(' ')}\n`);
  const seedRng = new Rng(Number(values.seed));
  const systems = Array.from({ length: Number(values['system-prompts']) }, () => words(seedRng, 30));

  let turnsOk = 0;
  let conversations = 0;
  const unexpected: string[] = [];
  const laterTtfts: number[] = [];
  const t0 = Date.now();
  const end = t0 + durationS * 1000;
  const samples: { t: number; mb: number }[] = [];
  const sampler = (async () => {
    while (Date.now() < end) {
      await sleep(1000);
      samples.push({ t: Math.round((Date.now() - t0) / 1000), mb: mb(residentBytes(pid)) });
    }
  })();

  /** A chat turn: the whole conversation, streamed; returns the answer, or undefined after an error. */
  const chatTurn = async (messages: { role: string; content: string }[], rng: Rng, turn: number): Promise<string | undefined> => {
    const payload = {
      messages,
      max_tokens: 1 + Math.floor(rng.next() * maxTokens),
      temperature: rng.next() < 0.5 ? 0 : 0.8,
      seed: Math.floor(rng.next() * 1e9),
      logit_bias: NO_EOS,
      stream_options: { include_usage: true },
    };
    const outcome = await streamChat(url, payload);
    if (outcome.status === 429) {
      await sleep(Number(outcome.retryAfter ?? 1) * 1000);
      return '';
    }
    const data = sseData(outcome.body);
    if (outcome.status !== 200 || data.at(-1) !== '[DONE]' || data.some((d) => d.startsWith('{"error"'))) {
      unexpected.push(`chat ${outcome.status}: ${outcome.body.slice(-300)}`);
      return undefined;
    }
    turnsOk++;
    if (turn > 0 && outcome.ttftMs !== undefined && Date.now() - t0 >= warmupS * 1000) laterTtfts.push(outcome.ttftMs);
    return data
      .filter((d) => d.startsWith('{'))
      .map((d) => (JSON.parse(d) as { choices: { delta?: { content?: string } }[] }).choices[0]?.delta?.content ?? '')
      .join('');
  };

  /** A Responses turn continuing `previous` (stored); returns the new response's id, or undefined after an error. */
  const responsesTurn = async (input: string, instructions: string, previous: string | undefined, rng: Rng): Promise<string | undefined> => {
    const body = { input, instructions, max_output_tokens: 1 + Math.floor(rng.next() * maxTokens), temperature: rng.next() < 0.5 ? 0 : 0.8, ...(previous ? { previous_response_id: previous } : {}) };
    const res = await fetch(`${url}/v1/responses`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const text = await res.text();
    if (res.status === 429) {
      await sleep(Number(res.headers.get('retry-after') ?? 1) * 1000);
      return previous;
    }
    if (res.status !== 200) {
      unexpected.push(`responses ${res.status}: ${text.slice(0, 300)}`);
      return undefined;
    }
    turnsOk++;
    return (JSON.parse(text) as { id: string }).id;
  };

  const client = async (c: number) => {
    const rng = new Rng(Number(values.seed) * 1000 + c);
    while (Date.now() < end) {
      conversations++;
      const system = systems[Math.floor(rng.next() * systems.length)]!;
      const turns = 1 + Math.floor(rng.next() * maxTurns);
      if (rng.next() < 0.3) {
        let previous: string | undefined;
        for (let t = 0; t < turns && Date.now() < end; t++) {
          previous = await responsesTurn(words(rng, 4 + Math.floor(rng.next() * 8)), system, previous, rng);
          if (previous === undefined) break;
        }
        continue;
      }
      const messages = [{ role: 'system', content: system }];
      for (let t = 0; t < turns && Date.now() < end; t++) {
        messages.push({ role: 'user', content: words(rng, 4 + Math.floor(rng.next() * 8)) });
        const answer = await chatTurn(messages, rng, t);
        if (answer === undefined) break;
        messages.push({ role: 'assistant', content: answer });
      }
    }
  };
  await Promise.all(Array.from({ length: clients }, (_, c) => client(c)));
  await sampler;

  const queries = await metricValue(url, 'specd_prefix_cache_queries_total');
  const hits = await metricValue(url, 'specd_prefix_cache_hits_total');
  const exitCode = await server.stop();
  const elapsedS = (Date.now() - t0) / 1000;
  laterTtfts.sort((a, b) => a - b);
  // Memory: the peak of the first and of the last third of the samples after warm-up.
  const measured = samples.filter((s) => s.t >= warmupS);
  const third = Math.max(1, Math.floor(measured.length / 3));
  const firstPeak = Math.max(...measured.slice(0, third).map((s) => s.mb));
  const lastPeak = Math.max(...measured.slice(-third).map((s) => s.mb));
  const growth = lastPeak / firstPeak - 1;

  const report = {
    clients,
    duration_s: Math.round(elapsedS),
    serve_args: serveArgs,
    conversations,
    turns_ok: turnsOk,
    unexpected_errors: unexpected.length,
    prefix_cache_hit_rate: queries > 0 ? Math.round((hits / queries) * 1000) / 1000 : 0,
    later_turn_ttft_ms: { p50: Math.round(percentile(laterTtfts, 0.5)), p99: Math.round(percentile(laterTtfts, 0.99)), samples: laterTtfts.length },
    rss_mb: { first_third_peak: firstPeak, last_third_peak: lastPeak, growth: Math.round(growth * 1000) / 1000, max: Math.max(...samples.map((s) => s.mb)) },
    server_exit_code: exitCode,
    rss_samples: samples,
  };
  process.stdout.write(
    [
      `clients             ${clients}, ${conversations} conversations, ${turnsOk} turns in ${report.duration_s} s`,
      `unexpected errors   ${unexpected.length}`,
      `prefix cache        ${(report.prefix_cache_hit_rate * 100).toFixed(1)}% of prompt tokens from the cache`,
      `later turns TTFT    p50 ${report.later_turn_ttft_ms.p50} ms, p99 ${report.later_turn_ttft_ms.p99} ms (${laterTtfts.length} chat turns after warm-up)`,
      `server RSS          peak ${firstPeak} MB in the first third after warm-up, ${lastPeak} MB in the last (${(growth * 100).toFixed(1)}%), max ${report.rss_mb.max} MB`,
      `server exit code    ${exitCode}`,
      '',
    ].join('\n'),
  );
  for (const u of unexpected.slice(0, 5)) process.stderr.write(`soak: unexpected: ${u}\n`);
  if (values.json) writeFileSync(values.json, `${JSON.stringify(report, null, 2)}\n`);
  if (values.chart) {
    writeFileSync(
      values.chart,
      lineChartSvg({
        title: `specd serve ${serveArgs.join(' ')}: resident memory under ${clients} random multi-turn clients`,
        series: ['server RSS'],
        xLabel: 'seconds',
        panels: [{ title: `resident memory (warm-up ${warmupS} s)`, yLabel: 'MB', points: [samples.map((s) => ({ x: s.t, y: s.mb }))] }],
      }),
    );
  }

  const problems = [
    unexpected.length > 0 && `${unexpected.length} unexpected errors`,
    hits === 0 && 'no prompt token came from the prefix cache',
    !(growth <= maxGrowth) && `server RSS grew by ${(growth * 100).toFixed(1)}% from the first to the last third (limit ${maxGrowth * 100}%)`,
    exitCode !== 0 && `server exited with ${exitCode}`,
    turnsOk === 0 && 'no turn succeeded',
  ].filter((p): p is string => typeof p === 'string');
  for (const p of problems) process.stderr.write(`soak: FAIL: ${p}\n`);
  return problems.length ? 1 : 0;
}

process.exitCode = await main();
