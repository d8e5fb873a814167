/**
 * The offline benchmark's per-set summary line: the comparison with the best fixed K, and no
 * comparison where no fixed K ran.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatSummary, summarize } from '../../src/bench/policy-summary.js';
import type { OfflineResult } from '../../src/bench/offline.js';

const row = (policy: string, tokens_per_s: number) => ({ dataset: 'gsm8k', policy, tokens_per_s }) as unknown as OfflineResult;

test('specdec++ against the best fixed K, in percent', () => {
  const line = formatSummary(summarize([row('none', 100), row('fixed:2', 150), row('fixed:4', 200), row('specdec++:0.5', 230)], 'specdec++:0.5'));
  assert.equal(line, 'gsm8k: best fixed fixed:4 200.0 tok/s; default specdec++ specdec++:0.5 230.0 tok/s (+15.0%); best specdec++ specdec++:0.5 230.0 tok/s (+15.0%)\n');
});

test('without a fixed K the line gives no percentage (never NaN)', () => {
  const line = formatSummary(summarize([row('none', 100), row('suffix', 120), row('specdec++:0.5', 150)], 'specdec++:0.5'));
  assert.equal(line, 'gsm8k: best fixed -; default specdec++ specdec++:0.5 150.0 tok/s; best specdec++ specdec++:0.5 150.0 tok/s\n');
});
