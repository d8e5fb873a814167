/**
 * Logits processors and log-probabilities in the engine.
 *
 * - Presence/frequency penalties and logit bias keep speculative decoding exact: greedy output
 *   with them equals target-only output with them, and a draft identical to the target has
 *   every sampled candidate accepted (the draft's and the target's rows are processed alike).
 * - Recorded logprobs equal the target's log-softmax (greedy) or the log of its processed
 *   sampling distribution, recomputed here by running the target alone over the output.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LogitsProcessor, type LogitsAdjustments } from '../../src/engine/logits-processors.js';
import { logSoftmax, MIN_LOGPROB, type TokenLogprob, tokenLogprob } from '../../src/engine/logprobs.js';
import { ModelPair } from '../../src/pair/model-pair.js';
import { GREEDY, type SamplingParams, toProbs } from '../../src/engine/sampling.js';
import type { GenerateOptions } from '../../src/engine/speculative.js';
import type { PolicySpec } from '../../src/engine/stop-policy.js';
import { FIXTURE_PAIR_DEFAULTS, writeFixturePair } from '../../src/testing/decoder-fixture.js';

const NONE: PolicySpec = { policy: 'none' };
const POLICIES: PolicySpec[] = [{ policy: 'fixed', k: 4 }, { policy: 'confidence', pMin: 0.3, kMax: 8 }];
const PENALTIES: LogitsAdjustments = { presencePenalty: 1.5, frequencyPenalty: 1 };
const MAX_TOKENS = 48;

describe('LogitsProcessor', () => {
  test('penalties follow OpenAI: bias - frequency * count - presence * (count > 0)', () => {
    const p = new LogitsProcessor({ presencePenalty: 0.5, frequencyPenalty: 0.25, logitBias: { 1: 3 } });
    p.accept([2, 2, 3]);
    const out = p.apply(new Float32Array([1, 1, 1, 1]));
    assert.deepEqual([...out], [1, 4, 1 - 0.5 - 0.5, 1 - 0.25 - 0.5]);
  });

  test('pending candidates count as output, without changing the verified counts', () => {
    const a = new LogitsProcessor(PENALTIES);
    const b = new LogitsProcessor(PENALTIES);
    const row = new Float32Array([0.5, -1, 2, 0]);
    a.accept([1]);
    b.accept([1, 2, 2]);
    assert.deepEqual([...a.apply(row, [2, 2])], [...b.apply(row)]);
    assert.deepEqual([...a.apply(row)], [...new LogitsProcessor(PENALTIES).apply(row, [1])]);
    assert.deepEqual([...row], [0.5, -1, 2, 0], 'the input row is not modified');
  });

  test('inactive processors pass rows through', () => {
    const row = new Float32Array([1, 2]);
    assert.equal(new LogitsProcessor().apply(row, [0]), row);
  });
});

describe('tokenLogprob', () => {
  test('top alternatives are the most likely, in order, without zero-probability tokens', () => {
    const logp = Float64Array.from([Math.log(0.1), Math.log(0.6), -Infinity, Math.log(0.3)]);
    const r = tokenLogprob(logp, 2, 5);
    assert.deepEqual(r.top.map((t) => t.token), [1, 3, 0]);
    assert.equal(r.logprob, MIN_LOGPROB, 'log(0) is reported as MIN_LOGPROB');
    assert.deepEqual(tokenLogprob(logp, 1, 0).top, []);
  });
});

describe('penalties, bias and logprobs on the bundled specd-pair', () => {
  let pair: ModelPair;
  let prompt: number[];
  before(async () => {
    pair = await ModelPair.load({ threads: 1 });
    prompt = pair.tokenizer.encodeChat([{ role: 'user', content: 'Natalia sold 48 clips in April and half as many in May. How many in all?' }]);
  });
  after(() => pair?.release());

  const run = async (opts: Partial<GenerateOptions> & { policy: PolicySpec }) => {
    const g = pair.decoder.start(prompt, { maxTokens: MAX_TOKENS, sampling: GREEDY, ...opts });
    await g.run();
    return g;
  };

  test('greedy with penalties: every policy equals target-only decoding with the same penalties', async () => {
    const ref = await run({ policy: NONE, adjustments: PENALTIES });
    const plain = await run({ policy: NONE });
    assert.notDeepEqual(ref.tokenIds, plain.tokenIds, 'the penalties change the output');
    for (const policy of POLICIES) {
      const g = await run({ policy, adjustments: PENALTIES });
      assert.deepEqual(g.tokenIds, ref.tokenIds, `${policy.policy} with penalties`);
      assert.ok(g.stats.draft_tokens > 0, 'speculation happened');
    }
  });

  test('logit bias forces a token under every policy', async () => {
    const A = 'A'.charCodeAt(0);
    for (const policy of [NONE, ...POLICIES]) {
      const g = await run({ policy, maxTokens: 12, adjustments: { logitBias: { [A]: 100 } } });
      assert.deepEqual(g.tokenIds, Array(12).fill(A), policy.policy);
    }
  });

  test("greedy logprobs equal the target's log-softmax of the processed logits", async () => {
    const g = await run({ policy: POLICIES[0]!, adjustments: PENALTIES, logprobs: 5 });
    const rows = await targetRows(g.tokenIds);
    const processor = new LogitsProcessor(PENALTIES);
    assert.equal(g.logprobs.length, g.tokenIds.length);
    g.tokenIds.forEach((token, i) => {
      const expected = logSoftmax(processor.apply(rows[i]!));
      processor.accept([token]);
      checkRecord(g.logprobs[i]!, token, expected, 5, `token ${i}`);
      assert.equal(g.logprobs[i]!.top[0]!.token, token, 'greedy picks the most likely token');
    });
  });

  test("sampled logprobs equal the log of the target's processed distribution", async () => {
    const sampling: SamplingParams = { temperature: 0.8, topK: 0, topP: 0.9 };
    const g = await run({ policy: POLICIES[0]!, sampling, seed: 11, adjustments: PENALTIES, logprobs: 3 });
    const rows = await targetRows(g.tokenIds);
    const processor = new LogitsProcessor(PENALTIES);
    g.tokenIds.forEach((token, i) => {
      const probs = toProbs(processor.apply(rows[i]!), sampling);
      processor.accept([token]);
      assert.ok(probs[token]! > 0, `token ${i} lies in the target's nucleus`);
      checkRecord(g.logprobs[i]!, token, probs.map(Math.log), 3, `token ${i}`);
    });
  });

  /** The target's logits at every output position, from one target-only pass over prompt + output. */
  async function targetRows(output: number[]): Promise<Float32Array[]> {
    const vocab = pair.target.info.vocabSize;
    const logits = await pair.target.forward(pair.target.newCache(), [...prompt, ...output]);
    return output.map((_, i) => logits.slice((prompt.length - 1 + i) * vocab, (prompt.length + i) * vocab));
  }
});

describe('penalties with sampling: a draft identical to the target', () => {
  const root = mkdtempSync(join(tmpdir(), 'specd-logprobs-'));
  let pair: ModelPair;
  before(async () => {
    const p = writeFixturePair(root, { style: 'llama', draft: { ...FIXTURE_PAIR_DEFAULTS.target } });
    pair = await ModelPair.load({ target: p.targetDir, draft: p.draftDir, threads: 1 });
  });
  after(async () => {
    await pair?.release();
    rmSync(root, { recursive: true, force: true });
  });

  test('has every candidate accepted, so both rows were processed alike', async () => {
    const g = pair.decoder.start([1, 5, 9, 13], {
      maxTokens: 40,
      sampling: { temperature: 1, topK: 0, topP: 1 },
      seed: 3,
      eosTokenIds: [],
      policy: { policy: 'fixed', k: 4 },
      adjustments: { presencePenalty: 1.5, frequencyPenalty: 1, logitBias: { 7: 2 } },
    });
    await g.run();
    assert.ok(g.stats.draft_tokens > 20);
    assert.equal(g.stats.accepted_tokens, g.stats.draft_tokens);
  });
});

function checkRecord(record: TokenLogprob, token: number, expected: Float64Array, n: number, at: string): void {
  assert.equal(record.token, token, at);
  assert.ok(Math.abs(record.logprob - expected[token]!) < 1e-4, `${at}: logprob ${record.logprob} vs ${expected[token]}`);
  const best = [...expected.keys()].filter((t) => expected[t]! > -Infinity).sort((a, b) => expected[b]! - expected[a]! || a - b).slice(0, n);
  assert.deepEqual(record.top.map((t) => t.token), best, `${at}: top alternatives`);
  record.top.forEach((t) => assert.ok(Math.abs(t.logprob - expected[t.token]!) < 1e-4, `${at}: alternative ${t.token}`));
}
