/**
 * `hybrid` while the draft catches up with a long prompt (at most CATCH_UP_PIECES_PER_ROUND
 * pieces a round, draft-proposer.ts): those rounds draft nothing and verify the copied proposal
 * where there is one; greedy output stays the target's, and seeded sampling is the same alone and beside
 * another sequence.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CATCH_UP_PIECES_PER_ROUND } from '../../src/engine/draft-proposer.js';
import { BatchScheduler } from '../../src/engine/scheduler.js';
import { type GenerateOptions, PREFILL_CHUNK } from '../../src/engine/sequence.js';
import { ModelPair } from '../../src/pair/model-pair.js';
import { writeFixturePair } from '../../src/testing/decoder-fixture.js';

const V = 12;
/** Three rounds of catching up, and some. */
const LONG = 3 * CATCH_UP_PIECES_PER_ROUND * PREFILL_CHUNK + 40;
/** A prompt that repeats itself, so that prompt lookup finds a copy in every round. */
const prompt = (n: number, salt: number) => Array.from({ length: n }, (_, t) => ((t % 7) * 5 + salt) % V);

describe('hybrid while the draft catches up with a long prompt (fixture pair)', () => {
  let root: string;
  let pair: ModelPair;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'specd-hybrid-catch-up-'));
    const p = writeFixturePair(join(root, 'pair'), { style: 'gpt2', vocabSize: V, draft: { maxPositions: LONG + 64 }, target: { maxPositions: LONG + 64 } });
    pair = await ModelPair.load({ target: p.targetDir, draft: p.draftDir, head: null, threads: 1, draftThreads: 1 });
  });
  after(async () => {
    await pair?.release();
    rmSync(root, { recursive: true, force: true });
  });

  test('greedy: the target-only output, with copies verified while the draft catches up', async () => {
    const base: GenerateOptions = { maxTokens: 24, sampling: { temperature: 0, topK: 0, topP: 1 }, policy: { policy: 'none' }, eosTokenIds: [] };
    const ref = await pair.decoder.start(prompt(LONG, 1), base).run();
    const before = { ...pair.decoder.hybridProposer.choices };
    const methods: (string | undefined)[] = [];
    const g = pair.decoder.start(prompt(LONG, 1), { ...base, policy: { policy: 'fixed', k: 3 }, hybrid: { policy: 'ngram' }, onRound: (r) => methods.push(r.method) });
    assert.deepEqual(await g.run(), ref);
    // The first round (the draft behind) verifies the copy, not the draft's empty proposal.
    assert.equal(methods[0], 'ngram', `rounds' methods ${JSON.stringify(methods)}`);
    assert.ok(pair.decoder.hybridProposer.choices.draft > before.draft, 'the draft drafts once caught up');
  });

  test('seeded sampling: the same alone and beside another sequence', async () => {
    const sampling = { temperature: 0.9, topK: 0, topP: 1 };
    const jobs = [prompt(40, 2), prompt(LONG, 3)];
    const opts = (i: number): GenerateOptions => ({ maxTokens: 24, sampling, seed: 70 + i, policy: { policy: 'fixed', k: 3 }, hybrid: { policy: 'ngram' }, eosTokenIds: [] });
    const alone: number[][] = [];
    const methods: (string | undefined)[] = [];
    for (const [i, p] of jobs.entries()) alone.push(await pair.decoder.start(p, { ...opts(i), onRound: (r) => i === 1 && methods.push(r.method) }).run());
    // Sampling too, the first round (the draft behind) verifies the copy, not the draft's empty proposal.
    assert.equal(methods[0], 'ngram', `the long prompt's rounds' methods ${JSON.stringify(methods)}`);
    const scheduler = new BatchScheduler({ maxBatchTokens: 512 });
    const batched = await Promise.all(
      jobs.map(async (p, i) => {
        const g = pair.decoder.start(p, opts(i));
        while (!g.done) await scheduler.step(g);
        return g.tokenIds;
      }),
    );
    batched.forEach((tokens, i) => assert.deepEqual(tokens, alone[i], `seed ${70 + i}`));
  });
});
