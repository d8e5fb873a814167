/**
 * The round's structure: a proposer of one's own runs through the scheduler beside the draft
 * model with no change to the round (its candidates verified, its `observe` told what was
 * accepted, greedy output the target's); every forward pass is reported and counted in the
 * iteration's token budget, the draft's catching up included; the draft controller decides each
 * sequence's arm and threshold at every batch size, one included.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DraftController } from '../../src/engine/draft-controller.js';
import { ModelPair } from '../../src/pair/model-pair.js';
import type { ProposeContext, ProposeRequest, Proposer } from '../../src/engine/proposer.js';
import { BatchScheduler, type PassRecord } from '../../src/engine/scheduler.js';
import { type GenerateOptions, type Proposal, Sequence, type VerifiedRound } from '../../src/engine/sequence.js';
import { Generation } from '../../src/engine/speculative.js';
import type { SamplingParams } from '../../src/engine/sampling.js';
import type { AcceptancePredictor, SpecDecPlusPlusPolicy } from '../../src/engine/stop-policy.js';
import { writeFixturePair } from '../../src/testing/decoder-fixture.js';

const GREEDY: SamplingParams = { temperature: 0, topK: 0, topP: 1 };
const V = 12;

/**
 * Proposes the next `k` tokens of a known output (the target's own), the last one wrong every
 * other call, and records what each round accepted.
 */
class OracleProposer implements Proposer {
  calls = 0;
  readonly budgets: number[] = [];
  readonly rounds: { proposed: number; wrongAt?: number; accepted: number }[] = [];
  private readonly wrong = new Map<Sequence, number | undefined>();

  constructor(
    private readonly reference: readonly number[],
    private readonly k: number,
  ) {}

  async propose(requests: readonly ProposeRequest[], ctx: ProposeContext): Promise<Proposal[]> {
    this.calls++;
    this.budgets.push(ctx.verifyBudget);
    return requests.map(({ sequence }) => {
      const at = sequence.tokenIds.length;
      const tokens = this.reference.slice(at, at + Math.max(0, Math.min(this.k, sequence.candidateRoom())));
      const wrongAt = this.calls % 2 === 0 && tokens.length > 0 ? tokens.length - 1 : undefined;
      if (wrongAt !== undefined) tokens[wrongAt] = (tokens[wrongAt]! + 1) % V;
      this.wrong.set(sequence, wrongAt);
      return { tokens, draftProbs: [] };
    });
  }

  observe(sequence: Sequence, proposal: Proposal, round: VerifiedRound): void {
    this.rounds.push({ proposed: proposal.tokens.length, wrongAt: this.wrong.get(sequence), accepted: round.accepted });
  }
}

describe('one structure for a round (fixture pair)', () => {
  let root: string;
  let pair: ModelPair;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'specd-round-'));
    const p = writeFixturePair(join(root, 'pair'), { style: 'gpt2', vocabSize: V, draft: { maxPositions: 400 }, target: { maxPositions: 400 } });
    pair = await ModelPair.load({ target: p.targetDir, draft: p.draftDir, threads: 1, draftThreads: 1 });
  });
  after(async () => {
    await pair?.release();
    rmSync(root, { recursive: true, force: true });
  });

  const prompt = (n: number, salt: number) => Array.from({ length: n }, (_, t) => (t * 5 + salt) % V);

  test("a proposer of one's own beside the draft model: its candidates verified in the same round, output the target's", async () => {
    const opts: GenerateOptions = { maxTokens: 40, sampling: GREEDY, policy: { policy: 'none' }, eosTokenIds: [] };
    const reference = await pair.decoder.start(prompt(20, 1), opts).run();
    const oracle = new OracleProposer(reference, 4);
    const passes: PassRecord[] = [];
    const watched = new BatchScheduler({ maxBatchTokens: 512, onPass: (p) => passes.push(p) });
    const sequence = new Sequence(pair.target, undefined, prompt(20, 1), opts);
    const own = new Generation(pair.decoder, sequence, oracle, pair.decoder.controller.admit(opts.policy, opts.sampling, opts.seed));
    const fixedOpts: GenerateOptions = { ...opts, policy: { policy: 'fixed', k: 3 } };
    const fixedAlone = await pair.decoder.start(prompt(30, 2), fixedOpts).run();
    const fixed = pair.decoder.start(prompt(30, 2), fixedOpts);
    await Promise.all(
      [own, fixed].map(async (g) => {
        while (!g.done) await watched.step(g);
      }),
    );
    assert.deepEqual(own.tokenIds, reference, "the proposer's sequence decodes the target's greedy output");
    assert.deepEqual(fixed.tokenIds, fixedAlone, 'the draft-model sequence beside it decodes what it decodes alone');
    assert.ok(oracle.rounds.length > 0 && oracle.rounds.length === own.stats.rounds);
    for (const r of oracle.rounds) assert.equal(r.accepted, r.wrongAt ?? r.proposed, `a round proposing ${r.proposed} (wrong at ${r.wrongAt}) accepted ${r.accepted}`);
    assert.ok(oracle.rounds.some((r) => r.wrongAt !== undefined) && oracle.rounds.some((r) => r.wrongAt === undefined && r.proposed > 1));
    assert.equal(own.stats.draft_tokens, oracle.rounds.reduce((n, r) => n + r.proposed, 0));
    // Both sequences verified in one target pass while both ran.
    assert.ok(passes.some((p) => p.kind === 'verify' && p.sequences === 2));
    // The proposer's budget is what the batch leaves of maxBatchTokens.
    assert.ok(oracle.budgets.every((b) => b <= 512 && b > 512 - 40));
  });

  test("every pass is reported and counted in the iteration's budget, the draft's catching up included", async () => {
    const budget = 160;
    const passes: PassRecord[] = [];
    const scheduler = new BatchScheduler({ maxBatchTokens: budget, onPass: (p) => passes.push(p) });
    const jobs = [
      // Prompts of unequal length: the short one is in (and its draft catches up) while the long one's pieces still go in.
      { prompt: prompt(100, 3), opts: { maxTokens: 24, sampling: GREEDY, policy: { policy: 'fixed', k: 4 }, eosTokenIds: [] } as GenerateOptions },
      { prompt: prompt(350, 4), opts: { maxTokens: 24, sampling: GREEDY, policy: { policy: 'fixed', k: 2 }, eosTokenIds: [] } as GenerateOptions },
    ];
    const alone: number[][] = [];
    for (const j of jobs) alone.push(await pair.decoder.start(j.prompt, j.opts).run());
    const runsBefore = pair.target.runs + pair.draft!.runs;
    const outs = await Promise.all(
      jobs.map(async (j) => {
        const g = pair.decoder.start(j.prompt, j.opts);
        while (!g.done) await scheduler.step(g);
        return g.tokenIds;
      }),
    );
    outs.forEach((o, i) => assert.deepEqual(o, alone[i], `job ${i}`));
    assert.equal(passes.length, pair.target.runs + pair.draft!.runs - runsBefore, 'one record per session run');
    for (const kind of ['prefill', 'catch-up', 'draft', 'verify'] as const) assert.ok(passes.some((p) => p.kind === kind), `a ${kind} pass`);
    const catchUp = passes.filter((p) => p.kind === 'catch-up').reduce((n, p) => n + p.tokens, 0);
    assert.equal(catchUp, 99 + 349, "each draft caught up with its prompt (but for the last token), once");
    // Prompt pieces start only while the iteration's passes (catching up included) left some budget, but for its first piece.
    const iterations = new Map<number, PassRecord[]>();
    for (const p of passes) iterations.set(p.iteration!, [...(iterations.get(p.iteration!) ?? []), p]);
    let crowded = 0;
    for (const [it, list] of iterations) {
      let spent = 0;
      let pieces = 0;
      for (const p of list) {
        if (p.kind === 'prefill' && pieces++ > 0) assert.ok(spent < budget, `iteration ${it}: a second piece after ${spent} tokens`);
        spent += p.tokens;
      }
      if (list.some((p) => p.kind === 'catch-up') && pieces > 0) crowded++;
    }
    assert.ok(crowded > 0, "an iteration that caught a draft up also fed a prompt piece (the case the budget rules)");
  });

  test('reportPasses: every pass of a generation stepped alone is reported, by kind', async () => {
    const opts: GenerateOptions = { maxTokens: 24, sampling: GREEDY, policy: { policy: 'fixed', k: 3 }, eosTokenIds: [] };
    const reference = await pair.decoder.start(prompt(30, 5), opts).run();
    const passes: PassRecord[] = [];
    pair.decoder.reportPasses((p) => passes.push(p));
    try {
      const runsBefore = pair.target.runs + pair.draft!.runs;
      assert.deepEqual(await pair.decoder.start(prompt(30, 5), opts).run(), reference);
      assert.equal(passes.length, pair.target.runs + pair.draft!.runs - runsBefore, 'one record per session run');
      for (const kind of ['prefill', 'catch-up', 'draft', 'verify'] as const) assert.ok(passes.some((p) => p.kind === kind && p.ms > 0), `a ${kind} pass`);
    } finally {
      pair.decoder.reportPasses(() => {});
    }
  });
});

describe('the draft controller', () => {
  const head: AcceptancePredictor = { width: 4, recommendedThreshold: 0.6, candidateWeights: new Float32Array(8), predictLogit: async () => 0 };
  const specdec = { policy: 'specdec++' as const, kMin: 1, kMax: 8 };

  test("admits specdec++ without a threshold at the head's h, following the load unless seeded", () => {
    const c = new DraftController(head);
    assert.deepEqual(c.admit(specdec, GREEDY, undefined), { spec: { ...specdec, threshold: 0.6 }, anchor: 0.6 });
    assert.deepEqual(c.admit({ ...specdec, threshold: 0.3 }, GREEDY, undefined), { spec: { ...specdec, threshold: 0.3 }, anchor: undefined });
    const sampled = { temperature: 0.7, topK: 0, topP: 1 };
    assert.equal(c.admit(specdec, sampled, 5).anchor, undefined, 'a seeded sampled request keeps its h');
    assert.equal(c.admit(specdec, sampled, undefined).anchor, 0.6);
  });

  test('decides each sequence’s arm and threshold per round, alone as in a batch', () => {
    const c = new DraftController(head);
    const auto = c.admit(specdec, GREEDY, undefined);
    const fixed = c.admit({ policy: 'fixed', k: 3 }, GREEDY, undefined);
    c.costs.aloneThreshold = () => 0.42;
    c.costs.threshold = (_anchor, batch) => 0.1 * batch;
    let arm: 'anchor' | 'model' | 'plain' = 'model';
    c.costs.roundArm = (batch) => (batch <= 1 ? 'anchor' : arm);
    const alone = c.planRound([auto]);
    assert.equal(alone.arm, 'anchor');
    assert.equal(alone.plans[0]!.threshold, 0.42);
    assert.equal((alone.plans[0]!.policy as SpecDecPlusPlusPolicy).threshold, 0.42, "the round's policy runs with the round's h");
    const batch = c.planRound([auto, fixed, auto]);
    assert.deepEqual(batch.plans.map((p) => [p.draft, p.threshold, p.policy.name]), [
      [true, 0.30000000000000004, 'specdec++:0.30000000000000004'],
      [true, undefined, 'fixed:3'],
      [true, 0.30000000000000004, 'specdec++:0.30000000000000004'],
    ]);
    arm = 'plain';
    assert.deepEqual(c.planRound([auto, fixed]).plans.map((p) => p.draft), [false, true], 'plain: the adaptive sequence does not draft, the fixed one does');
    assert.equal(c.planRound([fixed, fixed]).arm, undefined, 'no arm is played where no sequence follows the load');
    // Each round gets fresh policy objects: one round's state never leaks into another's.
    assert.notEqual(c.planRound([fixed]).plans[0]!.policy, c.planRound([fixed]).plans[0]!.policy);
  });
});
