/**
 * `hybrid` (GenerateOptions.hybrid, hybrid-proposer.ts): the draft model and a draft-free
 * proposer compete per round; greedy output stays the target's, both kinds of rounds happen,
 * seeded sampling is the same alone and in a batch, and what the engine refuses is named.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { RequestError } from '../src/errors.js';
import { ModelPair } from '../src/pair/model-pair.js';
import { BatchScheduler } from '../src/engine/scheduler.js';
import type { GenerateOptions } from '../src/engine/sequence.js';
import type { SamplingParams } from '../src/engine/sampling.js';
import { writeFixturePair } from '../src/testing/decoder-fixture.js';

const GREEDY: SamplingParams = { temperature: 0, topK: 0, topP: 1 };
const V = 12;

describe('hybrid: the draft model against a draft-free proposer (fixture pair)', () => {
  let root: string;
  let pair: ModelPair;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'specd-hybrid-'));
    const p = writeFixturePair(join(root, 'pair'), { style: 'gpt2', vocabSize: V, draft: { maxPositions: 400 }, target: { maxPositions: 400 } });
    pair = await ModelPair.load({ target: p.targetDir, draft: p.draftDir, threads: 1, draftThreads: 1 });
  });
  after(async () => {
    await pair?.release();
    rmSync(root, { recursive: true, force: true });
  });

  // A prompt that repeats itself, so that the draft-free proposers find matches.
  const prompts = [0, 1, 2, 3].map((salt) => Array.from({ length: 60 }, (_, t) => ((t % 7) * 5 + salt) % V));

  for (const free of [{ policy: 'ngram' as const }, { policy: 'suffix' as const }]) {
    test(`greedy output equals target-only with ${free.policy}, and both proposals are verified`, async () => {
      const before = { ...pair.decoder.hybridProposer.choices };
      for (const prompt of prompts) {
        const base: GenerateOptions = { maxTokens: 48, sampling: GREEDY, policy: { policy: 'none' }, eosTokenIds: [] };
        const ref = await pair.decoder.start(prompt, base).run();
        for (const k of [1, 3, 6]) {
          const g = pair.decoder.start(prompt, { ...base, policy: { policy: 'fixed', k }, hybrid: free });
          assert.deepEqual(await g.run(), ref, `fixed:${k} + ${free.policy}`);
        }
      }
      const after = pair.decoder.hybridProposer.choices;
      assert.ok(after.draft > before.draft, 'rounds verified the draft');
      assert.ok(after['skipped-draft'] > before['skipped-draft'], 'rounds skipped the draft for the copied candidates');
    });
  }

  test('seeded sampling gives the same output alone and in a batch', async () => {
    const sampling: SamplingParams = { temperature: 0.9, topK: 0, topP: 1 };
    const opts = (i: number): GenerateOptions => ({ maxTokens: 40, sampling, seed: 50 + i, policy: { policy: 'fixed', k: 3 }, hybrid: { policy: 'ngram' }, eosTokenIds: [] });
    const alone: number[][] = [];
    for (const [i, p] of prompts.entries()) alone.push(await pair.decoder.start(p, opts(i)).run());
    const scheduler = new BatchScheduler({ maxBatchTokens: 512 });
    const batched = await Promise.all(
      prompts.map(async (p, i) => {
        const g = pair.decoder.start(p, opts(i));
        while (!g.done) await scheduler.step(g);
        return g.tokenIds;
      }),
    );
    batched.forEach((tokens, i) => assert.deepEqual(tokens, alone[i], `seed ${50 + i}`));
  });

  test('errors name the problem', () => {
    const base: GenerateOptions = { maxTokens: 4, sampling: GREEDY, policy: { policy: 'none' }, hybrid: { policy: 'ngram' } };
    assert.throws(() => pair.decoder.start([1, 2, 3], base), (err: unknown) => err instanceof RequestError && /hybrid needs a policy that runs the draft model/.test(err.message));
    assert.throws(
      () => pair.decoder.start([1, 2, 3], { ...base, policy: { policy: 'fixed', k: 2 }, hybrid: { policy: 'ngram', promptLookupMin: 0 } }),
      (err: unknown) => err instanceof RequestError && err.param === 'speculative.prompt_lookup_min',
    );
  });
});
