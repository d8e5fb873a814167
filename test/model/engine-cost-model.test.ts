/**
 * The auto threshold of specdec++ (cost-model.ts): h(B) is the anchor until enough is measured,
 * the anchor at batch 1, lower as a memory-bound batch grows; how a batch drafts (h_1, h(B) or
 * not at all) follows what its rounds delivered, the other arms still explored within a cost;
 * and the engine runs each round with what the model decides, exactly.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ALONE_H_MAX, ALONE_H_MIN, EXPLORE_COST, EXPLORE_SHARE, MIN_ARM_ROUNDS, MIN_OBSERVATIONS, MIN_TRIES, PassCostModel, type RoundArm } from '../../src/engine/cost-model.js';
import { ModelPair } from '../../src/pair/model-pair.js';
import { BatchScheduler } from '../../src/engine/scheduler.js';
import type { RoundStats } from '../../src/engine/stats.js';
import { loadPrompts } from '../../src/bench/datasets.js';
import { recommendedThresholdAt } from '../../src/engine/stop-policy.js';

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
    assert.equal(model.threshold(0.7, 16), 0.7);
  });

  test('a pass with a large fixed cost: the anchor at batch 1, then less drafting as the batch grows', () => {
    const model = new PassCostModel();
    feed(model, (n) => 2.5 + 0.05 * n, (b) => 0.3 + 0.02 * b, [1, 2, 4, 8, 16, 32], [3, 2]);
    const snap = model.snapshot();
    assert.ok(Math.abs(snap.verifyMsPerToken - 0.05) < 1e-3 && Math.abs(snap.verifyMsPerPass - 2.5) < 1e-3, JSON.stringify(snap));
    assert.ok(Math.abs(model.threshold(0.7, 1) - 0.7) < 1e-9);
    const hs = [1, 2, 4, 8, 16, 32, 64].map((b) => model.threshold(0.7, b));
    for (let i = 1; i < hs.length; i++) assert.ok(hs[i]! <= hs[i - 1]! + 1e-12, `h falls with the batch: ${hs.map((h) => h.toFixed(3)).join(' ')}`);
    assert.ok(hs.at(-1)! < 0.65, 'h falls well below the anchor at large batches');
  });
});

describe('threshold for a sequence alone', () => {
  /** h = 1 - c / (a v) of cost-model.ts, computed here from the costs fed: c = b + D, v the best time per token over k. */
  function expected(verify: (n: number) => number, b: number, draft: number, a: number): number {
    let v = Infinity;
    for (let k = 0; k <= 16; k++) v = Math.min(v, (verify(k + 1) + k * draft) / ((1 - a ** (k + 1)) / (1 - a)));
    return 1 - (b + draft) / (a * v);
  }

  test('the anchor until enough is measured, then h from the measured costs and acceptance', () => {
    const verify = (n: number) => 2.5 + 0.05 * n;
    const model = new PassCostModel();
    feed(model, verify, () => 0.3, [1], [3, 2], MIN_OBSERVATIONS - 1);
    assert.equal(model.aloneThreshold(0.55), 0.55);
    feed(model, verify, () => 0.3, [1], [3, 2]);
    const h = model.aloneThreshold(0.55);
    assert.ok(Math.abs(h - expected(verify, 0.05, 0.3, 2 / 3)) < 1e-3, `h ${h} vs ${expected(verify, 0.05, 0.3, 2 / 3)}`);
    assert.notEqual(h, 0.55);
  });

  test('cheaper draft steps raise h (longer drafts), dearer ones lower it, within its bounds', () => {
    const verify = (n: number) => 2.5 + 0.05 * n;
    const at = (draftMs: number) => {
      const model = new PassCostModel();
      feed(model, verify, () => draftMs, [1], [4, 3]);
      return model.aloneThreshold(0.55);
    };
    const hs = [0.05, 0.2, 0.5, 1, 2].map(at);
    for (let i = 1; i < hs.length; i++) assert.ok(hs[i]! <= hs[i - 1]!, `h falls as a draft step costs more: ${hs.join(' ')}`);
    assert.ok(hs[0]! > hs[2]! + 0.1, `h ${hs.join(' ')}`);
    for (const h of hs) assert.ok(h >= ALONE_H_MIN && h <= ALONE_H_MAX);
  });
});

describe('how a batch drafts', () => {
  type Outcomes = Record<RoundArm, [tokens: number, ms: number]>;
  /** Play `count` rounds of `batch` sequences, each arm's round yielding its outcome (and a drafting round after a plain one `catchUp` ms of catching up). */
  function play(model: PassCostModel, batch: number, count: number, outcomes: Outcomes, catchUp = 0): { arm: RoundArm; ms: number }[] {
    const rounds: { arm: RoundArm; ms: number }[] = [];
    for (let i = 0; i < count; i++) {
      const arm = model.roundArm(batch);
      const [tokens, ms] = outcomes[arm];
      const switching = arm !== 'plain' && rounds.at(-1)?.arm === 'plain' ? catchUp : 0;
      rounds.push({ arm, ms: ms + switching });
      model.observeBatchRound(batch, arm, tokens, ms, switching);
    }
    return rounds;
  }
  const share = (rs: { arm: RoundArm }[], arm: RoundArm) => rs.filter((r) => r.arm === arm).length / rs.length;
  /** What playing other arms than `best` cost: their time times their shortfall in rate, over all the time. */
  const explorationCost = (rs: { arm: RoundArm; ms: number }[], outcomes: Outcomes, best: RoundArm) => {
    const rate = (a: RoundArm) => outcomes[a][0] / outcomes[a][1];
    const lost = rs.reduce((t, r) => t + (r.arm === best ? 0 : r.ms * (1 - rate(r.arm) / rate(best))), 0);
    return lost / rs.reduce((t, r) => t + r.ms, 0);
  };
  // At 16 sequences on a compute-bound CPU: plain rounds emit 16 tokens in 16 ms, drafting ones fewer per ms.
  const compute: Outcomes = { anchor: [24, 30], model: [22, 26], plain: [16, 16] };

  test('each arm is tried first, then the best plays and the others are explored within a cost', () => {
    const rounds = play(new PassCostModel(), 16, 1600, compute);
    assert.ok(rounds.slice(0, MIN_ARM_ROUNDS).every((r) => r.arm === 'plain'), 'plain first');
    const tries = rounds.slice(MIN_ARM_ROUNDS, MIN_ARM_ROUNDS + 2 * MIN_TRIES);
    assert.equal(share(tries, 'anchor'), 0.5, 'then each drafting arm');
    assert.equal(share(tries, 'model'), 0.5, 'then each drafting arm');
    const late = rounds.slice(400);
    const cost = explorationCost(late, compute, 'plain');
    assert.ok(cost > 0.25 * EXPLORE_COST && cost < 1.5 * EXPLORE_COST, `exploring cost ${cost} of the time`);
    assert.ok(share(late, 'anchor') > 0 && share(late, 'model') > 0 && share(late, 'anchor') + share(late, 'model') <= 2 * EXPLORE_SHARE);
    // A clear loser is explored less often, but still explored.
    const clear = share(play(new PassCostModel(), 16, 1600, { ...compute, model: [16, 32] }).slice(400), 'model');
    assert.ok(clear < share(late, 'model') && clear > 0, `a clear loser played in ${clear} of the rounds`);
    // Where drafting long delivers most, the anchor plays.
    assert.ok(share(play(new PassCostModel(), 4, 600, { anchor: [12, 8], model: [9, 7], plain: [4, 6] }).slice(200), 'anchor') > 1 - 2 * EXPLORE_SHARE);
  });

  test('a switch to drafting that costs the drafts a catch-up is explored less often', () => {
    const cheap = play(new PassCostModel(), 16, 2400, compute).slice(400);
    const costly = play(new PassCostModel(), 16, 2400, compute, 100).slice(400);
    const drafting = (rs: { arm: RoundArm }[]) => 1 - share(rs, 'plain');
    assert.ok(drafting(costly) > 0 && drafting(costly) < drafting(cheap) / 3, `drafting in ${drafting(costly)} of the rounds with a catch-up, ${drafting(cheap)} without`);
  });

  test('a stall in one round does not decide', () => {
    const pays: Outcomes = { anchor: [22, 20], model: [20, 19], plain: [16, 16] };
    const model = new PassCostModel();
    play(model, 16, 300, pays);
    model.observeBatchRound(16, 'anchor', 22, 5000); // one round stalled 5 s
    assert.ok(share(play(model, 16, 100, pays), 'anchor') > 1 - 3 * EXPLORE_SHARE);
    // Nor one among the first rounds, whose rates decide nothing until every arm has them.
    const fresh = new PassCostModel();
    for (let i = 0; i < MIN_ARM_ROUNDS; i++) {
      const arm = fresh.roundArm(32);
      const [tokens, ms] = compute[arm];
      fresh.observeBatchRound(32, arm, tokens, i === 3 ? 400 : ms);
    }
    assert.ok(share(play(fresh, 32, 100, compute), 'plain') > 1 - 2 * EXPLORE_SHARE, 'plain rounds deliver more here, one stall notwithstanding');
  });

  test('arms are compared at the same batch size, whichever sizes of a bucket they were played at', () => {
    // Memory-bound: a round costs about the same at any size, and plain rounds deliver a little more at each size.
    const outcome: Record<RoundArm, (b: number) => [number, number]> = {
      anchor: (b) => [1.6 * b, 16 + 0.2 * b],
      model: (b) => [1.4 * b, 15 + 0.2 * b],
      plain: (b) => [b, 10 + 0.1 * b],
    };
    const model = new PassCostModel();
    // The drafting arms happened to be played at 15-16 sequences, plain rounds at 9-10.
    for (let i = 0; i < MIN_ARM_ROUNDS; i++) {
      for (const arm of ['anchor', 'model'] as const) model.observeBatchRound(15 + (i % 2), arm, ...outcome[arm](15 + (i % 2)));
      model.observeBatchRound(9 + (i % 2), 'plain', ...outcome.plain(9 + (i % 2)));
    }
    // Plain measured again after the drafting arms' tries (the warm-up's plain rounds decide nothing).
    for (let i = 0; i < MIN_TRIES; i++) model.observeBatchRound(9 + (i % 2), 'plain', ...outcome.plain(9 + (i % 2)));
    assert.equal(model.roundArm(16), 'plain');
    assert.equal(model.roundArm(9), 'plain');
  });

  test('batch sizes are judged apart, and a sequence alone always drafts', () => {
    const model = new PassCostModel();
    const memory: Outcomes = { anchor: [12, 8], model: [9, 7], plain: [3, 4] };
    play(model, 16, 400, compute);
    play(model, 3, 400, memory);
    assert.ok(share(play(model, 16, 200, compute), 'plain') > 1 - 2 * EXPLORE_SHARE);
    assert.ok(share(play(model, 4, 200, memory), 'anchor') > 1 - 2 * EXPLORE_SHARE, 'batches of 3 and 4 share a bucket');
    assert.ok(play(model, 1, 50, { anchor: [1, 10], model: [1, 1], plain: [1, 1] }).every((r) => r.arm === 'anchor'));
  });

  test('a larger batch does not try drafting where a smaller one found plain rounds best, but still explores', () => {
    const model = new PassCostModel();
    play(model, 8, 300, compute);
    const first = play(model, 16, 2000, compute);
    assert.ok(first.slice(0, MIN_ARM_ROUNDS + 2 * MIN_TRIES).every((r) => r.arm === 'plain'), 'no tries in the new bucket');
    assert.ok(1 - share(first, 'plain') < 2 * EXPLORE_SHARE && share(first, 'anchor') > 0 && share(first, 'model') > 0, `${share(first, 'anchor')} ${share(first, 'model')}`);
    // Where drafting does pay there, it takes over.
    const memory = play(model, 32, 600, { anchor: [60, 40], model: [50, 40], plain: [32, 40] });
    assert.ok(share(memory.slice(-100), 'anchor') > 1 - 2 * EXPLORE_SHARE, `the anchor in ${share(memory.slice(-100), 'anchor')} of the last rounds`);
  });

  test('a change in the load is seen through the explored arms', () => {
    const model = new PassCostModel();
    play(model, 16, 600, compute);
    // Now drafting pays (say the batch became memory-bound): the anchor takes over.
    const after = play(model, 16, 1000, { anchor: [30, 20], model: [24, 20], plain: [16, 16] });
    assert.ok(share(after.slice(-200), 'anchor') > 1 - 2 * EXPLORE_SHARE, `the anchor in ${share(after.slice(-200), 'anchor')} of the last rounds`);
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

  test("a draft's prompt feed is spread over the tokens its sequence may emit", async () => {
    const [prompt] = loadPrompts('gsm8k', 1).map((p) => pair.tokenizer.encodeChat(p.messages));
    const g = pair.decoder.start(prompt!, { maxTokens: 24, sampling: { temperature: 0, topK: 0, topP: 1 }, policy: { policy: 'specdec++', kMin: 1, kMax: 16 }, eosTokenIds: [] });
    // The scheduler takes each round's share as the round's evidence (the first round feeds the draft the prompt).
    const shares: { emitted: number; share: number }[] = [];
    const take = g.sequence.takePromptFeedShare.bind(g.sequence);
    g.sequence.takePromptFeedShare = (emitted: number) => {
      const share = take(emitted);
      shares.push({ emitted, share });
      return share;
    };
    await g.run();
    assert.ok(shares.length > 1 && shares[0]!.emitted < 24);
    const total = shares.reduce((n, s) => n + s.share, 0);
    assert.ok(shares[0]!.share > 0 && shares.at(-1)!.share > 0);
    for (const { emitted, share } of shares) assert.ok(Math.abs(share / total - emitted / 24) < 1e-9, `${share} of ${total} for ${emitted} of 24 tokens`);
    assert.equal(take(1), 0, 'nothing is left once spread');
  });

  test('specdec++ without a threshold takes h and whether to draft from the cost model, per batch size; greedy output unchanged', async () => {
    const prompts = loadPrompts('gsm8k', 4).map((p) => pair.tokenizer.encodeChat(p.messages));
    const opts = { maxTokens: 24, sampling: { temperature: 0, topK: 0, topP: 1 }, policy: { policy: 'specdec++' as const, kMin: 1, kMax: 16 } };
    const alone: number[][] = [];
    for (const p of prompts) alone.push(await pair.decoder.start(p, opts).run());
    const asked: number[] = [];
    const costs = pair.decoder.costs;
    const original = { threshold: costs.threshold.bind(costs), roundArm: costs.roundArm.bind(costs), aloneThreshold: costs.aloneThreshold.bind(costs) };
    // Batches of 4 do not draft, batches of fewer draft with h(B) = 0.25 (the scheduler's batch size reaches the model), a sequence alone with 0.4.
    costs.threshold = () => 0.25;
    costs.aloneThreshold = () => 0.4;
    costs.roundArm = (batch: number) => {
      asked.push(batch);
      return batch >= 4 ? 'plain' : 'model';
    };
    const rounds: RoundStats[][] = prompts.map(() => []);
    const loneRounds: RoundStats[] = [];
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
      // A sequence alone (a batch of one) drafts with the threshold for a sequence alone.
      const lone = pair.decoder.start(prompts[0]!, { ...opts, onRound: (r) => loneRounds.push(r) });
      while (!lone.done) await scheduler.step(lone);
      assert.deepEqual(lone.tokenIds, alone[0]);
    } finally {
      Object.assign(costs, original);
    }
    assert.ok(asked.includes(4));
    const all = rounds.flat();
    const anchor = recommendedThresholdAt(pair.head, 0);
    assert.ok(all.some((r) => r.threshold === anchor && r.drafted === 0), 'a round of the full batch drafted nothing');
    assert.ok(all.some((r) => r.threshold === 0.25 && r.drafted > 0), 'a smaller batch drafted with h(B)');
    for (const r of all) assert.ok(r.threshold === 0.25 || r.threshold === anchor || r.threshold === 0.4, `threshold ${r.threshold}`);
    assert.ok(loneRounds.length > 0 && loneRounds.every((r) => r.threshold === 0.4), 'a sequence alone drafted with its threshold');
    assert.ok(loneRounds.some((r) => r.drafted > 0));
    // A seeded sampled request keeps the head's h (its output must not depend on the load).
    const seeded: RoundStats[] = [];
    costs.aloneThreshold = () => 0.35;
    const g = pair.decoder.start(prompts[0]!, { ...opts, sampling: { temperature: 0.7, topK: 0, topP: 1 }, seed: 3, onRound: (r) => seeded.push(r) });
    costs.threshold = () => 0.01;
    costs.aloneThreshold = () => 0.01;
    costs.roundArm = () => 'plain';
    try {
      await g.run();
    } finally {
      Object.assign(costs, original);
    }
    const seededH = recommendedThresholdAt(pair.head, 0.7);
    assert.ok(seeded.every((r) => r.threshold === seededH), `seeded thresholds ${[...new Set(seeded.map((r) => r.threshold))].join(', ')}`);
    assert.ok(seeded.some((r) => r.drafted > 0));
  });

  test('a sequence alone switching between plain and drafting rounds emits what `none` emits', async () => {
    const prompts = loadPrompts('humaneval', 2).map((p) => pair.tokenizer.encodeChat(p.messages));
    const greedy = { temperature: 0, topK: 0, topP: 1 };
    const costs = pair.decoder.costs;
    const roundArm = costs.roundArm.bind(costs);
    for (const prompt of prompts) {
      const none = await pair.decoder.start(prompt, { maxTokens: 40, sampling: greedy, policy: { policy: 'none' } }).run();
      // Runs of plain rounds of growing length between drafting rounds: the draft catches up with 1, 2, 3, ... tokens.
      const arms: RoundArm[] = [];
      let n = 0;
      costs.roundArm = () => {
        const arm: RoundArm = ++n % 4 === 0 || n % 7 === 0 ? 'anchor' : 'plain';
        arms.push(arm);
        return arm;
      };
      const rounds: RoundStats[] = [];
      try {
        const g = pair.decoder.start(prompt, { maxTokens: 40, sampling: greedy, policy: { policy: 'specdec++', kMin: 1, kMax: 16 }, onRound: (r) => rounds.push(r) });
        assert.deepEqual(await g.run(), none);
      } finally {
        costs.roundArm = roundArm;
      }
      assert.ok(arms.includes('plain') && arms.includes('anchor'));
      assert.ok(rounds.some((r) => r.drafted > 0) && rounds.some((r) => r.drafted === 0), 'both kinds of rounds ran');
    }
  });
});
