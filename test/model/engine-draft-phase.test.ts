/**
 * The draft phase in one ONNX Runtime run (engine/draft-phase.ts, onnx/draft-loop-graph.ts)
 * proposes what step-by-step drafting proposes: the same candidates, stop decisions and head
 * probabilities round by round, for fixed K, confidence and specdec++, on the bundled pair
 * (head fused into the draft) and on a GPT-2 fixture pair; the draft's KV cache it leaves is the
 * one step-by-step drafting leaves; it really is one run per round; and drafts it cannot run
 * (grouped-query attention) fall back to step-by-step drafting.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DraftPhase } from '../../src/engine/draft-phase.js';
import { DecoderModel } from '../../src/engine/model.js';
import { ModelPair } from '../../src/pair/model-pair.js';
import { BatchScheduler, type PassRecord } from '../../src/engine/scheduler.js';
import { argmax, GREEDY, softmax } from '../../src/engine/sampling.js';
import type { DraftPhaseMode, GenerateOptions } from '../../src/engine/speculative.js';
import type { RoundStats } from '../../src/engine/stats.js';
import { parsePolicy, RULE_OFF, type PolicySpec } from '../../src/engine/stop-policy.js';
import { writeFixturePair } from '../../src/testing/decoder-fixture.js';
import { BUNDLED_DRAFT } from '../../src/paths.js';
import { buildDraftLoopGraph, hoistInvariants } from '../../src/onnx/draft-loop-graph.js';
import { decodedGraph, onnx } from '../../src/onnx/graph-builder.js';
import { PAST_LENGTH_INPUT } from '../../src/onnx/inplace-attention.js';

const root = mkdtempSync(join(tmpdir(), 'specd-phase-'));
after(() => rmSync(root, { recursive: true, force: true }));

interface Traced {
  tokens: number[];
  rounds: RoundStats[];
  draftRuns: number;
}

/** One greedy generation, with every round's statistics and the runs of the draft it used. */
async function trace(pair: ModelPair, prompt: number[], policy: PolicySpec, mode: DraftPhaseMode, maxTokens: number): Promise<Traced> {
  const rounds: RoundStats[] = [];
  const draft = policy.policy === 'specdec++' ? (pair.headDraft ?? pair.draft)! : pair.draft!;
  const runsBefore = draft.runs;
  const opts: GenerateOptions = { maxTokens, sampling: GREEDY, policy, eosTokenIds: [], draftPhase: mode, onRound: (r) => rounds.push(r) };
  const g = pair.decoder.start(prompt, opts);
  await g.run();
  return { tokens: [...g.tokenIds], rounds, draftRuns: draft.runs - runsBefore };
}

/** Both modes propose alike round by round; returns the one-run traces. */
async function compareModes(pair: ModelPair, prompts: number[][], policies: PolicySpec[], maxTokens: number): Promise<Traced[]> {
  const traces: Traced[] = [];
  for (const [pi, prompt] of prompts.entries()) {
    for (const policy of policies) {
      const label = `prompt ${pi}, ${JSON.stringify(policy)}`;
      const stepwise = await trace(pair, prompt, policy, 'per-step', maxTokens);
      const oneRun = await trace(pair, prompt, policy, 'one-run', maxTokens);
      assert.deepEqual(oneRun.tokens, stepwise.tokens, `${label}: output`);
      assert.equal(oneRun.rounds.length, stepwise.rounds.length, `${label}: rounds`);
      for (const [i, r] of oneRun.rounds.entries()) {
        const s = stepwise.rounds[i]!;
        assert.equal(r.drafted, s.drafted, `${label}, round ${i}: candidates drafted (the stop decision)`);
        assert.equal(r.accepted, s.accepted, `${label}, round ${i}: candidates accepted`);
        assert.equal(r.acceptProbs?.length, s.acceptProbs?.length, `${label}, round ${i}: head probabilities`);
        r.acceptProbs?.forEach((p, j) => assert.ok(Math.abs(p - s.acceptProbs![j]!) < 1e-4, `${label}, round ${i}: P(accept y_${j + 1}) ${p} vs ${s.acceptProbs![j]}`));
      }
      // One run per drafting round, plus the draft's catching up with the prompt.
      const drafting = oneRun.rounds.filter((r) => r.drafted > 0).length;
      assert.ok(drafting > 0, `${label}: nothing drafted`);
      const multiStep = stepwise.rounds.some((r) => r.drafted > 1);
      assert.ok(multiStep ? oneRun.draftRuns < stepwise.draftRuns : oneRun.draftRuns <= stepwise.draftRuns, `${label}: ${oneRun.draftRuns} draft runs in one-run mode, ${stepwise.draftRuns} step by step`);
      assert.ok(oneRun.draftRuns <= oneRun.rounds.length + 4, `${label}: ${oneRun.draftRuns} draft runs in ${oneRun.rounds.length} rounds`);
      traces.push(oneRun);
    }
  }
  return traces;
}

describe('one-run draft phase: bundled pair', () => {
  let pair: ModelPair;
  before(async () => {
    pair = await ModelPair.load({ threads: 2, draftThreads: 1 });
  });
  after(() => pair?.release());

  test('same candidates, stop decisions and head probabilities as step-by-step drafting', async () => {
    const prompts = ['Question: Tom has 3 apples and buys 5 more. How many apples does he have?\nAnswer:', 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n'].map((t) =>
      pair.tokenizer.encode(t),
    );
    const policies = ['fixed:1', 'fixed:3', 'fixed:6', 'confidence:0.6', 'specdec++:0.5', 'specdec++:0.3', 'specdec++:0.9'].map(parsePolicy);
    const traces = await compareModes(pair, prompts, policies, 48);
    // The head's rule stops at different lengths (not a fixed K in disguise).
    const lengths = new Set(traces.slice(4, 7).flatMap((t) => t.rounds.map((r) => r.drafted)));
    assert.ok(lengths.size >= 3, `specdec++ drafted only ${[...lengths].join(', ')} candidates per round`);
  });

  test('a lone sequence under the batch scheduler drafts in one run per round, output unchanged', async () => {
    const prompt = pair.tokenizer.encode('The capital of France is');
    const policy = parsePolicy('specdec++:0.5');
    const alone = await trace(pair, prompt, policy, 'per-step', 40);
    const passes: PassRecord[] = [];
    const scheduler = new BatchScheduler({ maxBatchTokens: 512, onPass: (p) => passes.push(p) });
    const rounds: RoundStats[] = [];
    const g = pair.decoder.start(prompt, { maxTokens: 40, sampling: GREEDY, policy, eosTokenIds: [], onRound: (r) => rounds.push(r) });
    while (!g.done) await scheduler.step(g);
    assert.deepEqual(g.tokenIds, alone.tokens);
    assert.deepEqual(
      rounds.map((r) => r.drafted),
      alone.rounds.map((r) => r.drafted),
    );
    const draftPasses = passes.filter((p) => p.kind === 'draft');
    assert.equal(draftPasses.length, rounds.filter((r) => r.drafted > 0).length, 'one draft pass reported per drafting round');
    assert.ok(draftPasses.every((p) => p.sequences === 1 && p.tokens >= 1 && p.ms > 0));
  });

  test('errors name the problem', async () => {
    const draft = pair.draft!;
    const phase = await DraftPhase.create(await DecoderModel.load(BUNDLED_DRAFT, { threads: 1, keepGraph: true }));
    assert.ok(phase, 'the bundled draft runs a draft phase');
    const rule = { maxSteps: 3, kMin: 1, threshold: RULE_OFF, pMin: 0, candidateWeights: new Float32Array(4) };
    const foreign = draft.newCache();
    try {
      await assert.rejects(phase.run(foreign, [1], rule), /draft's own KV cache/);
      const own = phase.draft.newCache();
      await assert.rejects(phase.run(own, [], rule), /at least one token/);
      await assert.rejects(phase.run(own, [1], { ...rule, maxSteps: 0 }), /maxSteps >= 1/);
      own.release();
    } finally {
      foreign.release();
      await phase.release();
      await phase.draft.release();
    }
  });
});

describe('one-run draft phase: the draft cache it leaves', () => {
  test('candidates, q(y) and the cache equal step-by-step passes', async () => {
    const draft = await DecoderModel.load(BUNDLED_DRAFT, { threads: 1, keepGraph: true });
    const phase = (await DraftPhase.create(draft))!;
    after(async () => {
      await phase.release();
      await draft.release();
    });
    const vocab = draft.info.vocabSize;
    const prompt = Array.from({ length: 70 }, (_, i) => (i * 37 + 11) % 256);
    for (const [unseen, steps] of [
      [1, 1],
      [1, 5],
      [2, 4],
    ] as const) {
      const stepwise = draft.newCache();
      const oneRun = draft.newCache();
      await draft.forward(stepwise, prompt.slice(0, -unseen), 0);
      await draft.forward(oneRun, prompt.slice(0, -unseen), 0);
      const tokens: number[] = [];
      const probs: number[] = [];
      let input = prompt.slice(-unseen);
      for (let s = 0; s < steps; s++) {
        const logits = await draft.forward(stepwise, input, 1);
        const row = logits.subarray(logits.length - vocab);
        const y = argmax(row);
        tokens.push(y);
        probs.push(softmax(row)[y]!);
        input = [y];
      }
      const out = await phase.run(oneRun, prompt.slice(-unseen), { maxSteps: steps, kMin: 1, threshold: RULE_OFF, pMin: 0, candidateWeights: new Float32Array(4) });
      assert.deepEqual(out.tokens, tokens, `unseen ${unseen}, ${steps} steps: candidates`);
      out.probs.forEach((p, i) => assert.ok(Math.abs(p - probs[i]!) < 1e-5, `q(y_${i + 1}) ${p} vs ${probs[i]}`));
      assert.equal(oneRun.length, stepwise.length, 'the cache covers the fed tokens, not the last candidate');
      // What the caches hold shows in the next pass: the last candidate fed to both.
      const next = [tokens.at(-1)!];
      const a = await draft.forward(stepwise, next, 1);
      const b = await draft.forward(oneRun, next, 1);
      const diff = a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);
      assert.ok(diff < 1e-4, `logits after the phase differ by ${diff}`);
      stepwise.release();
      oneRun.release();
    }
  });

  test('the confidence rule stops at a low q(y) and the head rule at 1 - prod P > h', async () => {
    const draft = await DecoderModel.load(BUNDLED_DRAFT, { threads: 1, keepGraph: true });
    const phase = (await DraftPhase.create(draft))!;
    after(async () => {
      await phase.release();
      await draft.release();
    });
    const prompt = Array.from({ length: 40 }, (_, i) => (i * 13 + 5) % 256);
    const run = async (rule: { kMin: number; threshold: number; pMin: number }, weights: number[]) => {
      const cache = draft.newCache();
      await draft.forward(cache, prompt.slice(0, -1), 0);
      const out = await phase.run(cache, prompt.slice(-1), { ...rule, maxSteps: 12, candidateWeights: Float32Array.from(weights) });
      cache.release();
      return out;
    };
    const free = await run({ kMin: 1, threshold: RULE_OFF, pMin: 0 }, [0, 0, 0, 0]);
    assert.equal(free.tokens.length, 12, 'no rule: max_steps');
    // Confidence: the first step whose q(y) is below p_min ends the phase.
    const pMin = [...free.probs].sort((a, b) => a - b)[4]!;
    const firstLow = free.probs.findIndex((p) => p < pMin);
    const conf = await run({ kMin: 1, threshold: RULE_OFF, pMin }, [0, 0, 0, 0]);
    assert.equal(conf.tokens.length, firstLow + 1);
    assert.deepEqual(conf.tokens, free.tokens.slice(0, firstLow + 1));
    // Head rule with P(accept) = sigmoid(bias) = 0.8 at every step: 1 - 0.8^s > 0.5 first at s = 4.
    const bias = Math.log(0.8 / 0.2);
    const head = await run({ kMin: 1, threshold: 0.5, pMin: 0 }, [bias, 0, 0, 0]);
    assert.equal(head.tokens.length, 4);
    head.acceptProbs.forEach((p) => assert.ok(Math.abs(p - 0.8) < 1e-5));
    // K_min holds the rule off: with h = 0.1 it would stop at s = 1.
    const held = await run({ kMin: 3, threshold: 0.1, pMin: 0 }, [bias, 0, 0, 0]);
    assert.equal(held.tokens.length, 3);
  });
});

describe('one-run draft phase: the graph', () => {
  test('the loop body computes per step only what changes between steps', async () => {
    const draft = await DecoderModel.load(BUNDLED_DRAFT, { threads: 1, keepGraph: true });
    try {
      const graph = decodedGraph(buildDraftLoopGraph(draft.graphProto!));
      const loop = graph.node.find((n) => n.opType === 'Loop')!;
      const body = decodedGraph(onnx.ModelProto.create({ graph: loop.attribute.find((a) => a.name === 'body')!.g! }));
      // The attention's mask over the cached past reads only the past length and the buffers' shape: computed once per run.
      const outerReads = new Set(graph.node.flatMap((n) => n.input));
      assert.ok(outerReads.has(PAST_LENGTH_INPUT), 'the mask over the past is computed outside the loop');
      const bodyInputs = new Set(body.input.map((i) => i.name ?? ''));
      assert.deepEqual(hoistInvariants(body.node, body.initializer, bodyInputs).outer, [], 'nothing left in the body that every step computes alike');
      // What depends on how many tokens a step feeds is carried, not recomputed from shapes.
      assert.equal(body.node.filter((n) => n.opType === 'Shape' && bodyInputs.has(n.input[0]!)).length, 0, 'no Shape of a loop-carried value');
      // The control: the same analysis finds the invariant nodes in a body that still has them.
      const ones = hoistInvariants(
        [onnx.NodeProto.create({ opType: 'Unsqueeze', input: [PAST_LENGTH_INPUT, 'axes'], output: ['u'] }), onnx.NodeProto.create({ opType: 'Add', input: ['u', 'step'], output: ['v'] })],
        [onnx.TensorProto.create({ name: 'axes', dims: [1], dataType: 7 })],
        new Set(['step']),
      );
      assert.deepEqual(ones.outer.map((n) => n.output[0]), ['u']);
      assert.deepEqual(ones.body.map((n) => n.output[0]), ['v']);
      assert.deepEqual(ones.outer[0]!.input, [PAST_LENGTH_INPUT, 'phase/hoisted/axes']);
      assert.deepEqual(ones.initializers.map((t) => t.name), ['phase/hoisted/axes']);
    } finally {
      await draft.release();
    }
  });
});

describe('one-run draft phase: fixture pairs', () => {
  test('a GPT-2 fixture draft proposes as step by step', async () => {
    const p = writeFixturePair(join(root, 'gpt2'), { style: 'gpt2' });
    const pair = await ModelPair.load({ target: p.targetDir, draft: p.draftDir, threads: 1, draftThreads: 1 });
    try {
      const prompts = [
        [1, 5, 9, 2, 7],
        [3, 3, 8, 1, 4, 6, 2],
      ];
      await compareModes(pair, prompts, ['fixed:2', 'fixed:5', 'confidence:0.3'].map(parsePolicy), 30);
    } finally {
      await pair.release();
    }
  });

  test('a grouped-query draft has no draft phase and drafts step by step', async () => {
    const p = writeFixturePair(join(root, 'gqa'), { style: 'llama', target: { heads: 4, kvHeads: 2 }, draft: { heads: 2, kvHeads: 1 } });
    const draft = await DecoderModel.load(p.draftDir, { threads: 1, keepGraph: true });
    try {
      assert.equal(await DraftPhase.create(draft), undefined);
    } finally {
      await draft.release();
    }
  });
});
