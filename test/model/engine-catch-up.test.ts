/**
 * A long prompt's draft catches up over several rounds (at most CATCH_UP_PIECES_PER_ROUND pieces
 * each) instead of one that stalls its batch: a sequence decoding beside it gets a verification
 * in every iteration that catches the draft up, and each output, greedy and seeded sampled, is
 * what it is alone.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CATCH_UP_PIECES_PER_ROUND } from '../../src/engine/draft-proposer.js';
import { BatchScheduler, type PassRecord } from '../../src/engine/scheduler.js';
import { type GenerateOptions, PREFILL_CHUNK } from '../../src/engine/sequence.js';
import { ModelPair } from '../../src/pair/model-pair.js';
import { writeFixturePair } from '../../src/testing/decoder-fixture.js';

const V = 12;
/** The long prompt: twice the pieces one round may catch up, and some. */
const LONG = 2 * CATCH_UP_PIECES_PER_ROUND * PREFILL_CHUNK + 40;
const prompt = (n: number, salt: number) => Array.from({ length: n }, (_, t) => (t * 5 + salt) % V);

describe("a long prompt's draft catches up over several rounds (fixture pair)", () => {
  let root: string;
  let pair: ModelPair;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'specd-catch-up-'));
    const p = writeFixturePair(join(root, 'pair'), { style: 'gpt2', vocabSize: V, draft: { maxPositions: LONG + 64 }, target: { maxPositions: LONG + 64 } });
    pair = await ModelPair.load({ target: p.targetDir, draft: p.draftDir, threads: 1, draftThreads: 1 });
  });
  after(async () => {
    await pair?.release();
    rmSync(root, { recursive: true, force: true });
  });

  for (const sampled of [false, true]) {
    test(sampled ? 'seeded sampling' : 'greedy', async () => {
      const sampling = sampled ? { temperature: 1, topK: 0, topP: 1 } : { temperature: 0, topK: 0, topP: 1 };
      const jobs: { prompt: number[]; opts: GenerateOptions }[] = [
        // Two prompt tokens: its draft has nothing to catch up.
        { prompt: prompt(2, 1), opts: { maxTokens: 200, sampling, seed: 5, policy: { policy: 'fixed', k: 3 }, eosTokenIds: [] } },
        { prompt: prompt(LONG, 2), opts: { maxTokens: 16, sampling, seed: 6, policy: { policy: 'fixed', k: 3 }, eosTokenIds: [] } },
      ];
      const alone: number[][] = [];
      for (const j of jobs) alone.push(await pair.decoder.start(j.prompt, j.opts).run());
      const passes: PassRecord[] = [];
      const scheduler = new BatchScheduler({ maxBatchTokens: 512, onPass: (p) => passes.push(p) });
      const short = pair.decoder.start(jobs[0]!.prompt, jobs[0]!.opts);
      await scheduler.step(short); // decoding before the long prompt arrives
      const long = pair.decoder.start(jobs[1]!.prompt, jobs[1]!.opts);
      const outs = await Promise.all(
        [short, long].map(async (g) => {
          while (!g.done) await scheduler.step(g);
          return g.tokenIds;
        }),
      );
      outs.forEach((o, i) => assert.deepEqual(o, alone[i], `job ${i}: as alone`));

      const iterations = new Map<number, PassRecord[]>();
      for (const p of passes) iterations.set(p.iteration!, [...(iterations.get(p.iteration!) ?? []), p]);
      const catchingUp = [...iterations.values()].filter((list) => list.some((p) => p.kind === 'catch-up'));
      assert.ok(catchingUp.length >= 3, `caught up over ${catchingUp.length} iterations`);
      // The prompt but for its last token, once, and the token each round that could not draft emitted.
      const caughtUp = passes.filter((p) => p.kind === 'catch-up').reduce((n, p) => n + p.tokens, 0);
      assert.equal(caughtUp, LONG - 1 + catchingUp.length - 1);
      for (const list of catchingUp) {
        assert.ok(list.filter((p) => p.kind === 'catch-up').length <= CATCH_UP_PIECES_PER_ROUND, 'at most CATCH_UP_PIECES_PER_ROUND pieces in a round');
        assert.ok(list.some((p) => p.kind === 'verify' && p.sequences === 2), 'the round verifies the short sequence too');
      }
    });
  }
});
