/**
 * The offline benchmark's SpecDec++ comparison: discard and verification rates, the per-data-set
 * summary against the best fixed K, the Pareto chart, and `specd bench offline` with a head on
 * a fixture pair (several data sets, specdec++ entries, JSON and SVG output); also the
 * head-training throughput benchmark.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { benchHeadTraining } from '../../src/bench/head-train-bench.js';
import type { OfflineResult } from '../../src/bench/offline.js';
import { paretoChartSvg } from '../../src/bench/pareto-chart.js';
import { summarize } from '../../src/bench/policy-summary.js';
import { loadPrompts } from '../../src/bench/datasets.js';
import { CANDIDATE_FEATURES } from '../../src/engine/candidate-features.js';
import { writeFixturePair } from '../../src/testing/decoder-fixture.js';
import { ALONE_H_MAX, ALONE_H_MIN } from '../../src/engine/cost-model.js';
import { PACKAGE_ROOT } from '../../src/paths.js';
import { writeTestHead } from '../support/heads.js';

const root = mkdtempSync(join(tmpdir(), 'specd-heads-bench-'));
after(() => rmSync(root, { recursive: true, force: true }));

function result(policy: string, dataset: 'gsm8k' | 'alpaca', tps: number, discard: number, verify: number): OfflineResult {
  return {
    policy,
    grammar: 'off',
    dataset,
    prompts: 1,
    new_tokens: 100,
    wall_s: 1,
    tokens_per_s: tps,
    speedup_vs_none: null,
    rounds: 10,
    draft_tokens: policy === 'none' ? 0 : 30,
    accepted_tokens: 20,
    mean_accepted_per_round: 2,
    tokens_per_target_call: 3,
    acceptance_rate: 0.6,
    discard_rate: discard,
    verification_rate: verify,
    draft_ms_per_step: 0.3,
    target_ms_per_call: 4,
    mean_threshold: null,
    overhead_fraction: 0.1,
    matches_none: null,
    mask_ms_per_token: null,
    mask_share: null,
  };
}

describe('benchmark comparison', () => {
  const results = [
    result('none', 'gsm8k', 100, 0, 1),
    result('fixed:2', 'gsm8k', 150, 0.3, 0.45),
    result('fixed:4', 'gsm8k', 170, 0.45, 0.35),
    result('specdec++:0.5', 'gsm8k', 180, 0.35, 0.36),
    result('specdec++:0.7', 'gsm8k', 175, 0.4, 0.33),
    result('confidence:0.6', 'gsm8k', 160, 0.3, 0.4),
    result('fixed:3', 'alpaca', 120, 0.5, 0.5),
    result('specdec++:0.5', 'alpaca', 110, 0.45, 0.5),
  ];

  test('summary: best fixed K per data set and specdec++ against it', () => {
    const [gsm8k, alpaca] = summarize(results, 'specdec++:0.5');
    assert.equal(gsm8k!.best_fixed!.policy, 'fixed:4');
    assert.ok(Math.abs(gsm8k!.specdec_default!.vs_best_fixed - 180 / 170) < 1e-12);
    assert.equal(gsm8k!.best_specdec!.policy, 'specdec++:0.5');
    assert.equal(gsm8k!.best_confidence!.policy, 'confidence:0.6');
    assert.equal(alpaca!.best_fixed!.policy, 'fixed:3');
    assert.ok(alpaca!.specdec_default!.vs_best_fixed < 1);
  });

  test('the Pareto chart: one panel per data set, a curve per policy family', () => {
    const svg = paretoChartSvg(results, 'test chart');
    assert.match(svg, /^<svg /);
    assert.match(svg, /<\/svg>\n$/);
    for (const text of ['gsm8k', 'alpaca', 'K=4', 'h=0.7', 'verification rate', 'discard rate', 'test chart']) assert.ok(svg.includes(text), text);
    assert.equal((svg.match(/<path d="M[^"]*" fill="none"/g) ?? []).length, 2, 'lines through fixed K and specdec++ on gsm8k (alpaca has one point each)');
  });
});

describe('specd bench offline with a head (fixture pair)', () => {
  test('several data sets, specdec++ entries, discard and verification rates, JSON and SVG', () => {
    const p = writeFixturePair(join(root, 'pair'), { style: 'gpt2', target: { maxPositions: 1024 }, draft: { maxPositions: 1024 } });
    const head = writeTestHead(join(root, 'pair'), p.draftDir, p.draft.hidden, { threshold: 0.6 });
    const cli = join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js');
    const json = join(root, 'bench.json');
    const chart = join(root, 'bench.svg');
    const args = ['bench', 'offline', '--target', p.targetDir, '--draft', p.draftDir, '--head', head, '--dataset', 'gsm8k,alpaca', '--prompts', '2', '--max-tokens', '12'];
    const out = execFileSync(
      process.execPath,
      [cli, ...args, '--policies', 'none,fixed:1,fixed:3,specdec++,specdec++:0.3', '--threads', '1', '--json', json, '--chart', chart],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
    );
    assert.match(out, /discard/);
    assert.match(out, /best fixed/);
    const report = JSON.parse(readFileSync(json, 'utf8')) as { settings: { specdec_default_threshold: number; datasets: string[] }; results: OfflineResult[]; summary: unknown[] };
    assert.equal(report.settings.specdec_default_threshold, 0.6, "the head's recommended threshold");
    assert.deepEqual(report.settings.datasets, ['gsm8k', 'alpaca']);
    assert.deepEqual([...new Set(report.results.map((r) => r.policy))], ['none', 'fixed:1', 'fixed:3', 'specdec++:0.6', 'specdec++:0.3']);
    assert.equal(report.summary.length, 2);
    for (const r of report.results) {
      assert.equal(r.matches_none, true, `${r.policy} on ${r.dataset}: greedy output equals none's`);
      assert.ok(Math.abs(r.verification_rate - r.rounds / r.new_tokens) < 1e-12);
      if (r.draft_tokens) assert.ok(Math.abs(r.discard_rate - (r.draft_tokens - r.accepted_tokens) / r.draft_tokens) < 1e-12);
    }
    assert.equal(report.results.find((r) => r.policy === 'none')!.verification_rate, 1);
    for (const r of report.results) {
      const h = r.policy.startsWith('specdec++:') ? Number(r.policy.split(':')[1]) : null;
      if (h === null) assert.equal(r.mean_threshold, null, `${r.policy} runs no threshold`);
      else assert.ok(Math.abs(r.mean_threshold! - h) < 1e-9, `${r.policy}: its rounds ran with h ${h}, got ${r.mean_threshold}`);
    }
    assert.match(readFileSync(chart, 'utf8'), /SpecDec\+\+/);
  });

  test('--threshold auto: bare specdec++ runs with the draft controller\'s h, reported per entry; a bad value is one line and exit 1', () => {
    const p = writeFixturePair(join(root, 'auto'), { style: 'gpt2', target: { maxPositions: 1024 }, draft: { maxPositions: 1024 } });
    const head = writeTestHead(join(root, 'auto'), p.draftDir, p.draft.hidden, { threshold: 0.6 });
    const cli = join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js');
    const json = join(root, 'auto.json');
    const base = [cli, 'bench', 'offline', '--target', p.targetDir, '--draft', p.draftDir, '--head', head, '--dataset', 'gsm8k', '--prompts', '2', '--max-tokens', '40', '--threads', '1'];
    const out = execFileSync(process.execPath, [...base, '--policies', 'none,specdec++,specdec++:0.3', '--threshold', 'auto', '--json', json], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    assert.match(out, /mean h/);
    const report = JSON.parse(readFileSync(json, 'utf8')) as { settings: { specdec_default_threshold: unknown }; results: OfflineResult[] };
    assert.equal(report.settings.specdec_default_threshold, 'auto');
    assert.deepEqual(report.results.map((r) => r.policy), ['none', 'specdec++', 'specdec++:0.3']);
    const [none, auto, fixed] = report.results;
    assert.equal(none!.mean_threshold, null);
    assert.ok(Math.abs(fixed!.mean_threshold! - 0.3) < 1e-9, `specdec++:0.3 ran with ${fixed!.mean_threshold}`);
    assert.ok(auto!.mean_threshold !== null && auto!.mean_threshold >= ALONE_H_MIN && auto!.mean_threshold <= ALONE_H_MAX, `auto h ${auto!.mean_threshold} within the controller's bounds`);
    assert.equal(auto!.matches_none, true, 'greedy output equals none\'s with the chosen h');
    const bad = spawnSync(process.execPath, [...base, '--policies', 'specdec++', '--threshold', 'sometimes'], { encoding: 'utf8' });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /--threshold.*expected auto or a number in \[0, 1\]/);
  });

  test('prompts too long for the context are passed over; none fitting is one line and exit 1', () => {
    const first = loadPrompts('humaneval', 4);
    const passed = loadPrompts('humaneval', 4, { fits: (q) => q.id !== first[1]!.id });
    assert.deepEqual(
      passed.map((q) => q.id),
      [first[0]!.id, first[2]!.id, first[3]!.id, loadPrompts('humaneval', 5)[4]!.id],
    );
    assert.equal(passed.skipped, 1);
    const p = writeFixturePair(join(root, 'short'), { style: 'gpt2', target: { maxPositions: 256 }, draft: { maxPositions: 256 } });
    const cli = join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js');
    const run = spawnSync(process.execPath, [cli, 'bench', 'offline', '--target', p.targetDir, '--draft', p.draftDir, '--dataset', 'humaneval', '--prompts', '2', '--max-tokens', '200', '--policies', 'none', '--threads', '1'], {
      encoding: 'utf8',
    });
    assert.equal(run.status, 1);
    assert.match(run.stderr, /passed over \d+ prompt\(s\) longer than 56 tokens/);
    assert.match(run.stderr, /no humaneval prompt fits the context with --max-tokens 200/);
  });
});

describe('head training throughput', () => {
  test('rows per second of full training steps, width 32', async () => {
    const r = await benchHeadTraining(32, { batchSize: 64, steps: 3, threads: 1 });
    assert.equal(r.parameters, 32 * 32 + 2 * 32 + 1 + CANDIDATE_FEATURES);
    assert.ok(r.rows_per_s > 0 && r.step_ms > 0 && r.js_forward_rows_per_s > 0);
  });
});
