/**
 * A seeded sampled request gives the same output whatever the draft's prefix cache holds: which
 * rounds draft (and so which random draws make the output) must not depend on how much of a long
 * prompt an earlier request left in the draft's cache (a per-round cap on the draft's catching up
 * would make them). The prompt, 8 prompt pieces and some, is sent twice to a pair with prefix
 * caching, whose second run's draft starts from the first run's rows, and once to a pair without it.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type GenerateOptions, PREFILL_CHUNK } from '../../src/engine/sequence.js';
import { ModelPair } from '../../src/pair/model-pair.js';
import { writeFixturePair } from '../../src/testing/decoder-fixture.js';

const V = 12;
const LONG = 8 * PREFILL_CHUNK + 40;
const prompt = Array.from({ length: LONG }, (_, t) => (t * 5 + 2) % V);

describe("a seeded request's output does not depend on the draft's prefix cache (fixture pair)", () => {
  let root: string;
  let cached: ModelPair;
  let plain: ModelPair;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'specd-seeded-draft-prefix-'));
    const p = writeFixturePair(join(root, 'pair'), { style: 'gpt2', vocabSize: V, draft: { maxPositions: LONG + 64 }, target: { maxPositions: LONG + 64 } });
    cached = await ModelPair.load({ target: p.targetDir, draft: p.draftDir, head: null, threads: 1, draftThreads: 1, prefixCaching: true });
    plain = await ModelPair.load({ target: p.targetDir, draft: p.draftDir, head: null, threads: 1, draftThreads: 1 });
  });
  after(async () => {
    await cached?.release();
    await plain?.release();
    rmSync(root, { recursive: true, force: true });
  });

  test('seeded sampling: cold, warm and uncached runs give the same tokens', async () => {
    const opts: GenerateOptions = { maxTokens: 24, sampling: { temperature: 1, topK: 0, topP: 1 }, seed: 11, policy: { policy: 'fixed', k: 3 }, eosTokenIds: [] };
    const run = async (pair: ModelPair) => {
      const g = pair.decoder.start(prompt, opts);
      const draftCached = g.sequence.draftCache!.length;
      return { tokens: await g.run(), draftCached };
    };
    const reference = await run(plain);
    const cold = await run(cached);
    const warm = await run(cached);
    assert.equal(cold.draftCached, 0);
    assert.ok(warm.draftCached > 4 * PREFILL_CHUNK, `the second run's draft starts from ${warm.draftCached} cached positions`);
    assert.deepEqual(cold.tokens, reference.tokens, 'cold run as without the cache');
    assert.deepEqual(warm.tokens, reference.tokens, 'warm run as without the cache');
  });
});
