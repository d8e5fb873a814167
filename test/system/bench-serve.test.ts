/**
 * `specd bench serve`: latency figures from synthetic timelines, Poisson arrivals, the
 * Prometheus parser and metric deltas, the load generator's concurrency cap, the comparison
 * list, and short end-to-end runs against real `specd serve` processes.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Counter, Histogram, Registry } from 'prom-client';
import { shortNumber } from '../../src/bench/bar-chart.js';
import type { OfflineResult } from '../../src/bench/offline.js';
import { arrivalOffsets } from '../../src/bench/serve/arrivals.js';
import { checkVariants, configLabel, parseCompareList, parseConcurrencyList, variantName } from '../../src/bench/serve/configs.js';
import { lineChartSvg } from '../../src/bench/line-chart.js';
import { distribution, percentile, requestLatency, summarizeLatencies } from '../../src/bench/serve/latency-stats.js';
import { runLoad } from '../../src/bench/serve/load-generator.js';
import { parsePrometheusText, sumSamples } from '../../src/bench/serve/prometheus-text.js';
import { applySpeedups, applyVariantRatios, formatReport, markdownReport, REPORT_SCHEMA, type ServeReport } from '../../src/bench/serve/report.js';
import type { ConfigResult } from '../../src/bench/serve/run-config.js';
import { sweepChartSvg } from '../../src/bench/serve/sweep-chart.js';
import { splitArgs, startServer } from '../../src/bench/serve/server-process.js';
import { speculationDelta } from '../../src/bench/serve/speculation-delta.js';
import { SseParser } from '../../src/bench/serve/sse.js';
import { speedupChartSvg } from '../../src/bench/speedup-chart.js';
import { buildWorkload, randomText, requestFor } from '../../src/bench/serve/workload.js';
import { Rng } from '../../src/engine/rng.js';

const BIN = fileURLToPath(new URL('../../../bin/specd.js', import.meta.url));
/** Servers for the end-to-end runs: one worker; none and fixed K need no acceptance head. */
const SERVER_ARGS = '--workers 1 --no-head';

const close = (actual: number, expected: number, eps = 1e-9) => assert.ok(Math.abs(actual - expected) <= eps, `${actual} != ${expected}`);

function specd(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Every tag closes in order, attribute values are quoted, and text holds no stray < or &. */
function assertWellFormed(xml: string): void {
  const stack: string[] = [];
  const tokens = xml.split(/(<[^>]*>)/);
  for (const t of tokens) {
    if (!t.startsWith('<')) {
      assert.doesNotMatch(t, /<|&(?!amp;|lt;|gt;|quot;)/, `text ${JSON.stringify(t)}`);
      continue;
    }
    const m = /^<(\/?)([a-zA-Z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>$/.exec(t);
    assert.ok(m, `malformed tag ${t}`);
    const [, closing, name, , selfClosing] = m;
    if (closing) assert.equal(stack.pop(), name, `</${name}> closes another element`);
    else if (!selfClosing) stack.push(name!);
  }
  assert.deepEqual(stack, [], 'unclosed elements');
}

describe('latency statistics', () => {
  test('percentiles interpolate linearly between order statistics', () => {
    const xs = [1, 2, 3, 4];
    assert.equal(percentile(xs, 0), 1);
    assert.equal(percentile(xs, 50), 2.5);
    close(percentile(xs, 90), 3.7);
    close(percentile(xs, 99), 3.97);
    assert.equal(percentile(xs, 100), 4);
    assert.equal(percentile([7], 99), 7);
    const d = distribution([4, 1, 3, 2, 10])!;
    assert.equal(d.mean, 4);
    assert.equal(d.median, 3);
    close(d.p90, 4 + (10 - 4) * 0.6);
    close(d.p99, 4 + (10 - 4) * 0.96);
    assert.equal(distribution([]), null);
  });

  test('TTFT, TPOT, ITL and e2e from a streamed timeline', () => {
    // Sent at 100 ms; chunks with text at 150, 160, 180, 210 (several tokens each); done at 215; 10 tokens.
    const l = requestLatency({ sentMs: 100, contentMs: [150, 160, 180, 210], endMs: 215, outputTokens: 10 });
    assert.equal(l.ttftMs, 50);
    assert.equal(l.e2eMs, 115);
    close(l.tpotMs!, 65 / 9);
    assert.deepEqual(l.itlMs, [10, 20, 30]);
    // One output token: no TPOT; no content at all: no TTFT.
    assert.equal(requestLatency({ sentMs: 0, contentMs: [5], endMs: 6, outputTokens: 1 }).tpotMs, null);
    assert.equal(requestLatency({ sentMs: 0, contentMs: [], endMs: 6, outputTokens: 0 }).ttftMs, null);
  });

  test('the summary pools ITL gaps over requests and averages per-request TTFT and TPOT', () => {
    const a = requestLatency({ sentMs: 0, contentMs: [10, 20, 40], endMs: 40, outputTokens: 7 });
    const b = requestLatency({ sentMs: 5, contentMs: [35, 36], endMs: 41, outputTokens: 3 });
    const s = summarizeLatencies([a, b]);
    assert.equal(s.ttft_ms!.mean, (10 + 30) / 2);
    assert.equal(s.e2e_ms!.mean, (40 + 36) / 2);
    close(s.tpot_ms!.mean, (30 / 6 + 6 / 2) / 2);
    assert.equal(s.itl_ms!.mean, (10 + 20 + 1) / 3);
    assert.equal(s.itl_ms!.median, 10);
  });
});

describe('Poisson arrivals', () => {
  test('exponential gaps with mean 1 / rate, first request at 0, reproducible', () => {
    const rate = 5;
    const n = 20_000;
    const t = arrivalOffsets(n + 1, rate, 42);
    assert.equal(t[0], 0);
    const gaps = t.slice(1).map((x, i) => x - t[i]!);
    assert.ok(gaps.every((g) => g >= 0));
    const mean = gaps.reduce((a, b) => a + b, 0) / n;
    // The standard error of the mean is 0.2 / sqrt(20000) = 0.0014: 5% is 7 standard errors,
    // and a rate off by 2x (mean 0.1 or 0.4) is far outside.
    assert.ok(Math.abs(mean - 1 / rate) < 0.05 / rate, `mean gap ${mean}`);
    // Exponential: the standard deviation equals the mean.
    const sd = Math.sqrt(gaps.reduce((a, g) => a + (g - mean) ** 2, 0) / (n - 1));
    assert.ok(Math.abs(sd / mean - 1) < 0.05, `coefficient of variation ${sd / mean}`);
    // P(gap > mean) = 1/e for an exponential.
    const above = gaps.filter((g) => g > 1 / rate).length / n;
    assert.ok(Math.abs(above - Math.exp(-1)) < 0.02, `share above the mean ${above}`);
    assert.deepEqual(arrivalOffsets(50, rate, 42), t.slice(0, 50));
    assert.notDeepEqual(arrivalOffsets(50, rate, 43), t.slice(0, 50));
  });

  test('an infinite rate sends everything at once', () => {
    assert.deepEqual(arrivalOffsets(3, Infinity, 0), [0, 0, 0]);
    assert.throws(() => arrivalOffsets(3, 0, 0), RangeError);
  });
});

describe('load generator', () => {
  test('never more than --concurrency in flight; results in request order', async () => {
    let inFlight = 0;
    let most = 0;
    const done: number[] = [];
    const run = await runLoad(
      9,
      async (i) => {
        most = Math.max(most, ++inFlight);
        await new Promise((r) => setTimeout(r, 5 + ((i * 7) % 4)));
        inFlight--;
        return i * 10;
      },
      { requestRate: Infinity, concurrency: 2, seed: 0, onDone: (n) => done.push(n) },
    );
    assert.equal(most, 2);
    assert.deepEqual(run.results, [0, 10, 20, 30, 40, 50, 60, 70, 80]);
    assert.deepEqual(done, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.ok(run.durationS > 0.02);
  });

  test('requests go out no earlier than their arrival times', async () => {
    const sentAt: number[] = [];
    const start = performance.now();
    await runLoad(4, async () => void sentAt.push(performance.now() - start), { requestRate: 50, concurrency: Infinity, seed: 3 });
    const due = arrivalOffsets(4, 50, 3).map((s) => s * 1000);
    sentAt.forEach((t, i) => assert.ok(t >= due[i]! - 1, `request ${i} at ${t} ms, due ${due[i]} ms`));
  });
});

describe('Prometheus text and metric deltas', () => {
  test('samples, labels with escapes, special values, comments', () => {
    const text = [
      '# HELP x_total A counter.',
      '# TYPE x_total counter',
      'x_total 3',
      'y{a="1",b="q\\"uote\\\\ \\n"} 2.5e3 1712345678000',
      'h_bucket{le="+Inf",policy="fixed:4"} 7',
      'g Nan',
      'z{} -Inf',
      '',
    ].join('\n');
    const s = parsePrometheusText(text);
    assert.deepEqual(s[0], { name: 'x_total', labels: {}, value: 3 });
    assert.deepEqual(s[1], { name: 'y', labels: { a: '1', b: 'q"uote\\ \n' }, value: 2500 });
    assert.deepEqual(s[2]!.labels, { le: '+Inf', policy: 'fixed:4' });
    assert.ok(Number.isNaN(s[3]!.value));
    assert.equal(s[4]!.value, -Infinity);
    assert.throws(() => parsePrometheusText('x{a=1} 2'), /line 1/);
    assert.throws(() => parsePrometheusText('ok 1\nbad'), /line 2/);
  });

  test("prom-client's own output parses", async () => {
    const registry = new Registry();
    const c = new Counter({ name: 'c_total', help: 'c', labelNames: ['position'], registers: [registry] });
    const h = new Histogram({ name: 'h_seconds', help: 'h', buckets: [0.1, 1], registers: [registry] });
    c.inc({ position: '0' }, 3);
    c.inc({ position: '1' }, 2);
    h.observe(0.5);
    h.observe(2);
    const s = parsePrometheusText(await registry.metrics());
    assert.equal(sumSamples(s, 'c_total'), 5);
    assert.equal(sumSamples(s, 'c_total', { position: '1' }), 2);
    assert.equal(sumSamples(s, 'h_seconds_bucket', { le: '1' }), 1);
    assert.equal(sumSamples(s, 'h_seconds_bucket', { le: '+Inf' }), 2);
    assert.equal(sumSamples(s, 'h_seconds_sum'), 2.5);
    assert.equal(sumSamples(s, 'h_seconds_count'), 2);
  });

  test('speculation figures are the differences between two scrapes', () => {
    const scrape = (drafts: number, draft: number, acc: number, pos: number[], gen: number) =>
      [
        `specd_spec_decode_num_drafts_total ${drafts}`,
        `specd_spec_decode_num_draft_tokens_total ${draft}`,
        `specd_spec_decode_num_accepted_tokens_total ${acc}`,
        ...pos.map((v, i) => `specd_spec_decode_num_accepted_tokens_per_pos_total{position="${i}"} ${v}`),
        `specd_generation_tokens_total ${gen}`,
        `specd_spec_decode_draft_seconds_total{policy="fixed"} 1`,
        `specd_spec_decode_verify_seconds_total{policy="fixed"} 2`,
      ].join('\n');
    const d = speculationDelta(scrape(10, 40, 30, [9, 8], 100), scrape(30, 120, 66, [27, 20, 10], 250));
    assert.equal(d.drafts, 20);
    assert.equal(d.draft_tokens, 80);
    assert.equal(d.accepted_tokens, 36);
    assert.equal(d.acceptance_rate, 36 / 80);
    assert.equal(d.accepted_per_round, 1.8);
    assert.equal(d.mean_acceptance_length, 2.8);
    assert.deepEqual(d.acceptance_by_position, [18 / 20, 12 / 20, 10 / 20]);
    assert.equal(d.generation_tokens, 150);
    assert.equal(d.draft_seconds, 0);
    const none = speculationDelta(scrape(0, 0, 0, [], 0), scrape(0, 0, 0, [], 50));
    assert.equal(none.acceptance_rate, null);
    assert.equal(none.accepted_per_round, null);
  });
});

describe('inputs', () => {
  test('server-sent events across arbitrary chunk boundaries', () => {
    const p = new SseParser();
    assert.deepEqual(p.push('data: {"a"'), []);
    assert.deepEqual(p.push(':1}\n\ndata: [DO'), ['{"a":1}']);
    assert.deepEqual(p.push('NE]\r\n\r\n: comment\n\n'), ['[DONE]']);
  });

  test('--compare entries become serve flags and speculative fields', () => {
    const c = parseCompareList('none,fixed:4,specdec++,confidence:0.5,specdec++:0.8');
    assert.deepEqual(
      c.map((x) => x.label),
      ['none', 'fixed:4', 'specdec++', 'confidence:0.5', 'specdec++:0.8'],
    );
    assert.deepEqual(c[1]!.serverFlags, ['--policy', 'fixed', '--k', '4']);
    assert.deepEqual(c[1]!.speculative, { policy: 'fixed', k: 4 });
    assert.deepEqual(c[2]!.serverFlags, ['--policy', 'specdec++']);
    assert.deepEqual(c[3]!.speculative, { policy: 'confidence', p_min: 0.5 });
    assert.deepEqual(c[4]!.serverFlags, ['--policy', 'specdec++', '--threshold', '0.8']);
    assert.throws(() => parseCompareList('fixed:4,fixed:4'), /twice/);
    assert.throws(() => parseCompareList('fixed:x'));
  });

  test('--server-args splitting and reproducible random prompts', () => {
    assert.deepEqual(splitArgs(` --workers 1  --model-name "a b" --x='c d' e\\ f`), ['--workers', '1', '--model-name', 'a b', '--x=c d', 'e f']);
    assert.throws(() => splitArgs('"open'));
    const text = randomText(new Rng(1), 100);
    assert.equal(text.length, 100);
    assert.match(text, /^[a-z ]+$/);
    const w = buildWorkload({ dataset: 'random', numPrompts: 3, maxTokens: 5, seed: 9, randomInputLen: 40, randomOutputLen: 12 });
    assert.deepEqual(w, buildWorkload({ dataset: 'random', numPrompts: 3, maxTokens: 5, seed: 9, randomInputLen: 40, randomOutputLen: 12 }));
    assert.equal(w[2]!.prompt!.length, 40);
    assert.equal(w[0]!.maxTokens, 12);
    const g = buildWorkload({ dataset: 'gsm8k', numPrompts: 2, maxTokens: 5, seed: 0, randomInputLen: 1, randomOutputLen: 1 });
    assert.equal(g[0]!.messages![0]!.role, 'user');
    // Random prompts ask for outputs of exact length (vLLM's ignore_eos); data set chats may end early.
    const settings = { model: 'm', temperature: 0, seed: 3 };
    assert.deepEqual(requestFor(w[1]!, 1, settings), { path: '/v1/completions', body: { model: 'm', prompt: w[1]!.prompt, max_tokens: 12, temperature: 0, seed: 4, ignore_eos: true } });
    assert.equal(requestFor(g[0]!, 0, settings).body.ignore_eos, undefined);
  });
});

/** A point of a report with the figures the sweep's tables, ratios and chart read; the rest empty. */
function point(policy: string, variant: string[] | null, concurrency: number | null, tokS: number, ttftMedian: number, runs: number[] = [tokS]): ConfigResult {
  const dist = (median: number) => ({ mean: median, median, p90: median, p99: median * 2 });
  return {
    label: configLabel(policy, variant, true),
    policy,
    variant,
    concurrency,
    speculative: null,
    server_args: variant,
    completed: 4,
    failed: 0,
    errors: [],
    duration_s: 1,
    request_throughput: tokS / 100,
    output_throughput: tokS,
    total_token_throughput: tokS * 2,
    total_input_tokens: 100,
    total_output_tokens: tokS,
    speedup: null,
    vs_first_variant: null,
    runs: runs.map((r) => ({ duration_s: 1, output_throughput: r, speedup: null })),
    ttft_ms: dist(ttftMedian),
    tpot_ms: dist(ttftMedian / 100),
    itl_ms: dist(1),
    e2e_ms: dist(ttftMedian * 3),
    speculation: null,
    requests: [],
  };
}

function sweepReport(configs: ConfigResult[]): ServeReport {
  const settings = {
    command: 'specd bench serve', url: null, spawn: true, server_args: [['--max-batch', '1'], []], dataset: 'gsm8k', num_prompts: 4, max_tokens: 16, random_input_len: null,
    random_output_len: null, request_rate: null, concurrency: [...new Set(configs.map((c) => c.concurrency!))], temperature: 0, seed: 0, extra_body: null, repeats: 1,
  };
  const machine = { cpu: 'cpu', cores: 2, memory_gib: 1, os: 'os', node: 'v20' };
  return { schema: REPORT_SCHEMA, created: '', machine, settings, baseline: applySpeedups(configs), configs };
}

describe('concurrency sweeps and server variants', () => {
  test('--concurrency: a comma list of positive whole numbers, each once, in the order given', () => {
    assert.deepEqual(parseConcurrencyList('1,4,16,64'), [1, 4, 16, 64]);
    assert.deepEqual(parseConcurrencyList(' 16 , 1 '), [16, 1]);
    assert.deepEqual(parseConcurrencyList('4'), [4]);
    assert.throws(() => parseConcurrencyList('0,4'), /"0" is not a whole number in \[1, 1000000\]/);
    assert.throws(() => parseConcurrencyList('4,x'), /"x" is not/);
    assert.throws(() => parseConcurrencyList('1.5'), /"1.5" is not/);
    assert.throws(() => parseConcurrencyList('-2'), /"-2" is not/);
    assert.throws(() => parseConcurrencyList('1,,4'), /"" is not/);
    assert.throws(() => parseConcurrencyList('4,1,4'), /4 is listed twice/);
    assert.throws(() => parseConcurrencyList(' , '), /no concurrency levels/);
  });

  test('variants: labelled by their flags (defaults when empty), each at most once', () => {
    assert.equal(variantName(['--max-batch', '1']), '--max-batch 1');
    assert.equal(variantName(['--model-name', 'a b']), "--model-name 'a b'");
    assert.equal(variantName([]), 'defaults');
    assert.equal(configLabel('specdec++', ['--max-batch', '1'], true), 'specdec++ [--max-batch 1]');
    assert.equal(configLabel('specdec++', [], true), 'specdec++ [defaults]');
    assert.equal(configLabel('specdec++', ['--max-batch', '1'], false), 'specdec++', 'one variant keeps the plain label');
    assert.equal(configLabel('server', null, false), 'server');
    checkVariants([['--max-batch', '1'], []]);
    assert.throws(() => checkVariants([['--threads', '1'], [], ['--threads', '1']]), /the server variant "--threads 1" is given twice/);
    assert.throws(() => checkVariants([[], []]), /"defaults" is given twice/);
  });

  test('speedups within each variant and level; ratios against the first variant per policy and level', () => {
    const mb1 = ['--max-batch', '1'];
    const configs = [
      point('none', mb1, 1, 100, 50, [90, 110]),
      point('specdec++', mb1, 1, 200, 40, [180, 220]),
      point('none', [], 1, 110, 45, [99, 121]),
      point('specdec++', [], 1, 190, 42, [180, 200]),
      point('none', mb1, 16, 120, 4000),
      point('specdec++', mb1, 16, 250, 2400),
      point('none', [], 16, 480, 900),
      point('specdec++', [], 16, 1000, 600),
    ];
    assert.equal(applySpeedups(configs), 'none');
    assert.deepEqual(configs.map((c) => c.speedup), [1, 2, 1, 190 / 110, 1, 250 / 120, 1, 1000 / 480]);
    assert.deepEqual(configs[1]!.runs.map((r) => r.speedup), [2, 2], 'per pass, against the same pass of none on the same variant');
    close(configs[3]!.runs[1]!.speedup!, 200 / 121);
    applyVariantRatios(configs, mb1);
    assert.deepEqual(configs.map((c) => c.vs_first_variant), [
      null,
      null,
      { output_throughput: 110 / 100, ttft_median: 45 / 50 },
      { output_throughput: 190 / 200, ttft_median: 42 / 40 },
      null,
      null,
      { output_throughput: 480 / 120, ttft_median: 900 / 4000 },
      { output_throughput: 1000 / 250, ttft_median: 600 / 2400 },
    ]);

    // Without --compare each server runs its own policy: the ratio pairs the variants' only configurations.
    const own = [point('specdec++', mb1, 4, 100, 80), point('fixed:4', [], 4, 300, 20)];
    assert.equal(applySpeedups(own), 'specdec++');
    assert.deepEqual(own.map((c) => c.speedup), [1, 1], 'each variant is its own baseline');
    applyVariantRatios(own, mb1);
    assert.deepEqual(own[1]!.vs_first_variant, { output_throughput: 3, ttft_median: 0.25 });
    // With one variant there is nothing to compare.
    const one = [point('none', [], 4, 100, 80)];
    applyVariantRatios(one, null);
    assert.equal(one[0]!.vs_first_variant, null);
  });

  test('a sweep prints one row per point and the ratio lines; Markdown adds a table per level', () => {
    const mb1 = ['--max-batch', '1'];
    const configs = [point('specdec++', mb1, 1, 200, 40), point('specdec++', [], 1, 198, 41), point('specdec++', mb1, 16, 250, 2400), point('specdec++', [], 16, 1000, 600)];
    const report = sweepReport(configs);
    applyVariantRatios(configs, mb1);
    const text = formatReport(report);
    const lines = text.trimEnd().split('\n');
    assert.match(lines[0]!, /^concurrency +configuration +req\/s +output tok\/s +speedup vs specdec\+\+ +TTFT median \(ms\) +TTFT p99 \(ms\) +TPOT median \(ms\) +TPOT p99 \(ms\) +failed$/);
    assert.match(lines[2]!, /^1 +specdec\+\+ \[--max-batch 1\] +2\.00 +200\.0 +1\.00x +40\.0 +80\.0 +0\.40 +0\.80 +0$/);
    assert.match(lines[5]!, /^16 +specdec\+\+ \[defaults\] +10\.00 +1000\.0 +1\.00x +600\.0 +1200\.0 +6\.00 +12\.00 +0$/);
    assert.ok(text.includes('Against the first server variant [--max-batch 1] (same policy and concurrency):'), text);
    assert.match(text, /\n1 +specdec\+\+ +defaults +0\.99x +1\.02x\n/);
    assert.match(text, /\n16 +specdec\+\+ +defaults +4\.00x +0\.25x\n$/);
    const md = markdownReport(report, 'sweep.svg');
    assert.match(md, /\| concurrency \| configuration \| req\/s \|/);
    assert.match(md, /## Concurrency 1\n\n\| metric \| `specdec\+\+ \[--max-batch 1\]` \| `specdec\+\+ \[defaults\]` \|/);
    assert.match(md, /## Concurrency 16\n/);
    assert.match(md, /## Against the first server variant `--max-batch 1`/);
    assert.match(md, /\| 16 \| specdec\+\+ \| defaults \| 4\.00x \| 0\.25x \|/);
    assert.match(md, /!\[output throughput, TTFT and TPOT against concurrency per configuration\]\(sweep\.svg\)/);

    // One level with two variants: the side-by-side table as without a sweep, then the ratios.
    const single = [point('specdec++', mb1, 16, 250, 2400), point('specdec++', [], 16, 1000, 600)];
    const one = sweepReport(single);
    applyVariantRatios(single, mb1);
    const oneText = formatReport(one);
    assert.match(oneText, /^ +specdec\+\+ \[--max-batch 1\] +specdec\+\+ \[defaults\]\n/);
    assert.match(oneText, /\nOutput throughput \(tok\/s\) +250\.0 +1000\.0\n/);
    assert.match(oneText, /\n16 +specdec\+\+ +defaults +4\.00x +0\.25x\n$/);
    assert.doesNotMatch(markdownReport(one), /## Concurrency/);
  });

  test('the sweep chart: a line per configuration against concurrency on a log scale', () => {
    const mb1 = ['--max-batch', '1'];
    const configs = [1, 4, 16].flatMap((c) => [point('none', mb1, c, 100 * c, 10 * c), point('specdec++', mb1, c, 200 * c, 8 * c), point('none', [], c, 150 * c, 9 * c), point('specdec++', [], c, 300 * c, 7 * c)]);
    const svg = sweepChartSvg(sweepReport(configs));
    assertWellFormed(svg);
    for (const s of ['output throughput', 'time to first token (median)', 'time per output token (median)', 'concurrency (log scale)', '>none [--max-batch 1]<', '>specdec++ [defaults]<']) assert.ok(svg.includes(s), s);
    assert.equal((svg.match(/<path d="M/g) ?? []).length, 3 * 4, 'one line per configuration in each of the three panels');
    assert.equal((svg.match(/<circle [^>]*><title>/g) ?? []).length, 3 * 4 * 3, 'a marker per point');
    // The second variant is dashed, the first solid; a policy keeps its colour across variants.
    const strokes = [...svg.matchAll(/<path d="[^"]*" fill="none" stroke="(#\w+)" stroke-width="1.8"( stroke-dasharray="[^"]*")?\/>/g)].slice(0, 4).map((m) => [m[1], Boolean(m[2])]);
    assert.deepEqual(strokes, [[strokes[0]![0], false], [strokes[1]![0], false], [strokes[0]![0], true], [strokes[1]![0], true]]);
    assert.notEqual(strokes[0]![0], strokes[1]![0]);
    // Log scale: 1, 4 and 16 lie equally spaced along x.
    const xs = [...svg.matchAll(/<circle cx="([\d.]+)"[^>]*><title>none \[--max-batch 1\], concurrency (\d+): /g)].slice(0, 3).map((m) => [Number(m[2]), Number(m[1])]);
    assert.deepEqual(xs.map(([c]) => c), [1, 4, 16]);
    close(xs[1]![1]! - xs[0]![1]!, xs[2]![1]! - xs[1]![1]!, 0.02);
    assert.throws(() => sweepChartSvg(sweepReport([point('none', [], null, 1, 1)])), RangeError);
    assert.throws(() => lineChartSvg({ title: 't', series: ['a'], xLabel: 'x', logX: true, panels: [{ title: 'p', yLabel: 'y', points: [[{ x: 0, y: 1 }]] }] }), /x > 0/);
  });

  test('a null value breaks a line into two', () => {
    const svg = lineChartSvg({ title: 't', series: ['a'], xLabel: 'x', panels: [{ title: 'p', yLabel: 'y', points: [[{ x: 1, y: 1 }, { x: 2, y: 2 }, { x: 3, y: null }, { x: 4, y: 3 }, { x: 5, y: 1 }]] }] });
    assertWellFormed(svg);
    const d = /<path d="([^"]*)"/.exec(svg)![1]!;
    assert.equal(d.match(/M/g)!.length, 2, d);
    assert.equal(d.match(/L/g)!.length, 2, d);
    assert.equal((svg.match(/<circle [^>]*><title>/g) ?? []).length, 4);
  });
});

describe('charts', () => {
  test('bar labels stay short', () => {
    assert.deepEqual([0.254, 7.318, 45.12, 236.9, 6903.4, 24956].map(shortNumber), ['0.25', '7.32', '45.1', '237', '6.9k', '25k']);
  });

  test('bench offline --speedup-chart: one bar per policy and data set, none as the reference line', () => {
    const row = (dataset: 'gsm8k' | 'alpaca', policy: string, speedup: number) => ({ dataset, policy, speedup_vs_none: speedup }) as OfflineResult;
    const svg = speedupChartSvg([row('gsm8k', 'none', 1), row('gsm8k', 'fixed:4', 1.9), row('alpaca', 'none', 1), row('alpaca', 'fixed:4', 1.7), row('alpaca', 'specdec++', 1.8)], 'speedups');
    assertWellFormed(svg);
    for (const s of ['>gsm8k<', '>alpaca<', '>fixed:4<', '>specdec++<', '>1.90<', '>1.80<', 'stroke-dasharray']) assert.ok(svg.includes(s), s);
    assert.ok(!svg.includes('>none<'), 'none is the reference, not a bar');
    assert.equal((svg.match(/<rect [^>]*fill="#/g) ?? []).length, 2 + 3, 'two legend swatches and three bars');
  });
});

describe('specd bench serve end to end', () => {
  test('--spawn --compare none,fixed:4: JSON, Markdown and SVG', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bench-serve-'));
    const files = { json: join(dir, 'r.json'), md: join(dir, 'r.md'), svg: join(dir, 'r.svg') };
    const r = await specd(['bench', 'serve', '--spawn', '--server-args', SERVER_ARGS, '--dataset', 'gsm8k', '--num-prompts', '3', '--max-tokens', '16', '--concurrency', '2',
      '--compare', 'none,fixed:4', '--json', files.json, '--markdown', files.md, '--chart', files.svg]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Output speedup vs none/);
    const report = JSON.parse(readFileSync(files.json, 'utf8')) as ServeReport;
    assert.equal(report.schema, 'specd-bench-serve/2');
    assert.equal(report.baseline, 'none');
    assert.equal(report.settings.num_prompts, 3);
    assert.ok(report.machine.cores >= 1 && report.machine.node.startsWith('v'));
    assert.deepEqual(report.configs.map((c) => c.label), ['none', 'fixed:4']);
    for (const c of report.configs) {
      assert.equal(c.completed, 3, c.errors.join('; '));
      assert.equal(c.failed, 0);
      assert.equal(c.requests.length, 3);
      assert.equal(c.runs.length, 1);
      assert.ok(c.total_output_tokens > 0 && c.total_output_tokens <= 3 * 16);
      assert.ok(c.total_input_tokens > 0);
      assert.ok(c.duration_s > 0 && c.duration_s < 60);
      close(c.output_throughput, c.total_output_tokens / c.duration_s, 1e-6);
      assert.ok(c.ttft_ms!.median > 0 && c.ttft_ms!.median <= c.e2e_ms!.median);
      assert.ok(c.ttft_ms!.p90 <= c.ttft_ms!.p99);
      assert.ok(c.tpot_ms!.mean > 0 && c.itl_ms!.mean > 0);
      assert.ok(c.speculation);
      assert.equal(c.speculation.generation_tokens, c.total_output_tokens, 'the server generated what the client counted');
    }
    const [none, fixed] = report.configs;
    assert.equal(none!.speedup, 1);
    close(fixed!.speedup!, fixed!.output_throughput / none!.output_throughput, 1e-9);
    assert.equal(none!.speculation!.draft_tokens, 0);
    assert.ok(fixed!.speculation!.drafts > 0);
    assert.ok(fixed!.speculation!.draft_tokens <= 4 * fixed!.speculation!.drafts);
    assert.ok(fixed!.speculation!.acceptance_rate! > 0 && fixed!.speculation!.acceptance_rate! <= 1);
    assert.deepEqual(fixed!.server_args, ['--workers', '1', '--no-head', '--policy', 'fixed', '--k', '4']);

    const svg = readFileSync(files.svg, 'utf8');
    assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    assert.match(svg, /<\/svg>\n$/);
    assertWellFormed(svg);
    for (const s of ['time to first token', 'time per output token', 'inter-chunk latency', 'end-to-end latency', 'output throughput', '>none<', '>fixed:4<']) assert.ok(svg.includes(s), s);

    const md = readFileSync(files.md, 'utf8');
    assert.match(md, /\| metric \| `none` \| `fixed:4` \|/);
    assert.match(md, /AMD|Intel|cores/);
    assert.match(md, /!\[.*\]\(r\.svg\)/);
  });

  test('--url: the policy goes with each request', async () => {
    const server = await startServer(['--workers', '1', '--no-head', '--policy', 'fixed', '--k', '4']);
    try {
      const dir = mkdtempSync(join(tmpdir(), 'bench-serve-'));
      const json = join(dir, 'r.json');
      const r = await specd(['bench', 'serve', '--url', server.url, '--dataset', 'random', '--random-input-len', '30', '--num-prompts', '2', '--max-tokens', '8',
        '--request-rate', '20', '--seed', '5', '--compare', 'none,fixed:2', '--repeats', '2', '--json', json]);
      assert.equal(r.code, 0, r.stderr);
      const report = JSON.parse(readFileSync(json, 'utf8')) as ServeReport;
      const [none, fixed] = report.configs;
      assert.deepEqual(fixed!.speculative, { policy: 'fixed', k: 2 });
      assert.equal(report.settings.repeats, 2);
      assert.equal(none!.completed, 4, 'two passes over two prompts');
      assert.equal(fixed!.runs.length, 2);
      for (const [i, run] of fixed!.runs.entries()) close(run.speedup!, run.output_throughput / none!.runs[i]!.output_throughput);
      close(fixed!.duration_s, fixed!.runs[0]!.duration_s + fixed!.runs[1]!.duration_s);
      assert.match(r.stdout, /Speedup per pass \(min-max\)/);
      assert.equal(none!.speculation!.draft_tokens, 0, 'none drafts nothing although the server default is fixed:4');
      assert.ok(fixed!.speculation!.draft_tokens <= 2 * fixed!.speculation!.drafts, 'at most 2 candidates a round');
      assert.equal(fixed!.total_input_tokens, 2 * 2 * 30, 'byte-level tokens: one per character');
      for (const c of report.configs) assert.equal(c.total_output_tokens, 2 * 2 * 8, 'ignore_eos: every output is max_tokens long');
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });

  test('--spawn sweep: two server variants x two policies at concurrency 1 and 2, every point measured on its own', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bench-serve-'));
    const files = { json: join(dir, 'r.json'), md: join(dir, 'r.md'), svg: join(dir, 'r.svg') };
    const v1 = [...SERVER_ARGS.split(' '), '--threads', '1'];
    const v2 = SERVER_ARGS.split(' ');
    const r = await specd(['bench', 'serve', '--spawn', '--server-args', v1.join(' '), '--server-args', v2.join(' '), '--dataset', 'gsm8k', '--num-prompts', '2', '--max-tokens', '8',
      '--concurrency', '1,2', '--compare', 'none,fixed:4', '--json', files.json, '--markdown', files.md, '--chart', files.svg]);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(readFileSync(files.json, 'utf8')) as ServeReport;
    assert.equal(report.schema, 'specd-bench-serve/2');
    assert.deepEqual(report.settings.concurrency, [1, 2]);
    assert.deepEqual(report.settings.server_args, [v1, v2]);
    const labels = ['none [--workers 1 --no-head --threads 1]', 'fixed:4 [--workers 1 --no-head --threads 1]', 'none [--workers 1 --no-head]', 'fixed:4 [--workers 1 --no-head]'];
    assert.deepEqual(report.configs.map((c) => c.label), [...labels, ...labels]);
    assert.deepEqual(report.configs.map((c) => c.concurrency), [1, 1, 1, 1, 2, 2, 2, 2]);
    const prompts = report.configs[0]!.requests.map((q) => [q.id, q.prompt_tokens]);
    for (const [i, c] of report.configs.entries()) {
      const variant = i % 4 < 2 ? v1 : v2;
      assert.deepEqual(c.variant, variant);
      assert.equal(c.policy, i % 2 ? 'fixed:4' : 'none');
      assert.deepEqual(c.server_args, [...variant, '--policy', ...(i % 2 ? ['fixed', '--k', '4'] : ['none'])]);
      assert.equal(c.completed, 2, c.errors.join('; '));
      assert.equal(c.runs.length, 1);
      assert.equal(c.speculation!.generation_tokens, c.total_output_tokens, "each point's own scrapes");
      assert.deepEqual(c.requests.map((q) => [q.id, q.prompt_tokens]), prompts, 'the same prompts at every point');
      // One worker: at concurrency 1 the requests run one after another, at 2 the second waits for the first.
      const e2eSum = c.requests.reduce((a, q) => a + q.e2e_ms, 0);
      if (c.concurrency === 1) assert.ok(e2eSum <= c.duration_s * 1000 + 1, `${c.label} at 1: ${e2eSum} ms of requests in ${c.duration_s} s`);
      else assert.ok(e2eSum > c.duration_s * 1000, `${c.label} at 2: ${e2eSum} ms of requests in ${c.duration_s} s`);
      const group = report.configs.filter((o) => o.concurrency === c.concurrency && JSON.stringify(o.variant) === JSON.stringify(c.variant));
      close(c.speedup!, c.output_throughput / group.find((o) => o.policy === 'none')!.output_throughput);
      if (i % 4 < 2) assert.equal(c.vs_first_variant, null);
      else {
        const ref = report.configs[i - 2]!;
        close(c.vs_first_variant!.output_throughput!, c.output_throughput / ref.output_throughput);
        close(c.vs_first_variant!.ttft_median!, c.ttft_ms!.median / ref.ttft_ms!.median);
      }
    }
    assert.match(r.stdout, /^concurrency +configuration +req\/s +output tok\/s +speedup vs none +TTFT median \(ms\)/);
    assert.match(r.stdout, /\nAgainst the first server variant \[--workers 1 --no-head --threads 1\] \(same policy and concurrency\):\n/);
    assert.match(r.stdout, /\n2 +fixed:4 +--workers 1 --no-head +\d+\.\d\dx +\d+\.\d\dx\n$/);
    // One server at a time (one pass each): a configuration runs both levels before the next starts.
    const progress = r.stderr.split('\n').filter((l) => /^\[\d\/8\]/.test(l));
    assert.deepEqual(progress.map((l) => /^\[(\d)\/8\] (.*), concurrency (\d): 2\/2 requests succeeded in [\d.]+ s$/.exec(l)!.slice(1).join(' | ')), [
      `1 | ${labels[0]} | 1`, `2 | ${labels[0]} | 2`, `3 | ${labels[1]} | 1`, `4 | ${labels[1]} | 2`, `5 | ${labels[2]} | 1`, `6 | ${labels[2]} | 2`, `7 | ${labels[3]} | 1`, `8 | ${labels[3]} | 2`,
    ]);
    assert.equal(r.stderr.match(/^starting specd serve /gm)!.length, 4);

    const svg = readFileSync(files.svg, 'utf8');
    assertWellFormed(svg);
    for (const s of ['concurrency (log scale)', 'output throughput', 'time to first token (median)', 'time per output token (median)', ...labels.map((l) => `>${l}<`)]) assert.ok(svg.includes(s), s);
    const md = readFileSync(files.md, 'utf8');
    assert.match(md, /## Concurrency 1\n/);
    assert.match(md, /## Concurrency 2\n/);
    assert.match(md, /## Against the first server variant `--workers 1 --no-head --threads 1`/);
  });

  test('--url sweep with --repeats 2: passes interleave round by round, level by level, policy by policy', async () => {
    const server = await startServer(['--workers', '1', '--no-head']);
    try {
      const dir = mkdtempSync(join(tmpdir(), 'bench-serve-'));
      const json = join(dir, 'r.json');
      const r = await specd(['bench', 'serve', '--url', server.url, '--dataset', 'random', '--random-input-len', '20', '--num-prompts', '2', '--max-tokens', '4',
        '--concurrency', '2,1', '--compare', 'none,fixed:2', '--repeats', '2', '--json', json]);
      assert.equal(r.code, 0, r.stderr);
      const report = JSON.parse(readFileSync(json, 'utf8')) as ServeReport;
      assert.deepEqual(report.settings.server_args, []);
      assert.deepEqual(report.configs.map((c) => [c.label, c.concurrency]), [['none', 2], ['fixed:2', 2], ['none', 1], ['fixed:2', 1]]);
      for (const c of report.configs) {
        assert.equal(c.variant, null);
        assert.equal(c.vs_first_variant, null);
        assert.equal(c.completed, 4, 'two passes over two prompts');
        assert.equal(c.runs.length, 2);
        assert.equal(c.total_output_tokens, 2 * 2 * 4);
      }
      assert.deepEqual(report.configs[3]!.speculative, { policy: 'fixed', k: 2 });
      assert.ok(report.configs[3]!.speculation!.draft_tokens > 0);
      assert.equal(report.configs[2]!.speculation!.draft_tokens, 0);
      const order = r.stderr.split('\n').filter((l) => /^\[\d\/8\]/.test(l)).map((l) => /^\[\d\/8\] (.*): /.exec(l)![1]);
      assert.deepEqual(order, [
        'none, concurrency 2, pass 1/2', 'fixed:2, concurrency 2, pass 1/2', 'none, concurrency 1, pass 1/2', 'fixed:2, concurrency 1, pass 1/2',
        'none, concurrency 2, pass 2/2', 'fixed:2, concurrency 2, pass 2/2', 'none, concurrency 1, pass 2/2', 'fixed:2, concurrency 1, pass 2/2',
      ]);
      assert.doesNotMatch(r.stdout, /Against the first server variant/);
      assert.match(r.stdout, /\n1 +fixed:2 +[\d.]+ +[\d.]+ +[\d.]+x /);
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });

  test('bad sweep flags: one line naming the problem, non-zero exit', async () => {
    for (const [args, message] of [
      [['--spawn', '--concurrency', '0,4'], /--concurrency.*"0" is not a whole number in \[1, 1000000\]/],
      [['--spawn', '--concurrency', '4,16,4'], /--concurrency.*4 is listed twice/],
      [['--url', 'http://127.0.0.1:1', '--server-args', '--threads 1'], /--server-args needs --spawn/],
      [['--spawn', '--server-args', '--threads 1', '--server-args', ' --threads  1 '], /the server variant "--threads 1" is given twice/],
      [['--spawn', '--server-args', '"open'], /--server-args.*unterminated "/],
      [['--spawn', '--server-args', '--no-such-flag', '--server-args', '', '--num-prompts', '1'], /specd serve --no-such-flag.*exited/],
    ] as const) {
      const r = await specd(['bench', 'serve', ...args]);
      assert.notEqual(r.code, 0, args.join(' '));
      const lines = r.stderr.trim().split('\n').filter((l) => !l.startsWith('(run with --help') && !l.startsWith('starting specd serve'));
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0]!, /error/);
      assert.match(lines[0]!, message);
    }
  });

  test('bad flags: one line on stderr, non-zero exit', async () => {
    for (const args of [
      ['--url', 'http://127.0.0.1:1', '--spawn'],
      ['--spawn', '--dataset', 'nope'],
      ['--spawn', '--compare', 'fixed:0'],
      [],
    ]) {
      const r = await specd(['bench', 'serve', ...args]);
      assert.notEqual(r.code, 0, args.join(' '));
      const lines = r.stderr.trim().split('\n').filter((l) => !l.startsWith('(run with --help'));
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0]!, /error/);
    }
    const down = await specd(['bench', 'serve', '--url', 'http://127.0.0.1:1', '--num-prompts', '1']);
    assert.notEqual(down.code, 0);
    assert.match(down.stderr.trim(), /^specd: error: cannot reach http:\/\/127\.0\.0\.1:1/);
  });
});
