/**
 * Continuous batching keeps every sequence's output what it would be alone: greedy outputs
 * equal token for token to the same request run alone (bundled pair and fixtures, mixed policies
 * and prompt lengths in one batch, sequences joining mid-way, a token budget that cuts drafting),
 * seeded sampling reproducible whatever else is in the batch, and the output distribution of
 * speculative sampling through the batched path equal to the target's (chi-square). Also the
 * scheduler's prompt pieces and the KV-cache budget's admission.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { KvBudget, KvBudgetError, kvBytesPerPosition } from '../../src/engine/kv-budget.js';
import { ModelPair } from '../../src/pair/model-pair.js';
import { BatchScheduler, type PassRecord } from '../../src/engine/scheduler.js';
import { type GenerateOptions, PREFILL_CHUNK } from '../../src/engine/speculative.js';
import { toProbs, type SamplingParams } from '../../src/engine/sampling.js';
import type { PolicySpec } from '../../src/engine/stop-policy.js';
import { writeFixturePair } from '../../src/testing/decoder-fixture.js';
import { loadPrompts } from '../../src/bench/datasets.js';
import { chiSquare } from '../support/statistics.js';

const GREEDY: SamplingParams = { temperature: 0, topK: 0, topP: 1 };
const SPECDEC: PolicySpec = { policy: 'specdec++', kMin: 2, kMax: 12 };

interface Job {
  prompt: number[];
  opts: GenerateOptions;
  /** Scheduler iterations to wait before joining. */
  joinAfter?: number;
}

/** Run each job alone, one after the other (Generation.step). */
async function runAlone(pair: ModelPair, jobs: Job[]): Promise<number[][]> {
  const out: number[][] = [];
  for (const job of jobs) out.push(await pair.decoder.start(job.prompt, job.opts).run());
  return out;
}

/** Run the jobs together through one scheduler; a job with `joinAfter` starts after that many passes of the others. */
async function runBatched(pair: ModelPair, jobs: Job[], maxBatchTokens = 512, passes: PassRecord[] = []): Promise<number[][]> {
  const waiters: { at: number; go: () => void }[] = [];
  const scheduler = new BatchScheduler({
    maxBatchTokens,
    onPass: (p) => {
      passes.push(p);
      for (const w of waiters.filter((w) => w.at <= passes.length)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.go();
      }
    },
  });
  return Promise.all(
    jobs.map(async (job) => {
      if (job.joinAfter) await new Promise<void>((go) => waiters.push({ at: job.joinAfter!, go }));
      const g = pair.decoder.start(job.prompt, job.opts);
      while (!g.done) await scheduler.step(g);
      return g.tokenIds;
    }),
  );
}

describe('continuous batching on the bundled pair', () => {
  let pair: ModelPair;
  let prompts: number[][];

  before(async () => {
    pair = await ModelPair.load({ threads: 2 });
    assert.ok(pair.target.kvInPlace, 'the bundled target writes its KV cache in place on the CPU');
    prompts = loadPrompts('gsm8k', 8).map((item) => pair.tokenizer.encodeChat(item.messages));
  });
  after(async () => {
    await pair?.release();
  });

  test('mixed policies and prompt lengths, sequences joining mid-way: greedy output equals each request alone', async () => {
    const policies: PolicySpec[] = [SPECDEC, { policy: 'none' }, { policy: 'fixed', k: 3 }, { policy: 'confidence', pMin: 0.4, kMax: 6 }];
    // A long prompt (several pieces) and a one-token one beside chat prompts.
    const long = [...prompts[0]!, ...prompts[1]!, ...prompts[2]!].slice(0, 3 * PREFILL_CHUNK + 17);
    const inputs = [...prompts.slice(0, 6), long, prompts[7]!.slice(0, 1)];
    const jobs: Job[] = inputs.map((prompt, i) => ({
      prompt,
      opts: { maxTokens: 48 + 8 * (i % 3), sampling: GREEDY, policy: policies[i % policies.length]! },
      joinAfter: i >= 5 ? 10 * (i - 4) : undefined,
    }));
    const passes: PassRecord[] = [];
    const batched = await runBatched(pair, jobs, 512, passes);
    const alone = await runAlone(pair, jobs);
    batched.forEach((tokens, i) => assert.deepEqual(tokens, alone[i], `job ${i} (${policies[i % policies.length]!.policy}, ${inputs[i]!.length} prompt tokens)`));
    const verify = passes.filter((p) => p.kind === 'verify');
    assert.ok(Math.max(...verify.map((p) => p.sequences)) >= 6, `verify passes batched up to ${Math.max(...verify.map((p) => p.sequences))} sequences`);
    // The long prompt went in pieces, between other sequences' rounds.
    const prefill = passes.map((p, i) => ({ ...p, i })).filter((p) => p.kind === 'prefill' && p.tokens > 1);
    assert.ok(prefill.every((p) => p.tokens <= PREFILL_CHUNK * 4), 'pieces stay within the token budget');
    const longPieces = prefill.filter((p) => p.tokens === PREFILL_CHUNK);
    assert.ok(longPieces.length >= 1);
  });

  test('a small token budget cuts drafting (exactly) and feeds prompts one piece per iteration', async () => {
    const jobs: Job[] = prompts.slice(0, 6).map((prompt) => ({ prompt, opts: { maxTokens: 40, sampling: GREEDY, policy: { policy: 'fixed', k: 6 } } }));
    const passes: PassRecord[] = [];
    const batched = await runBatched(pair, jobs, 16, passes);
    const alone = await runAlone(pair, jobs);
    batched.forEach((tokens, i) => assert.deepEqual(tokens, alone[i], `job ${i}`));
    for (const p of passes.filter((p) => p.kind === 'verify')) assert.ok(p.tokens <= 16 + 6 * p.sequences, `a verify pass of ${p.tokens} tokens for ${p.sequences} sequences`);
    assert.ok(passes.filter((p) => p.kind === 'verify').some((p) => p.tokens < 6 * 7), 'some round drafted less than K because of the budget');
    assert.ok(passes.filter((p) => p.kind === 'prefill').every((p) => p.tokens <= PREFILL_CHUNK));
  });

  test('seeded sampling gives the same output alone and in any batch', async () => {
    const sampling: SamplingParams = { temperature: 0.8, topK: 0, topP: 0.95 };
    const jobs: Job[] = prompts.slice(0, 5).map((prompt, i) => ({ prompt, opts: { maxTokens: 40, sampling, seed: 100 + i, policy: i % 2 ? SPECDEC : { policy: 'fixed', k: 4 } } }));
    const alone = await runAlone(pair, jobs);
    const batched = await runBatched(pair, jobs);
    // The same seeds beside other sequences with other seeds.
    const crowd: Job[] = [...jobs, ...prompts.slice(5, 8).map((prompt, i) => ({ prompt, opts: { maxTokens: 30, sampling, seed: 7 + i, policy: SPECDEC } }))];
    const crowded = await runBatched(pair, crowd.reverse());
    crowded.reverse();
    alone.forEach((tokens, i) => {
      assert.deepEqual(batched[i], tokens, `seed ${100 + i} in a batch`);
      assert.deepEqual(crowded[i], tokens, `seed ${100 + i} in another batch`);
    });
  });

  test('a failed pass fails every generation of its batch and releases their caches', async () => {
    // A budget that feeds the three prompts in the first iteration, so that the first round (and its failed pass) has all three.
    const scheduler = new BatchScheduler({ maxBatchTokens: 4096 });
    const gens = prompts.slice(0, 3).map((prompt) => pair.decoder.start(prompt, { maxTokens: 20, sampling: GREEDY, policy: { policy: 'fixed', k: 2 } }));
    assert.ok(gens.reduce((n, g) => n + g.prefillPending, 0) < 4096);
    const slotsBefore = pair.target.kvPool!.slotsInUse;
    const original = pair.target.forwardBatch.bind(pair.target);
    pair.target.forwardBatch = async () => {
      throw new Error('injected failure');
    };
    try {
      const results = await Promise.allSettled(gens.map((g) => scheduler.step(g)));
      assert.ok(results.every((r) => r.status === 'rejected' && /injected/.test(String(r.reason))));
    } finally {
      pair.target.forwardBatch = original;
    }
    assert.equal(pair.target.kvPool!.slotsInUse, slotsBefore - 3, 'the failed generations gave their slots back');
  });

  test("a generation whose own step fails leaves the batch alone; the others' outputs are unchanged", async () => {
    const opts = { maxTokens: 24, sampling: GREEDY, policy: { policy: 'fixed', k: 3 } as PolicySpec };
    const alone = await runAlone(pair, prompts.slice(0, 3).map((prompt) => ({ prompt, opts })));
    const scheduler = new BatchScheduler({ maxBatchTokens: 512 });
    const gens = prompts.slice(0, 3).map((prompt) => pair.decoder.start(prompt, opts));
    let calls = 0;
    // Its logits processing fails at its third draft step (the processor is the sequence's own).
    const processor = gens[1]!.sequence.processor;
    const apply = processor.apply.bind(processor);
    processor.apply = (...args) => {
      if (++calls > 2) throw new Error('injected step failure');
      return apply(...args);
    };
    const results = await Promise.allSettled(
      gens.map(async (g) => {
        while (!g.done) await scheduler.step(g);
        return g.tokenIds;
      }),
    );
    assert.equal(results[1]!.status, 'rejected');
    assert.deepEqual(results[0], { status: 'fulfilled', value: alone[0] });
    assert.deepEqual(results[2], { status: 'fulfilled', value: alone[2] });
  });
});

describe('continuous batching on fixtures', () => {
  let root: string;
  const pairs: Record<string, ModelPair> = {};

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'specd-batch-'));
    for (const style of ['gpt2', 'llama'] as const) {
      // A context longer than the fixtures' default 128, so prompts go in several pieces.
      const p = writeFixturePair(join(root, style), { style, vocabSize: 12, draft: { maxPositions: 400 }, target: { maxPositions: 400 } });
      pairs[style] = await ModelPair.load({ target: p.targetDir, draft: p.draftDir, threads: 1, draftThreads: 1 });
      if (style === 'llama') pairs.llamaExported = await ModelPair.load({ target: p.targetDir, draft: p.draftDir, threads: 1, draftThreads: 1, graph: 'exported' });
    }
  });
  after(async () => {
    for (const pair of Object.values(pairs)) await pair.release();
    rmSync(root, { recursive: true, force: true });
  });

  for (const [style, graph] of [['gpt2', 'inplace'], ['llama', 'inplace'], ['llama', 'exported']] as const) {
    const how = graph === 'inplace' ? 'batched passes over the in-place cache' : 'exported graph: sequences in lock-step, one pass each';
    test(`${style} fixture (${how}): greedy output equals each request alone`, async () => {
      const pair = graph === 'inplace' ? pairs[style]! : pairs.llamaExported!;
      assert.equal(pair.target.kvInPlace, graph === 'inplace');
      assert.equal(pair.draft?.kvInPlace, graph === 'inplace');
      const jobs: Job[] = Array.from({ length: 7 }, (_, i) => ({
        prompt: Array.from({ length: 1 + ((i * 67) % 320) }, (_, t) => (t * 5 + i) % 12),
        opts: { maxTokens: 30, sampling: GREEDY, policy: i % 2 ? { policy: 'fixed', k: 1 + (i % 5) } : { policy: 'none' }, eosTokenIds: [] },
        joinAfter: i > 4 ? 7 * i : undefined,
      }));
      const batched = await runBatched(pair, jobs);
      const alone = await runAlone(pair, jobs);
      batched.forEach((tokens, i) => assert.deepEqual(tokens, alone[i], `job ${i}`));
      if (style === 'llama' && graph === 'inplace') {
        // The in-place rebuild decodes what the exported graph decodes, token for token.
        const exported = await runAlone(pairs.llamaExported!, jobs);
        batched.forEach((tokens, i) => assert.deepEqual(tokens, exported[i], `job ${i} against the exported graph`));
      }
    });
  }

  test('speculative sampling through the batched path is distributed as the target (chi-square, in-place fixture)', async (t) => {
    const pair = pairs.gpt2!;
    const V = 12;
    const prompt = [1, 4, 10];
    const params: SamplingParams = { temperature: 1, topK: 0, topP: 1 };
    const last = (logits: Float32Array) => logits.subarray(logits.length - V);
    const p1 = toProbs(last((await pair.target.score(prompt)).logits), params);
    const joint = new Float64Array(V * V);
    for (let a = 0; a < V; a++) {
      const p2 = toProbs(last((await pair.target.score([...prompt, a])).logits), params);
      for (let b = 0; b < V; b++) joint[a * V + b] = p1[a]! * p2[b]!;
    }
    const counts = new Float64Array(V * V);
    const GENERATIONS = 6000;
    const BATCH = 40;
    let accepted = 0;
    let drafted = 0;
    for (let start = 0; start < GENERATIONS; start += BATCH) {
      const jobs: Job[] = Array.from({ length: BATCH }, (_, i) => ({ prompt, opts: { maxTokens: 3, sampling: params, seed: start + i, policy: { policy: 'fixed', k: 2 }, eosTokenIds: [] } }));
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
    assert.ok(accepted > 0.1 * GENERATIONS && drafted - accepted > 0.1 * GENERATIONS, 'both accept and reject paths ran');
    assert.equal(fit.impossible, 0);
    assert.ok(fit.pValue > 1e-4, `the batched output distribution differs from the target's (p ${fit.pValue})`);
  });
});

describe('KV-cache budget', () => {
  test('bytes per position: layers x (key + value) x kv_heads x head_dim x bytes per value', () => {
    assert.equal(kvBytesPerPosition({ layers: 2, kvHeads: 3, headDim: 4, dtype: 'float32' }), 2 * 2 * 3 * 4 * 4);
    assert.equal(kvBytesPerPosition({ layers: 2, kvHeads: 3, headDim: 4, dtype: 'float16' }), 2 * 2 * 3 * 4 * 2);
  });

  test('admits in arrival order within the budget, reports usage, refuses what can never fit', async () => {
    const budget = new KvBudget(100);
    const a = await budget.reserve(60);
    assert.equal(budget.usage, 0.6);
    const order: string[] = [];
    const b = budget.reserve(50).then((r) => (order.push('b'), r));
    const c = budget.reserve(10).then((r) => (order.push('c'), r)); // fits now, but waits behind b
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(order, []);
    assert.equal(budget.waiting, 2);
    a();
    a(); // idempotent
    const [rb, rc] = await Promise.all([b, c]);
    assert.deepEqual(order, ['b', 'c']);
    assert.equal(budget.usage, 0.6);
    rb();
    rc();
    assert.equal(budget.usage, 0);
    await assert.rejects(budget.reserve(101), KvBudgetError);
    assert.throws(() => new KvBudget(0), RangeError);
    assert.equal(new KvBudget(Infinity).usage, 0);
  });
});
