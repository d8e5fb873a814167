/**
 * Whether and how deep a round drafts, from measured costs (cost-model.ts `draftDepth`,
 * `roundArm`; draft-controller.ts `planRound`): fed fake pass costs, the model must choose 0
 * where drafting's arithmetic loses to plain rounds and the best k where it pays.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { EXPLORE_SHARE, MIN_ARM_ROUNDS, MIN_OBSERVATIONS, PassCostModel, type RoundArm } from '../../src/engine/cost-model.js';
import { DraftController, type SequencePolicy } from '../../src/engine/draft-controller.js';

/** A verification of n rows, ms. */
type Verify = (rows: number) => number;

/**
 * Feed `model` verifications at the batch sizes given (each sequence feeding 1 + `drafted`
 * rows, give or take one), draft steps costing `draft(B)`, and rounds where `drafted`
 * candidates were proposed and `accepted(i)` of them accepted.
 */
function feed(model: PassCostModel, verify: Verify, draft: (b: number) => number, batches: number[], drafted: number, accepted: (i: number) => number, count = 200): void {
  for (let i = 0; i < count; i++) {
    const b = batches[i % batches.length]!;
    const rows = b * (1 + drafted + (i % 2));
    model.observeVerify(b, rows, verify(rows));
    model.observeDraft(b, draft(b));
    model.observeRound(drafted, accepted(i));
  }
}

/**
 * The rate of a round of `batch` sequences drafting k candidates, each accepted with
 * probability `a` independently: batch (1 + a + ... + a^k) / (V(batch (k + 1)) + k D).
 */
function rate(verify: Verify, draft: number, a: number, batch: number, k: number): number {
  let tokens = 0;
  for (let i = 0; i <= k; i++) tokens += a ** i;
  return (batch * tokens) / (verify(batch * (k + 1)) + k * draft);
}

/** Play `count` rounds of `batch` sequences as `roundArm` says, each emitting a token per sequence in 20 ms; @returns the arms played */
function playRounds(model: PassCostModel, batch: number, count: number): RoundArm[] {
  return Array.from({ length: count }, () => {
    const arm = model.roundArm(batch);
    model.observeBatchRound(batch, arm, batch, 20);
    return arm;
  });
}

/** A target whose pass is compute-bound: every row costs 1.2 ms besides 0.2 ms a pass. */
const computeBound: Verify = (n) => 0.2 + 1.2 * n;
/** A target whose pass is memory-bound: 2.5 ms a pass, 0.05 ms a row. */
const memoryBound: Verify = (n) => 2.5 + 0.05 * n;
const draftStep = (b: number) => 0.3 + 0.05 * b;
const cheapDraftStep = (b: number) => 0.1 + 0.02 * b;
/** Rounds of 4 candidates, every other accepting 2 and 3: a live acceptance of 2.5 / 3.5 per judged candidate. */
const acceptedOf = (i: number) => 2 + (i % 2);

describe('draft depth from measured costs', () => {
  test('undefined until enough is measured, and roundArm then keeps its arms', () => {
    const model = new PassCostModel();
    feed(model, computeBound, draftStep, [16], 4, acceptedOf, MIN_OBSERVATIONS - 1);
    assert.equal(model.draftDepth(16), undefined);
    assert.equal(model.roundArm(1), 'anchor', 'alone, the head decides until the costs are measured');
  });

  test('a compute-bound verification at 16 sequences: 0 (plain rounds), as the arithmetic says', () => {
    const model = new PassCostModel();
    feed(model, computeBound, draftStep, [8, 16], 4, acceptedOf);
    // Per position the rates fed are 1, 1, 0.5 and 0 (position 4 is never accepted, once judged):
    // even the first candidate, always accepted, does not pay for its row and draft step here.
    assert.ok(rate(computeBound, draftStep(16), 1, 16, 1) < rate(computeBound, draftStep(16), 1, 16, 0));
    assert.equal(model.draftDepth(16), 0);
    // Past a new bucket's plain rounds (where RoundArms would try the drafting arms), still plain.
    assert.deepEqual(playRounds(model, 16, 3 * MIN_ARM_ROUNDS), Array(3 * MIN_ARM_ROUNDS).fill('plain'));
    assert.equal(model.roundArm(9), 'plain');
  });

  test('without the costs measured, the same rounds do try drafting (the control of the test above)', () => {
    assert.ok(playRounds(new PassCostModel(), 16, 3 * MIN_ARM_ROUNDS).includes('anchor'));
  });

  test('a memory-bound verification: drafting pays, as deep as the measured acceptance per position says', () => {
    const model = new PassCostModel();
    feed(model, memoryBound, cheapDraftStep, [1, 4], 4, acceptedOf);
    // Positions 1 and 2 always accepted, 3 half the time, 4 never: the 4th candidate adds no token.
    const depth = model.draftDepth(4);
    assert.equal(depth, 3);
    assert.equal(model.draftDepth(4, 2), 2, 'never deeper than kMax');
    assert.equal(model.draftDepth(1), 3);
    assert.equal(model.roundArm(1), 'anchor');
  });

  test('the i.i.d. arithmetic decides where positions have no history of their own', () => {
    // Rounds of one candidate, accepted 7 times in 10: positions past the first take the overall rate, about 0.7.
    const model = new PassCostModel();
    const verify: Verify = (n) => 2.5 + 0.4 * n;
    const draft = 0.5;
    feed(model, verify, () => draft, [1, 2], 1, (i) => (i % 10 < 7 ? 1 : 0));
    const a = model.snapshot().acceptance;
    assert.ok(Math.abs(a - 0.7) < 0.02, `live acceptance ${a}`);
    for (const batch of [1, 2]) {
      const rates = Array.from({ length: 17 }, (_, k) => rate(verify, draft, a, batch, k));
      const best = rates.indexOf(Math.max(...rates));
      assert.ok(best > 0, `drafting pays here at ${batch}`);
      assert.equal(model.draftDepth(batch), best, `batch ${batch}: rates ${rates.map((r) => r.toFixed(3)).join(' ')}`);
    }
  });

  test("prompt pieces pin a row's cost where the verifications' rows hardly vary", () => {
    const flat = new PassCostModel();
    // Every verification feeds 16 or 32 rows and costs what 16 rows cost: no slope to see but a tiny one.
    const verify: Verify = (n) => 20 + 0.001 * n;
    feed(flat, verify, draftStep, [16], 0, () => 0);
    feed(flat, verify, draftStep, [16], 1, () => 1);
    const withPieces = new PassCostModel();
    feed(withPieces, verify, draftStep, [16], 0, () => 0);
    feed(withPieces, verify, draftStep, [16], 1, () => 1);
    for (let i = 0; i < 50; i++) withPieces.observeVerify(1, 256, 1 + 1.2 * 256, true);
    assert.ok(flat.draftDepth(16)! > 0, 'rows that look free: drafting pays');
    assert.equal(withPieces.draftDepth(16), 0, 'a row costs at least a prompt token');
  });
});

describe('a batch whose drafts differ in length', () => {
  // The attention pads every sequence to the batch's longest input: a pass costs by its padded rows.
  const verify: Verify = (padded) => 1 + 0.3 * padded;
  const draft = 0.2;
  /** Rounds of 4 sequences, one drafting 4-6 candidates and the others 0-1; 2 or 3 accepted of 4. */
  function feedUnequal(model: PassCostModel, padded: boolean): void {
    for (let i = 0; i < 300; i++) {
      const lengths = [5 + (i % 3), 1 + (i % 2), 1, 2];
      const rows = lengths.reduce((n, x) => n + x, 0);
      const paddedRows = 4 * Math.max(...lengths);
      model.observeVerify(4, rows, verify(paddedRows), false, padded ? paddedRows : undefined);
      model.observeDraft(4, draft);
      model.observeRound(4, 2 + (i % 2));
    }
  }

  test('the depth follows the padded rows a pass computes, not the tokens it packs', () => {
    // Per position the rates fed are 1, 1, 0.5 and 0: 1, 2, 3, 3.5 and 3.5 tokens at k = 0..4.
    const tokens = [1, 2, 3, 3.5, 3.5];
    const rates = tokens.map((t, k) => (4 * t) / (verify(4 * (k + 1)) + k * draft));
    const best = rates.indexOf(Math.max(...rates));
    assert.equal(best, 2, `rates ${rates.map((r) => r.toFixed(3)).join(' ')}`);
    const model = new PassCostModel();
    feedUnequal(model, true);
    assert.equal(model.draftDepth(4), best);
    // The control: the same passes fitted over the tokens they pack misread a row's cost.
    const packed = new PassCostModel();
    feedUnequal(packed, false);
    assert.notEqual(packed.draftDepth(4), best);
  });
});

describe("a new bucket's stalled first rounds", () => {
  /** Play `count` rounds of 4 sequences: plain emits 4 tokens in `plainMs(i)` ms, a drafting arm 6 in 20 ms. */
  function play(model: PassCostModel, count: number, plainMs: (i: number) => number): RoundArm[] {
    return Array.from({ length: count }, (_, i) => {
      const arm = model.roundArm(4);
      if (arm === 'plain') model.observeBatchRound(4, arm, 4, plainMs(i));
      else model.observeBatchRound(4, arm, 6, 20);
      return arm;
    });
  }
  const share = (arms: RoundArm[], arm: RoundArm) => arms.filter((a) => a === arm).length / arms.length;

  test('do not decide: plain is measured again after the drafting arms, and plays where it delivers most', () => {
    const model = new PassCostModel();
    feed(model, memoryBound, cheapDraftStep, [1, 4], 4, acceptedOf);
    assert.ok(model.draftDepth(4)! > 0, 'the pass costs say drafting may pay, so the rounds decide');
    // Every warm-up plain round stalls (75 ms against 11 ms later): 0.05 tokens/ms, drafting 0.3, plain 0.36.
    const arms = play(model, 400, (i) => (i < MIN_ARM_ROUNDS ? 75 : 11));
    assert.ok(arms.slice(0, MIN_ARM_ROUNDS).every((a) => a === 'plain'));
    assert.ok(share(arms.slice(-200), 'plain') > 1 - 2 * EXPLORE_SHARE, `plain in ${share(arms.slice(-200), 'plain')} of the last rounds`);
    // The control: where plain rounds stay that slow, drafting plays.
    const slow = new PassCostModel();
    feed(slow, memoryBound, cheapDraftStep, [1, 4], 4, acceptedOf);
    assert.ok(share(play(slow, 400, () => 75).slice(-200), 'plain') < 2 * EXPLORE_SHARE);
  });
});

describe('the controller drafts no deeper than pays in a batch', () => {
  const spec = { policy: 'specdec++', threshold: 0.5, kMin: 1, kMax: 16 } as const;
  const auto: SequencePolicy = { spec, anchor: 0.5 };
  const fixed: SequencePolicy = { spec: { policy: 'fixed', k: 5 } };

  test('specdec++ following the load gets K_max = draftDepth in a batch; alone and under a fixed K, the spec holds', () => {
    const c = new DraftController();
    feed(c.costs, memoryBound, cheapDraftStep, [1, 4], 4, acceptedOf);
    c.costs.roundArm = () => 'anchor';
    const batch = c.planRound([auto, fixed, auto, auto]);
    assert.deepEqual(batch.plans.map((p) => [p.draft, p.policy.maxDraft]), [
      [true, 3],
      [true, 5],
      [true, 3],
      [true, 3],
    ]);
    assert.equal(c.planRound([auto]).plans[0]!.policy.maxDraft, 16);
  });

  test('plain where the costs say so: the sequences following the load do not draft, a fixed K does', () => {
    const c = new DraftController();
    feed(c.costs, computeBound, draftStep, [8, 16], 4, acceptedOf);
    for (let r = 0; r < 3 * MIN_ARM_ROUNDS; r++) {
      const round = c.planRound(Array.from({ length: 16 }, (_, i) => (i === 0 ? fixed : auto)));
      assert.equal(round.arm, 'plain');
      assert.deepEqual(
        round.plans.map((p) => p.draft),
        Array.from({ length: 16 }, (_, i) => i === 0),
      );
      c.observeRound(16, round.arm!, 16, 20, 0);
    }
  });
});
