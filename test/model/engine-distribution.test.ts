/**
 * Speculative sampling is exact: the emitted tokens are distributed as if the target had
 * sampled them alone. Checked by chi-square tests (i) on the acceptance rule with hand-made
 * distributions, with deliberately wrong rules showing the test has the power to notice, and
 * (ii) end to end with a small-vocabulary fixture pair against the target's exact
 * distribution over 2-token continuations. Everything is seeded, so results are reproducible.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { acceptSampled, residual, type AcceptanceResult } from '../../src/engine/acceptance.js';
import type { DecoderModel } from '../../src/engine/model.js';
import { ModelPair } from '../../src/pair/model-pair.js';
import { SpeculativeDecoder } from '../../src/engine/speculative.js';
import { Rng } from '../../src/engine/rng.js';
import { sample, toProbs, type SamplingParams } from '../../src/engine/sampling.js';
import { policyLabel, type PolicySpec } from '../../src/engine/stop-policy.js';
import { writeFixturePair } from '../../src/testing/decoder-fixture.js';
import { type ChiSquare, chiSquare, chiSquareSf } from '../support/statistics.js';
import { normalise } from '../support/toy-bigram.js';

/** Accept the chi-square test when its p-value exceeds this (a strict level: a false alarm is 1 in 10,000). */
const ALPHA = 1e-4;

function describeFit(r: ChiSquare): string {
  return `chi2 ${r.stat.toFixed(2)}, dof ${r.dof}, p-value ${r.pValue.toExponential(2)}, impossible tokens ${r.impossible}`;
}

function assertFits(counts: ArrayLike<number>, probs: ArrayLike<number>, label: string, t?: TestContext): ChiSquare {
  const r = chiSquare(counts, probs);
  t?.diagnostic(`${label}: ${describeFit(r)}`);
  assert.equal(r.impossible, 0, `${label}: tokens of target probability 0 were emitted (${describeFit(r)})`);
  assert.ok(r.pValue > ALPHA, `${label}: output distribution differs from the target's (${describeFit(r)})`);
  return r;
}

function assertRejected(counts: ArrayLike<number>, probs: ArrayLike<number>, label: string, t?: TestContext): ChiSquare {
  const r = chiSquare(counts, probs);
  t?.diagnostic(`${label}: ${describeFit(r)}`);
  assert.ok(r.pValue < ALPHA, `${label}: the test failed to notice a wrong rule (${describeFit(r)})`);
  return r;
}

describe('chi-square machinery', () => {
  test('survival function matches tabulated critical values', () => {
    // (dof, x, P(X >= x)) from standard chi-square tables.
    const table: [number, number, number][] = [
      [1, 3.841459, 0.05],
      [1, 10.827566, 0.001],
      [2, 13.815511, 0.001],
      [4, 9.487729, 0.05],
      [5, 20.515006, 0.001],
      [10, 18.307038, 0.05],
      [10, 35.564, 1e-4],
      [35, 49.801850, 0.05],
      [100, 124.342113, 0.05],
    ];
    for (const [dof, x, p] of table) {
      const got = chiSquareSf(x, dof);
      assert.ok(Math.abs(got - p) / p < 2e-3, `dof ${dof}, x ${x}: ${got} vs ${p}`);
    }
    assert.ok(Math.abs(chiSquareSf(2, 2) - Math.exp(-1)) < 1e-12, 'dof 2 is exponential');
    assert.ok(Math.abs(chiSquareSf(0.5, 1) - 0.4795001221869535) < 1e-9);
  });

  test('pooling and impossible cells', () => {
    assert.equal(chiSquare([50, 50, 0], [0.5, 0.5, 0]).pValue, 1);
    assert.equal(chiSquare([50, 49, 1], [0.5, 0.5, 0]).pValue, 0);
    const r = chiSquare([500, 498, 1, 1], [0.5, 0.498, 0.001, 0.001]);
    assert.equal(r.dof, 1, 'two tiny cells pooled into the smallest real cell');
  });
});

// ---- (i) the acceptance rule ----------------------------------------------------------------

type Rule = (candidates: readonly number[], draftProbs: readonly Float64Array[], targetProbs: readonly Float64Array[], rng: Rng) => AcceptanceResult;

/** Deliberately wrong variants of the rule: the tests must reject each of them. */
const WRONG_RULES: Record<string, Rule> = {
  'recover from p instead of norm(max(0, p - q))': (c, q, p, rng) => {
    for (let i = 0; i < c.length; i++) {
      const y = c[i]!;
      if (rng.next() * q[i]![y]! <= p[i]![y]!) continue;
      return { accepted: i, next: sample(p[i]!, rng) };
    }
    return { accepted: c.length, next: sample(p[c.length]!, rng) };
  },
  'accept with probability min(1, q/p)': (c, q, p, rng) => {
    for (let i = 0; i < c.length; i++) {
      const y = c[i]!;
      if (rng.next() * p[i]![y]! <= q[i]![y]!) continue;
      return { accepted: i, next: sample(residual(p[i]!, q[i]!), rng) };
    }
    return { accepted: c.length, next: sample(p[c.length]!, rng) };
  },
  'bonus token from the last candidate position (off by one)': (c, q, p, rng) => {
    for (let i = 0; i < c.length; i++) {
      const y = c[i]!;
      if (rng.next() * q[i]![y]! <= p[i]![y]!) continue;
      return { accepted: i, next: sample(residual(p[i]!, q[i]!), rng) };
    }
    return { accepted: c.length, next: sample(p[c.length - 1]!, rng) };
  },
};

// Vocabulary of 6. Token 3 has p > 0 but q = 0; token 5 has q > 0 but p = 0.
const P1 = normalise([30, 25, 20, 15, 10, 0]);
const Q1 = normalise([5, 10, 40, 0, 15, 30]);
// Conditionals after the first token t1 (rows), again with q = 0 < p and p = 0 < q cells.
const P2 = [
  [10, 0, 30, 20, 25, 15],
  [40, 30, 0, 10, 10, 10],
  [5, 5, 5, 5, 40, 40],
  [0, 50, 10, 20, 0, 20],
  [25, 25, 25, 0, 25, 0],
  [16, 16, 17, 17, 17, 17],
].map(normalise);
const Q2 = [
  [30, 20, 0, 10, 20, 20],
  [10, 10, 40, 0, 30, 10],
  [40, 20, 20, 10, 10, 0],
  [20, 10, 30, 0, 30, 10],
  [10, 40, 10, 20, 0, 20],
  [50, 10, 10, 10, 10, 10],
].map(normalise);
// Third position (only drawn from, never counted).
const P3 = normalise([1, 2, 3, 4, 5, 6]);
const Q3 = normalise([6, 5, 4, 3, 2, 1]);

/** p / q at a position given the tokens before it (the toy "models"). */
const targetAt = (prefix: readonly number[]) => (prefix.length === 0 ? P1 : prefix.length === 1 ? P2[prefix[0]!]! : P3);
const draftAt = (prefix: readonly number[]) => (prefix.length === 0 ? Q1 : prefix.length === 1 ? Q2[prefix[0]!]! : Q3);

/**
 * The engine's round structure over the toy models: draft k candidates from q, verify with
 * `rule`, append accepted + next; repeat until `want` tokens exist. Returns the first `want`.
 */
function speculate(rule: Rule, k: number, want: number, rng: Rng): number[] {
  const out: number[] = [];
  while (out.length < want) {
    const candidates: number[] = [];
    const q: Float64Array[] = [];
    const p: Float64Array[] = [];
    for (let i = 0; i < k; i++) {
      const prefix = [...out, ...candidates];
      const qi = draftAt(prefix);
      q.push(qi);
      p.push(targetAt(prefix));
      candidates.push(sample(qi, rng));
    }
    p.push(targetAt([...out, ...candidates]));
    const r = rule(candidates, q, p, rng);
    out.push(...candidates.slice(0, r.accepted), r.next);
  }
  return out.slice(0, want);
}

/** Exact joint distribution of the first two tokens under the target: index t1 * 6 + t2. */
function jointTarget(): Float64Array {
  const out = new Float64Array(36);
  for (let a = 0; a < 6; a++) for (let b = 0; b < 6; b++) out[a * 6 + b] = P1[a]! * P2[a]![b]!;
  return out;
}

function countFirst(rule: Rule, trials: number, seed: number): Float64Array {
  const rng = new Rng(seed);
  const counts = new Float64Array(6);
  for (let t = 0; t < trials; t++) counts[speculate(rule, 1, 1, rng)[0]!]!++;
  return counts;
}

function countPairs(rule: Rule, k: number, trials: number, seed: number): Float64Array {
  const rng = new Rng(seed);
  const counts = new Float64Array(36);
  for (let t = 0; t < trials; t++) {
    const [a, b] = speculate(rule, k, 2, rng);
    counts[a! * 6 + b!]!++;
  }
  return counts;
}

describe('acceptSampled preserves the target distribution', () => {
  const TRIALS = 40_000;

  test('the toy distributions exercise every case', () => {
    assert.ok(P1[3]! > 0 && Q1[3] === 0, 'a token the draft never proposes');
    assert.ok(P1[5] === 0 && Q1[5]! > 0, 'a token the target never emits');
    let tv = 0;
    for (let i = 0; i < 6; i++) tv += Math.max(0, P1[i]! - Q1[i]!);
    assert.ok(tv > 0.4, `p and q are far apart (total variation ${tv})`);
  });

  test('first token (k = 1): accepted or recovered, distributed as p_1', (t) => {
    const counts = countFirst(acceptSampled, TRIALS, 1);
    assertFits(counts, P1, 'acceptSampled, first token', t);
    // The recovered path really ran: token 3 can only come from the residual.
    assert.ok(counts[3]! > 0.1 * TRIALS);
  });

  test('the chi-square test rejects wrong rules on the first token', (t) => {
    assertRejected(countFirst(WRONG_RULES['recover from p instead of norm(max(0, p - q))']!, TRIALS, 1), P1, 'recover from p', t);
    assertRejected(countFirst(WRONG_RULES['accept with probability min(1, q/p)']!, TRIALS, 1), P1, 'accept min(1, q/p)', t);
  });

  for (const k of [1, 2, 3]) {
    test(`first two tokens with drafts of length ${k}: distributed as p(t1) p(t2 | t1)`, (t) => {
      assertFits(countPairs(acceptSampled, k, 60_000, 10 + k), jointTarget(), `acceptSampled, k = ${k}`, t);
    });
  }

  test('the chi-square test rejects wrong rules on the first two tokens', (t) => {
    const joint = jointTarget();
    for (const k of [1, 2]) {
      for (const [name, rule] of Object.entries(WRONG_RULES)) {
        // With k = 2 the bonus token is the third one, outside what this test counts.
        if (name.startsWith('bonus') && k > 1) continue;
        assertRejected(countPairs(rule, k, 60_000, 10 + k), joint, `${name}, k = ${k}`, t);
      }
    }
  });

  test('residual is norm(max(0, p - q)) and falls back to p when p <= q everywhere', () => {
    const r = residual(P1, Q1);
    const expected = normalise([25, 15, 0, 15, 0, 0]);
    for (let i = 0; i < 6; i++) assert.ok(Math.abs(r[i]! - expected[i]!) < 1e-12, `residual[${i}]`);
    assert.equal(residual(P1, P1), P1);
  });
});

// ---- (ii) end to end --------------------------------------------------------------------------

const VOCAB = 12;
// A prompt where the target's next-token distribution is spread out (entropy ~1.7 nats) and
// the draft's overlaps it by ~0.55, so both accept and reject paths are common.
const PROMPT = [1, 4, 10];
const GENERATIONS = 10_000;

/** The target's exact distribution of the first two new tokens: index t1 * V + t2. */
async function targetJoint(target: DecoderModel, params: SamplingParams): Promise<Float64Array> {
  const V = target.info.vocabSize;
  const last = (logits: Float32Array) => logits.subarray(logits.length - V);
  const p1 = toProbs(last(await target.forward(target.newCache(), PROMPT)), params);
  const joint = new Float64Array(V * V);
  for (let a = 0; a < V; a++) {
    if (p1[a] === 0) continue;
    const p2 = toProbs(last(await target.forward(target.newCache(), [...PROMPT, a])), params);
    for (let b = 0; b < V; b++) joint[a * V + b] = p1[a]! * p2[b]!;
  }
  return joint;
}

// The same pair with float32 weights, and quantized (4-bit target, 8-bit draft: MatMulNBits, quantized into a cache of its own).
for (const weights of [{ label: '' }, { label: ', q4 target, q8 draft', dtype: 'q4', draftDtype: 'q8' }]) {
describe(`speculative sampling end to end matches the target (fixture pair, vocab 12${weights.label})`, () => {
  let root: string;
  let pair: ModelPair;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'specd-'));
    process.env.SPECD_CACHE_DIR = join(root, 'cache');
    const p = writeFixturePair(root, { style: 'llama', vocabSize: VOCAB });
    pair = await ModelPair.load({ target: p.targetDir, draft: p.draftDir, threads: 1, draftThreads: 1, dtype: weights.dtype, draftDtype: weights.draftDtype });
    if (weights.dtype) assert.ok(pair.target.kvInPlace && pair.draft!.kvInPlace, 'the quantized pair runs in place');
  });
  after(async () => {
    await pair?.release();
    rmSync(root, { recursive: true, force: true });
  });

  /**
   * Generates GENERATIONS times (seeds 0..N-1) and counts the first two tokens. maxTokens 3 lets
   * fixed:2 draft 2 candidates in the first round (a round never drafts its last token).
   */
  async function sampleJoint(spec: PolicySpec, params: SamplingParams, maxTokens: number) {
    const V = VOCAB;
    const counts = new Float64Array(V * V);
    let drafted = 0;
    let accepted = 0;
    let rounds = 0;
    for (let seed = 0; seed < GENERATIONS; seed++) {
      const g = pair.decoder.start(PROMPT, { maxTokens, sampling: params, seed, policy: spec, eosTokenIds: [] });
      const out = await g.run();
      assert.equal(out.length, maxTokens);
      counts[out[0]! * V + out[1]!]!++;
      drafted += g.stats.draft_tokens;
      accepted += g.stats.accepted_tokens;
      rounds += g.stats.rounds;
    }
    return { counts, drafted, accepted, rounds };
  }

  const cases: { spec: PolicySpec; params: SamplingParams; maxTokens: number }[] = [
    { spec: { policy: 'fixed', k: 2 }, params: { temperature: 1, topK: 0, topP: 1 }, maxTokens: 3 },
    { spec: { policy: 'fixed', k: 1 }, params: { temperature: 1, topK: 0, topP: 1 }, maxTokens: 2 },
    { spec: { policy: 'fixed', k: 2 }, params: { temperature: 1.2, topK: 6, topP: 0.95 }, maxTokens: 3 },
  ];

  for (const { spec, params, maxTokens } of cases) {
    const label = `${policyLabel(spec)}, T=${params.temperature} top_k=${params.topK} top_p=${params.topP}`;
    test(label, async (t) => {
      const expected = await targetJoint(pair.target, params);
      const { counts, drafted, accepted, rounds } = await sampleJoint(spec, params, maxTokens);
      // Both the accept and the reject paths ran many times.
      assert.ok(accepted > 0.1 * GENERATIONS, `accepted ${accepted}`);
      assert.ok(drafted - accepted > 0.1 * GENERATIONS, `rejected ${drafted - accepted}`);
      assert.ok(rounds < GENERATIONS * maxTokens, 'speculation saved target calls');
      if (params.topK > 0) {
        const zero = expected.filter((x) => x === 0).length;
        assert.ok(zero > VOCAB * 5, `truncation removes many continuations (${zero} of ${VOCAB * VOCAB})`);
      }
      assertFits(counts, expected, label, t);
    });
  }

  // The confidence policy asks to drop a candidate because of its own sampled value; when
  // sampling the engine must keep it (and stop drafting) or the output is biased.
  test('confidence:0.3 (drops low-probability candidates), T=1', async (t) => {
    const spec: PolicySpec = { policy: 'confidence', pMin: 0.3, kMax: 4 };
    const params: SamplingParams = { temperature: 1, topK: 0, topP: 1 };
    const expected = await targetJoint(pair.target, params);
    const { counts, drafted, rounds } = await sampleJoint(spec, params, 3);
    t.diagnostic(`drafted ${drafted} in ${rounds} rounds`);
    assertFits(counts, expected, 'confidence:0.3', t);
  });

  test('the end-to-end statistic has power: the draft distribution is rejected as the target', async (t) => {
    // Sampling with the draft alone (draft as "target", policy none) must not fit the target's joint.
    const params: SamplingParams = { temperature: 1, topK: 0, topP: 1 };
    const expected = await targetJoint(pair.target, params);
    const counts = new Float64Array(VOCAB * VOCAB);
    const draftOnly = pair.draft!;
    const decoder = new SpeculativeDecoder(draftOnly);
    for (let seed = 0; seed < 2000; seed++) {
      const out = await decoder.start(PROMPT, { maxTokens: 2, sampling: params, seed, policy: { policy: 'none' }, eosTokenIds: [] }).run();
      counts[out[0]! * VOCAB + out[1]!]!++;
    }
    assertRejected(counts, expected, 'draft-only sampling', t);
  });
});
}
