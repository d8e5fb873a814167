/**
 * The auto threshold of specdec++ (cost-model.ts): the anchor until enough is measured, the
 * anchor at batch 1, less drafting as a memory-bound batch grows, no drafting where a batch is
 * compute-bound and candidates are often rejected; and the engine runs each round with what it
 * decides, exactly.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { MIN_OBSERVATIONS, PassCostModel } from '../src/engine/cost-model.js';
import { ModelPair } from '../src/engine/pair.js';
import { BatchScheduler } from '../src/engine/scheduler.js';
import type { RoundStats } from '../src/engine/stats.js';
import { loadPrompts } from '../src/bench/datasets.js';

/** Feed a model passes whose cost follows verify(n, B) and draft(B), at the batch sizes given, and rounds of (drafted, accepted). */
function feed(model: PassCostModel, verify: (n: number) => number, draft: (b: number) => number, batches: number[], round: [number, number], count = 400): void {
  for (let i = 0; i < count; i++) {
    const b = batches[i % batches.length]!;
    const perSeq = 1 + round[0] + (i % 3); // some spread in tokens per sequence
    model.observeVerify(b, b * perSeq, verify(b * perSeq));
    model.observeDraft(b, draft(b));
    model.observeDraft(Math.max(1, b >> 1), draft(Math.max(1, b >> 1)));
    model.observeRound(...round);
  }
}

describe('auto threshold', () => {
  test('holds the anchor until enough passes are measured', () => {
    const model = new PassCostModel();
    feed(model, (n) => 2.5 + 0.05 * n, (b) => 0.3 + 0.02 * b, [1, 4, 16], [3, 2], MIN_OBSERVATIONS - 1);
    assert.deepEqual(model.threshold(0.7, 16), { threshold: 0.7, draft: true });
  });

  test('a pass with a large fixed cost: the anchor at batch 1, then less drafting as the batch grows', () => {
    const model = new PassCostModel();
    feed(model, (n) => 2.5 + 0.05 * n, (b) => 0.3 + 0.02 * b, [1, 2, 4, 8, 16, 32], [3, 2]);
    const snap = model.snapshot();
    assert.ok(Math.abs(snap.verifyMsPerToken - 0.05) < 1e-3 && Math.abs(snap.verifyMsPerPass - 2.5) < 1e-3, JSON.stringify(snap));
    assert.ok(Math.abs(model.threshold(0.7, 1).threshold - 0.7) < 1e-9);
    const hs = [1, 2, 4, 8, 16, 32, 64].map((b) => model.threshold(0.7, b));
    for (let i = 1; i < hs.length; i++) assert.ok(hs[i]!.threshold <= hs[i - 1]!.threshold + 1e-12, `h falls with the batch: ${hs.map((h) => h.threshold.toFixed(3)).join(' ')}`);
    assert.ok(hs.at(-1)!.threshold < 0.65, 'h falls well below the anchor at large batches');
    assert.ok(hs.slice(0, 5).every((h) => h.draft), 'drafting pays up to 16 sequences');
    assert.equal(hs.at(-1)!.draft, false, 'at 64 a draft step over the batch costs more than its candidates bring');
  });

  test('a compute-bound batch with half the candidates rejected does not draft; alone it always does', () => {
    const model = new PassCostModel();
    // Each token costs 0.5 ms whatever the batch (compute-bound), a pass has a fixed 1 ms.
    feed(model, (n) => 1 + 0.5 * n, (b) => 0.2 + 0.01 * b, [1, 8, 32], [3, 1]);
    assert.equal(model.threshold(0.7, 32).draft, false);
    assert.equal(model.threshold(0.7, 1).draft, true);
  });
});

describe('the engine runs each round with the auto threshold', () => {
  let pair: ModelPair;
  before(async () => {
    pair = await ModelPair.load({ threads: 2 });
  });
  after(async () => {
    await pair?.release();
  });

  test('specdec++ without a threshold takes h and whether to draft from the cost model, per batch size; greedy output unchanged', async () => {
    const prompts = loadPrompts('gsm8k', 4).map((p) => pair.tokenizer.encodeChat(p.messages));
    const opts = { maxTokens: 24, sampling: { temperature: 0, topK: 0, topP: 1 }, policy: { policy: 'specdec++' as const, kMin: 1, kMax: 16 } };
    const alone: number[][] = [];
    for (const p of prompts) alone.push(await pair.decoder.start(p, opts).run());
    const asked: number[] = [];
    const costs = pair.decoder.costs;
    const original = costs.threshold.bind(costs);
    // Batches of 4 do not draft, batches of fewer use h = 0.25 (the scheduler's batch size reaches the model).
    costs.threshold = (_anchor: number, batch: number) => {
      asked.push(batch);
      return batch >= 4 ? { threshold: 0.5, draft: false } : { threshold: 0.25, draft: true };
    };
    const rounds: RoundStats[][] = prompts.map(() => []);
    try {
      const scheduler = new BatchScheduler({ maxBatchTokens: 512 });
      const outs = await Promise.all(
        prompts.map(async (p, i) => {
          const g = pair.decoder.start(p, { ...opts, onRound: (r) => rounds[i]!.push(r) });
          while (!g.done) await scheduler.step(g);
          return g.tokenIds;
        }),
      );
      outs.forEach((o, i) => assert.deepEqual(o, alone[i], `prompt ${i}`));
    } finally {
      costs.threshold = original;
    }
    assert.ok(asked.includes(4));
    const all = rounds.flat();
    assert.ok(all.some((r) => r.threshold === 0.5 && r.drafted === 0), 'a round of the full batch drafted nothing');
    for (const r of all) {
      assert.ok(r.threshold === 0.5 || r.threshold === 0.25, `threshold ${r.threshold}`);
      if (r.threshold === 0.5) assert.equal(r.drafted, 0);
    }
    // A seeded sampled request keeps the anchor (its output must not depend on the load).
    const seeded: RoundStats[] = [];
    costs.threshold = () => ({ threshold: 0.01, draft: false });
    try {
      await pair.decoder.start(prompts[0]!, { ...opts, sampling: { temperature: 0.7, topK: 0, topP: 1 }, seed: 3, onRound: (r) => seeded.push(r) }).run();
    } finally {
      costs.threshold = original;
    }
    assert.ok(seeded.every((r) => r.threshold === pair.head!.recommendedThreshold || r.threshold !== 0.01));
    assert.ok(seeded.some((r) => r.drafted > 0));
  });
});
