/**
 * The draft-free policies (`ngram`: prompt lookup, `suffix`: suffix decoding) through the real
 * engine, with no draft model: candidates copied from the text seen are verified as point masses
 * (q = one-hot(y)), so greedy output equals target-only output token for token, alone and in a
 * batch, and sampled output is distributed as the target's (chi-square on a fixture's first two
 * tokens against the exact joint from the target's own scores).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadPrompts } from '../../src/bench/datasets.js';
import { ModelPair } from '../../src/pair/model-pair.js';
import { argmax, toProbs, type SamplingParams } from '../../src/engine/sampling.js';
import { BatchScheduler } from '../../src/engine/scheduler.js';
import type { GenerateOptions } from '../../src/engine/speculative.js';
import { type PolicySpec, parsePolicy, PolicySpecError } from '../../src/engine/stop-policy.js';
import { writeFixturePair } from '../../src/testing/decoder-fixture.js';
import { chiSquare } from '../support/statistics.js';

const GREEDY: SamplingParams = { temperature: 0, topK: 0, topP: 1 };
const NONE: PolicySpec = { policy: 'none' };
const DRAFT_FREE: PolicySpec[] = [parsePolicy('ngram'), parsePolicy('suffix')];

interface Result {
  tokens: number[];
  drafted: number;
  accepted: number;
}

async function alone(pair: ModelPair, prompt: number[], opts: GenerateOptions): Promise<Result> {
  const g = pair.decoder.start(prompt, opts);
  const tokens = await g.run();
  return { tokens: [...tokens], drafted: g.stats.draft_tokens, accepted: g.stats.accepted_tokens };
}

async function batched(pair: ModelPair, jobs: { prompt: number[]; opts: GenerateOptions }[]): Promise<number[][]> {
  const scheduler = new BatchScheduler({ maxBatchTokens: 512 });
  return Promise.all(
    jobs.map(async ({ prompt, opts }) => {
      const g = pair.decoder.start(prompt, opts);
      while (!g.done) await scheduler.step(g);
      return [...g.tokenIds];
    }),
  );
}

describe('draft-free policies on the bundled target (no draft model)', () => {
  let pair: ModelPair;
  let prompts: number[][];
  before(async () => {
    pair = await ModelPair.load({ threads: 2, draft: null, head: null });
    assert.equal(pair.draft ?? null, null, 'no draft model loaded');
    // Code edits: the answer repeats the prompt's code.
    prompts = loadPrompts('edit', 3).map((p) => pair.tokenizer.encodeChat(p.messages));
  });
  after(async () => {
    await pair?.release();
  });

  test('greedy output equals target-only output, alone and batched; candidates are accepted', async () => {
    const opts = (policy: PolicySpec): GenerateOptions => ({ maxTokens: 64, sampling: GREEDY, policy, eosTokenIds: [] });
    const reference: number[][] = [];
    for (const prompt of prompts) reference.push((await alone(pair, prompt, opts(NONE))).tokens);
    for (const policy of DRAFT_FREE) {
      let drafted = 0;
      let accepted = 0;
      for (const [i, prompt] of prompts.entries()) {
        const r = await alone(pair, prompt, opts(policy));
        assert.deepEqual(r.tokens, reference[i], `${policy.policy}, prompt ${i}`);
        drafted += r.drafted;
        accepted += r.accepted;
      }
      assert.ok(drafted > 0 && accepted > 0, `${policy.policy}: ${accepted} of ${drafted} candidates accepted`);
      assert.ok(accepted < drafted, `${policy.policy}: some candidate was rejected (${accepted} of ${drafted})`);
      const together = await batched(pair, [...prompts.map((prompt) => ({ prompt, opts: opts(policy) })), { prompt: prompts[0]!, opts: opts(NONE) }]);
      together.forEach((tokens, i) => assert.deepEqual(tokens, reference[i % prompts.length], `${policy.policy} batched, job ${i}`));
    }
  });

  test('a knob out of range is a request error naming it', () => {
    assert.throws(() => pair.decoder.start(prompts[0]!, { maxTokens: 4, sampling: GREEDY, policy: { policy: 'ngram', promptLookupMin: 13 } }), /prompt_lookup_min/);
    assert.throws(() => parsePolicy('ngram:0'), PolicySpecError);
  });
});

describe('draft-free policies on a fixture target', () => {
  let root: string;
  let pair: ModelPair;
  const V = 12;
  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'specd-draft-free-'));
    const p = writeFixturePair(join(root, 'gpt2'), { style: 'gpt2', vocabSize: V });
    pair = await ModelPair.load({ target: p.targetDir, draft: null, threads: 1 });
  });
  after(async () => {
    await pair?.release();
    rmSync(root, { recursive: true, force: true });
  });

  test('greedy output equals target-only output, alone and batched', async () => {
    const prompts = Array.from({ length: 5 }, (_, i) => Array.from({ length: 20 + 9 * i }, (_, t) => (t % (3 + i)) + i));
    const opts = (policy: PolicySpec): GenerateOptions => ({ maxTokens: 40, sampling: GREEDY, policy, eosTokenIds: [] });
    const reference: number[][] = [];
    for (const prompt of prompts) reference.push((await alone(pair, prompt, opts(NONE))).tokens);
    const policies: PolicySpec[] = [{ policy: 'ngram', promptLookupMin: 1, promptLookupMax: 3 }, { policy: 'suffix' }];
    for (const policy of policies) {
      let drafted = 0;
      for (const [i, prompt] of prompts.entries()) {
        const r = await alone(pair, prompt, opts(policy));
        assert.deepEqual(r.tokens, reference[i], `${policy.policy}, prompt ${i}`);
        drafted += r.drafted;
      }
      assert.ok(drafted > 0, `${policy.policy} proposed candidates`);
      const together = await batched(pair, prompts.map((prompt) => ({ prompt, opts: opts(policy) })));
      together.forEach((tokens, i) => assert.deepEqual(tokens, reference[i], `${policy.policy} batched, job ${i}`));
    }
  });

  test('seeded sampling gives the same output alone and in a batch', async () => {
    const sampling: SamplingParams = { temperature: 0.8, topK: 0, topP: 1 };
    const policies: PolicySpec[] = [{ policy: 'ngram', promptLookupMin: 1, promptLookupMax: 3 }, { policy: 'suffix' }];
    const jobs = Array.from({ length: 6 }, (_, i) => ({
      prompt: Array.from({ length: 12 + 5 * i }, (_, t) => (t % (2 + i)) + 1),
      opts: { maxTokens: 24, sampling, seed: 50 + i, policy: policies[i % 2]!, eosTokenIds: [] } as GenerateOptions,
    }));
    const single: Result[] = [];
    for (const job of jobs) single.push(await alone(pair, job.prompt, job.opts));
    assert.ok(single.some((r) => r.accepted > 0) && single.some((r) => r.accepted < r.drafted), 'candidates accepted and rejected');
    const together = await batched(pair, jobs);
    together.forEach((tokens, i) => assert.deepEqual(tokens, single[i]!.tokens, `seed ${50 + i} (${jobs[i]!.opts.policy.policy}) in a batch`));
  });

  for (const policy of [{ policy: 'ngram', promptLookupMin: 1, promptLookupMax: 2 }, { policy: 'suffix', suffixDecodingMinTokenProb: 0 }] as PolicySpec[]) {
    test(`sampled output with point-mass proposals (${policy.policy}) is distributed as the target's (chi-square)`, async (t) => {
      const params: SamplingParams = { temperature: 0.5, topK: 0, topP: 1 };
      const last = (logits: Float32Array) => logits.subarray(logits.length - V);
      // The target's greedy text, then its start again: the proposer copies what followed, which
      // the target often (not always) continues with, so both acceptance and recovery run.
      const text = [1];
      while (text.length < 8) text.push(argmax(last((await pair.target.score(text)).logits)));
      const prompt = [...text, ...text.slice(0, 3)];
      const p1 = toProbs(last((await pair.target.score(prompt)).logits), params);
      const joint = new Float64Array(V * V);
      for (let a = 0; a < V; a++) {
        const p2 = toProbs(last((await pair.target.score([...prompt, a])).logits), params);
        for (let b = 0; b < V; b++) joint[a * V + b] = p1[a]! * p2[b]!;
      }
      const counts = new Float64Array(V * V);
      const GENERATIONS = 4000;
      const BATCH = 40;
      let drafted = 0;
      let accepted = 0;
      for (let start = 0; start < GENERATIONS; start += BATCH) {
        const jobs = Array.from({ length: BATCH }, (_, i) => ({ prompt, opts: { maxTokens: 3, sampling: params, seed: start + i, policy, eosTokenIds: [] } as GenerateOptions }));
        const scheduler = new BatchScheduler({ maxBatchTokens: 512 });
        const outs = await Promise.all(
          jobs.map(async (job) => {
            const g = pair.decoder.start(job.prompt, job.opts);
            while (!g.done) await scheduler.step(g);
            drafted += g.stats.draft_tokens;
            accepted += g.stats.accepted_tokens;
            return g.tokenIds;
          }),
        );
        for (const out of outs) counts[out[0]! * V + out[1]!]!++;
      }
      const fit = chiSquare(counts, joint);
      t.diagnostic(`chi2 ${fit.stat.toFixed(2)}, dof ${fit.dof}, p ${fit.pValue.toExponential(2)}; accepted ${accepted} of ${drafted}`);
      assert.ok(accepted > 0.05 * GENERATIONS && drafted - accepted > 0.05 * GENERATIONS, `both accept and reject paths ran (${accepted} of ${drafted})`);
      assert.equal(fit.impossible, 0);
      assert.ok(fit.pValue > 1e-4, `the output distribution differs from the target's (p ${fit.pValue})`);
    });
  }
});
