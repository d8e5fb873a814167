/**
 * specd as Prometheus sees it: a real `specd serve` (the bundled pair, its default policy) under
 * streaming load from the openai client, scraped every second by a real Prometheus (Debian's)
 * loaded with deploy/prometheus/prometheus.yml and rules.yml. Checks that /metrics passes
 * `promtool check metrics`; that every PromQL query the project documents (README and docs/,
 * the recording and alerting rules, every Grafana panel, the prometheus-adapter rule) returns
 * data; and that histogram_quantile() of the TTFT buckets agrees with what the clients measured.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';
import { parse, stringify } from 'yaml';
import { percentile } from '../../src/bench/serve/latency-stats.js';
import { hasTool, requireTools, toolPath } from '../support/debian-tools.js';
import { adapterQueries, dashboardQueries, type DocumentedQuery, markdownQueries, ruleFile } from '../support/documented-queries.js';
import { type PrometheusProcess, startPrometheus } from '../support/prometheus.js';
import { type ServeProcess, startServe } from '../support/serve-process.js';

const MODEL = 'specd-pair-target';
/** Streaming clients at once, and how long they keep sending. */
const CLIENTS = 3;
const LOAD_MS = 15_000;
const QUESTIONS = ['How many legs do 3 spiders have?', 'Write a haiku about ONNX.', 'Natalia sold 48 clips in April and half as many in May. How many in all?', 'Name three rivers.'];
/** Per-request policies besides the server's default (specdec++), so the by-policy panels have series. */
const POLICIES: (Record<string, unknown> | undefined)[] = [undefined, undefined, { policy: 'fixed', k: 4 }, { policy: 'confidence' }];

let tools: Record<string, string> | undefined;
let server: ServeProcess | undefined;
let prometheus: PrometheusProcess | undefined;
/** Client-side time to first token of every request, seconds. */
const ttfts: number[] = [];
let metricsText = '';

/** deploy/prometheus/prometheus.yml scraping `target` every second, its rules evaluated every second. */
function testConfig(target: string): string {
  const config = parse(readFileSync('deploy/prometheus/prometheus.yml', 'utf8'));
  config.global = { ...config.global, scrape_interval: '1s', evaluation_interval: '1s' };
  config.rule_files = (config.rule_files as string[]).map((f) => resolve('deploy/prometheus', f));
  config.scrape_configs[0].static_configs = [{ targets: [target] }];
  return stringify(config);
}

async function load(client: OpenAI): Promise<void> {
  const end = Date.now() + LOAD_MS;
  await Promise.all(
    Array.from({ length: CLIENTS }, async (_, c) => {
      for (let i = c; Date.now() < end; i += CLIENTS) {
        const speculative = POLICIES[i % POLICIES.length];
        const t0 = performance.now();
        const stream = await client.chat.completions.create({
          model: MODEL,
          messages: [{ role: 'user', content: QUESTIONS[i % QUESTIONS.length]! }],
          max_tokens: 48,
          temperature: i % 2 ? 0.7 : 0,
          stream: true,
          ...(speculative ? { speculative } : {}),
        } as OpenAI.Chat.ChatCompletionCreateParamsStreaming);
        let first: number | undefined;
        for await (const chunk of stream) if (first === undefined && chunk.choices[0]?.delta.content) first = performance.now();
        if (first !== undefined) ttfts.push((first - t0) / 1000);
      }
    }),
  );
}

before(async () => {
  // Each test asks for the tools itself (a skip with the package to install, or a failure in CI).
  if (!hasTool('prometheus') || !hasTool('promtool')) return;
  tools = { prometheus: toolPath('prometheus')!, promtool: toolPath('promtool')! };
  server = await startServe([]);
  prometheus = await startPrometheus(tools.prometheus, testConfig(new URL(server.url).host));
  await load(new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 }));
  // The last counters scraped and the rules evaluated on them.
  await prometheus.scrapes(3);
  metricsText = await (await fetch(`${server.url}/metrics`)).text();
});

after(async () => {
  await prometheus?.stop();
  await server?.stop();
});

/** Fails unless `q` returns at least one series with a finite value. */
async function assertData(q: DocumentedQuery): Promise<void> {
  const result = await prometheus!.query(q.query).catch((err: Error) => assert.fail(`${q.where}: ${q.query}: ${err.message}`));
  assert.ok(result.length > 0, `${q.where}: no series for ${q.query}`);
  assert.ok(result.some((s) => Number.isFinite(s.value)), `${q.where}: no finite value for ${q.query}: ${JSON.stringify(result)}`);
}

describe('specd serve scraped by a real Prometheus under load', { timeout: 180_000 }, () => {
  test('promtool check metrics: /metrics is clean', (t) => {
    const found = requireTools(t, 'prometheus', 'promtool');
    if (!found) return;
    const run = spawnSync(found.promtool, ['check', 'metrics'], { input: metricsText, encoding: 'utf8', timeout: 30_000 });
    assert.equal(run.status, 0, `promtool check metrics: ${run.stdout}${run.stderr}`);
    assert.equal(run.stdout + run.stderr, '');
  });

  test('every specd series carries model_name', (t) => {
    if (!requireTools(t, 'prometheus', 'promtool')) return;
    const samples = metricsText.split('\n').filter((l) => l.startsWith('specd_'));
    assert.ok(samples.length > 50);
    for (const line of samples) assert.ok(line.includes(`model_name="${MODEL}"`), line);
  });

  test('the target is up and scraped', async (t) => {
    if (!requireTools(t, 'prometheus', 'promtool')) return;
    assert.deepEqual((await prometheus!.query('up{job="specd"}')).map((s) => s.value), [1]);
  });

  test('every PromQL query in README.md and docs/ returns data', async (t) => {
    if (!requireTools(t, 'prometheus', 'promtool')) return;
    const queries = markdownQueries();
    assert.ok(queries.length >= 10, `${queries.length} documented queries`);
    t.diagnostic(`${queries.length} queries`);
    for (const q of queries) await assertData(q);
  });

  test('every recording rule records data and every rule evaluates without error', async (t) => {
    if (!requireTools(t, 'prometheus', 'promtool')) return;
    const rules = await prometheus!.rules();
    const defined = ruleFile().groups.flatMap((g) => g.rules);
    assert.equal(rules.length, defined.length, 'Prometheus loaded every rule');
    for (const r of rules) assert.equal(r.health, 'ok', `${r.name}: ${r.lastError}`);
    for (const r of defined) {
      if (r.record) await assertData({ where: `rules.yml: ${r.record}`, query: r.record });
      // An alert's condition: its expression with the comparison dropped has data.
      else await assertData({ where: `rules.yml: ${r.alert}`, query: r.expr.replace(/\s*(==|<|>)\s*[^<>=]*$/, '') });
    }
  });

  test('every Grafana panel query returns data', async (t) => {
    if (!requireTools(t, 'prometheus', 'promtool')) return;
    const queries = dashboardQueries(MODEL);
    assert.ok(queries.length >= 15);
    for (const q of queries) await assertData(q);
  });

  test("the prometheus-adapter rule behind the HPA returns each replica's queue depth", async (t) => {
    if (!requireTools(t, 'prometheus', 'promtool')) return;
    for (const q of adapterQueries('job="specd"', 'instance')) await assertData(q);
  });

  test('histogram_quantile of the TTFT buckets agrees with the clients (p50, p90, p99)', async (t) => {
    if (!requireTools(t, 'prometheus', 'promtool')) return;
    assert.ok(ttfts.length >= 10, `${ttfts.length} requests`);
    const sorted = [...ttfts].sort((a, b) => a - b);
    const n = sorted.length;
    for (const q of [0.5, 0.9, 0.99]) {
      const [estimate] = await prometheus!.query(`histogram_quantile(${q}, sum by (le) (specd_time_to_first_token_seconds_bucket))`);
      const measured = percentile(sorted, q * 100);
      // The clients' q-quantile from n samples is uncertain by sampling alone: the rank of the true
      // quantile is Binomial(n, q), so its 95% interval spans ranks nq -/+ 1.96 sqrt(nq(1-q)) (with
      // 192 requests, p99 is any of the 6 largest). The estimate must agree with some value there.
      const spread = 1.96 * Math.sqrt(n * q * (1 - q));
      const lowRank = Math.max(0, Math.floor(n * q - spread) - 1);
      const highRank = Math.min(n - 1, Math.ceil(n * q + spread) - 1);
      const candidates = sorted.slice(lowRank, highRank + 1);
      t.diagnostic(`TTFT p${q * 100}: Prometheus ${estimate!.value.toFixed(3)} s, clients ${measured.toFixed(3)} s (${n} requests; ${candidates[0]!.toFixed(3)}-${candidates.at(-1)!.toFixed(3)} s within sampling error)`);
      // One R10 bucket is 1.28x at most; the clients' times include the HTTP round trip and the
      // client's own event loop, which matter against a batching server's tens of milliseconds.
      const close = candidates.some((c) => {
        const ratio = estimate!.value / c;
        return (ratio > 0.7 && ratio < 1.3) || Math.abs(estimate!.value - c) < 0.05;
      });
      assert.ok(close, `TTFT p${q * 100}: Prometheus ${estimate!.value.toFixed(3)} s, clients ${measured.toFixed(3)} s (${candidates[0]!.toFixed(3)}-${candidates.at(-1)!.toFixed(3)} s within sampling error)`);
    }
  });
});
