/**
 * ServerMetrics fed synthetic worker messages: the acceptance head's live calibration counts
 * each drafted candidate the target actually judged (the accepted ones and the first rejection),
 * never the candidates after the first rejection; the speculation counters per proposal method
 * (draft, ngram, suffix) count each round under the method that proposed it and sum to the totals.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { RoundStats } from '../../src/engine/stats.js';
import type { GenerationHandle } from '../../src/server/engine-pool.js';
import { EventLoopMonitor } from '../../src/server/event-loop.js';
import { preferredBuckets } from '../../src/server/buckets.js';
import { ITL_BUCKETS, LATENCY_BUCKETS, ServerMetrics } from '../../src/server/metrics.js';

const handle = { request: { policy: { policy: 'specdec++' }, promptIds: [1, 2, 3] }, submittedAt: performance.now(), arrivedAt: performance.now() } as unknown as GenerationHandle;

const round = (acceptProbs: number[], accepted: number): RoundStats => ({ drafted: acceptProbs.length, accepted, emitted: accepted + 1, draftMs: 1, targetMs: 1, acceptProbs });

/** `name{labels}` -> value of every sample in the registry. */
async function samples(metrics: ServerMetrics): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const m of await metrics.registry.getMetricsAsJSON()) {
    for (const v of m.values) {
      // Every specd series carries the served model's name; the keys leave it out.
      assert.equal(v.labels.model_name, 'test-model', m.name);
      const labels = Object.entries(v.labels)
        .filter(([k]) => k !== 'model_name')
        .map(([k, l]) => `${k}="${l}"`)
        .join(',');
      out.set(m.name + (labels ? `{${labels}}` : ''), v.value);
    }
  }
  return out;
}

describe('head calibration metrics', () => {
  test('candidates after the first rejection have no outcome and are not counted', async () => {
    const eventLoop = new EventLoopMonitor();
    const metrics = new ServerMetrics('test-model', () => ({ running: 0, waiting: 0, kvCacheUsage: 0, loadedWorkers: 1, options: { workers: 1 } }), eventLoop);
    try {
      metrics.submitted(handle);
      metrics.event(handle, { type: 'start', threadId: 1 });
      metrics.event(handle, {
        type: 'tokens',
        text: 'abcdef',
        tokenIds: [1, 2, 3, 4, 5, 6],
        textOffsets: [0, 1, 2, 3, 4, 5],
        rounds: [
          round([0.95, 0.85, 0.35, 0.25], 1), // accepted, first rejection, then two never judged
          round([0.55, 0.65], 2), // both accepted
        ],
      });
      metrics.event(handle, { type: 'tokens', text: 'g', tokenIds: [7], textOffsets: [6], rounds: [round([0.05, 0.92], 0)] }); // rejected at once
      const s = await samples(metrics);
      const at = (name: string, bucket: string) => s.get(`specd_head_calibration_${name}{bucket="${bucket}"}`) ?? 0;
      assert.deepEqual(
        ['0.0', '0.2', '0.3', '0.5', '0.6', '0.8', '0.9'].map((b) => [b, at('predictions_total', b), at('accepted_total', b)]),
        [['0.0', 1, 0], ['0.2', 0, 0], ['0.3', 0, 0], ['0.5', 1, 1], ['0.6', 1, 1], ['0.8', 1, 0], ['0.9', 1, 1]],
      );
      const predictions = [...s].filter(([k]) => k.startsWith('specd_head_calibration_predictions_total')).reduce((a, [, v]) => a + v, 0);
      assert.equal(predictions, 5, 'judged candidates: 2 + 2 + 1 of 8 drafted');
      assert.ok(Math.abs(at('predicted_probability_total', '0.8') - 0.85) < 1e-12);
      const brier = 0.05 ** 2 + 0.85 ** 2 + 0.45 ** 2 + 0.35 ** 2 + 0.05 ** 2;
      assert.ok(Math.abs(s.get('specd_head_calibration_squared_error_total')! - brier) < 1e-12, String(s.get('specd_head_calibration_squared_error_total')));
      assert.equal(s.get('specd_spec_decode_num_draft_tokens_total'), 8, 'the drafting counters still count every candidate');
    } finally {
      eventLoop.stop();
    }
  });
});

describe('speculation counters per method', () => {
  test('each round counts under its method; the totals are their sums; every method starts at 0', async () => {
    const eventLoop = new EventLoopMonitor();
    const metrics = new ServerMetrics('test-model', () => ({ running: 0, waiting: 0, kvCacheUsage: 0, loadedWorkers: 1, options: { workers: 1 } }), eventLoop);
    try {
      const at = (method: RoundStats['method'] | undefined, drafted: number, accepted: number): RoundStats => ({ drafted, accepted, emitted: accepted + 1, draftMs: 0, targetMs: 1, ...(method ? { method } : {}) });
      const s0 = await samples(metrics);
      for (const method of ['draft', 'ngram', 'suffix']) assert.equal(s0.get(`specd_spec_decode_method_num_drafts_total{method="${method}"}`), 0, method);
      metrics.submitted(handle);
      metrics.event(handle, { type: 'start', threadId: 1 });
      metrics.event(handle, {
        type: 'tokens',
        text: 'abcdefghijkl',
        tokenIds: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
        textOffsets: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
        rounds: [at('draft', 4, 2), at('suffix', 9, 6), at('suffix', 3, 0), at(undefined, 0, 0), at('ngram', 2, 1)],
      });
      const s = await samples(metrics);
      const m = (name: string, labels: string) => s.get(`specd_spec_decode_method_${name}{${labels}}`) ?? 0;
      assert.deepEqual(['draft', 'ngram', 'suffix'].map((method) => [m('num_drafts_total', `method="${method}"`), m('num_draft_tokens_total', `method="${method}"`), m('num_accepted_tokens_total', `method="${method}"`)]), [
        [1, 4, 2],
        [1, 2, 1],
        [2, 12, 6],
      ]);
      assert.deepEqual([0, 1, 2, 3, 4, 5, 6].map((i) => m('num_accepted_tokens_per_pos_total', `method="suffix",position="${i}"`)), [1, 1, 1, 1, 1, 1, 0]);
      assert.equal(m('num_accepted_tokens_per_pos_total', 'method="draft",position="1"'), 1);
      assert.equal(s.get('specd_spec_decode_num_drafts_total'), 4);
      assert.equal(s.get('specd_spec_decode_num_draft_tokens_total'), 18);
      assert.equal(s.get('specd_spec_decode_num_accepted_tokens_total'), 9);
    } finally {
      eventLoop.stop();
    }
  });
});

describe('latency buckets', () => {
  test('R10 bounds from 1 ms to 80 s, each at most 1.28x the last', () => {
    assert.deepEqual(preferredBuckets(0.001, 0.01), [0.001, 0.00125, 0.0016, 0.002, 0.0025, 0.00315, 0.004, 0.005, 0.0063, 0.008, 0.01]);
    for (const [buckets, lo, hi] of [[LATENCY_BUCKETS, 0.001, 80], [ITL_BUCKETS, 0.0001, 10]] as const) {
      assert.equal(buckets[0], lo);
      assert.equal(buckets.at(-1), hi);
      for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i]! / buckets[i - 1]! <= 1.28 && buckets[i]! > buckets[i - 1]!, `${buckets[i - 1]} -> ${buckets[i]}`);
    }
    assert.throws(() => preferredBuckets(0, 1), RangeError);
    assert.throws(() => preferredBuckets(2, 1), RangeError);
  });
});
