/**
 * Logits rows without a sort of the vocabulary (sampling.ts, truncation.ts, token-probs.ts):
 * - toProbs equals a plain sort-based implementation of softmax / top-k / top-p (vLLM's order)
 *   on rows of every shape that matters: LM-like, flat, tied, grammar-masked, +Infinity, and at
 *   Qwen3's vocabulary of 151,936;
 * - sampling and the acceptance residual over a listed support give what a scan of the dense
 *   vector gives, draw for draw;
 * - at V = 151,936 with top-k and top-p, speculative sampling's output is distributed as the
 *   target's processed distribution (chi-square), and the same test rejects a wrong rule.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { acceptSampled, residual } from '../../src/engine/acceptance.js';
import { Rng } from '../../src/engine/rng.js';
import { sample, softmax, softmaxAt, toProbs, type SamplingParams } from '../../src/engine/sampling.js';
import { TokenProbs } from '../../src/engine/token-probs.js';
import { topKIds } from '../../src/engine/truncation.js';
import { chiSquare } from '../support/statistics.js';

/** Reference: softmax, a full sort (logit desc, id asc), top-k, renormalise, top-p, renormalise. */
function referenceProbs(row: Float32Array, params: SamplingParams): Float64Array {
  const V = row.length;
  const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => (row[b]! > row[a]! ? 1 : row[b]! < row[a]! ? -1 : a - b));
  const finite = order.filter((i) => row[i]! > -Infinity);
  const keepK = params.topK > 0 ? Math.min(params.topK, finite.length) : finite.length;
  const top = finite.slice(0, keepK);
  const best = row[top[0]!]!;
  const w = top.map((i) => (best === Infinity ? (row[i] === Infinity ? 1 : 0) : Math.exp((row[i]! - best) / params.temperature)));
  const total = w.reduce((a, b) => a + b, 0);
  let keep = top.length;
  if (params.topP < 1) {
    let mass = 0;
    for (let j = 0; j < top.length; j++) {
      mass += w[j]!;
      if (mass >= params.topP * total) {
        keep = j + 1;
        break;
      }
    }
  }
  const kept = w.slice(0, keep).reduce((a, b) => a + b, 0);
  const out = new Float64Array(V);
  for (let j = 0; j < keep; j++) out[top[j]!] = w[j]! / kept;
  return out;
}

function gaussian(rng: Rng): number {
  return Math.sqrt(-2 * Math.log(Math.max(rng.next(), 1e-12))) * Math.cos(2 * Math.PI * rng.next());
}

type Shape = 'lm' | 'flat' | 'ties' | 'masked' | 'infinite';

function makeRow(vocab: number, shape: Shape, rng: Rng): Float32Array {
  const row = new Float32Array(vocab);
  for (let i = 0; i < vocab; i++) {
    if (shape === 'lm' || shape === 'masked') row[i] = 2 * gaussian(rng);
    else if (shape === 'flat') row[i] = 0.3 * gaussian(rng);
    else row[i] = Math.floor(rng.next() * 4); // only four distinct values: ties everywhere
  }
  if (shape === 'lm' || shape === 'masked') for (let j = 0; j < Math.max(1, vocab / 500); j++) row[Math.floor(rng.next() * vocab)]! += 6 + 6 * rng.next();
  if (shape === 'masked') for (let i = 0; i < vocab; i++) if (rng.next() < 0.97) row[i] = -Infinity;
  if (shape === 'infinite') {
    row[Math.floor(rng.next() * vocab)] = Infinity;
    row[Math.floor(rng.next() * vocab)] = Infinity;
  }
  return row;
}

/** Same non-zero ids, values within 1e-12 (the two sum in different orders). */
function assertSameProbs(got: Float64Array, want: Float64Array, label: string): void {
  assert.equal(got.length, want.length, `${label}: length`);
  for (let i = 0; i < want.length; i++) {
    if ((got[i]! > 0) !== (want[i]! > 0)) assert.fail(`${label}: token ${i} has probability ${got[i]} against ${want[i]}`);
    assert.ok(Math.abs(got[i]! - want[i]!) <= 1e-12, `${label}: token ${i}: ${got[i]} against ${want[i]}`);
  }
  if (got instanceof TokenProbs) {
    const listed = Array.from(got.support);
    const nonZero = Array.from(want.keys()).filter((i) => want[i]! > 0);
    assert.deepEqual(listed, nonZero, `${label}: support`);
  }
}

const PARAMS: SamplingParams[] = [
  { temperature: 0.6, topK: 20, topP: 0.95 },
  { temperature: 1, topK: 0, topP: 0.95 },
  { temperature: 1, topK: 0, topP: 0.5 },
  { temperature: 1.3, topK: 5, topP: 1 },
  { temperature: 0.7, topK: 1, topP: 1 },
  { temperature: 1, topK: 0, topP: 1 },
  { temperature: 2, topK: 300, topP: 0.8 },
];

describe('toProbs without a sort equals the sort-based definition', () => {
  for (const vocab of [7, 259, 5000]) {
    test(`V = ${vocab}: every row shape and setting`, () => {
      const rng = new Rng(vocab);
      for (const shape of ['lm', 'flat', 'ties', 'masked', 'infinite'] as Shape[]) {
        for (let rep = 0; rep < 4; rep++) {
          const row = makeRow(vocab, shape, rng);
          if (!(Math.max(...row) > -Infinity)) continue; // a fully masked small row: tested below
          for (const params of PARAMS) {
            assertSameProbs(toProbs(row, params), referenceProbs(row, params), `V ${vocab} ${shape} ${JSON.stringify(params)}`);
          }
        }
      }
    });
  }

  test('V = 151,936 (Qwen3): LM-like, flat and grammar-masked rows', () => {
    const rng = new Rng(151_936);
    for (const shape of ['lm', 'flat', 'masked'] as Shape[]) {
      const row = makeRow(151_936, shape, rng);
      for (const params of [PARAMS[0]!, PARAMS[1]!]) assertSameProbs(toProbs(row, params), referenceProbs(row, params), `${shape} ${JSON.stringify(params)}`);
    }
  });

  test('the top-k selection ranks by logit, ties to the lower id', () => {
    const row = Float32Array.from([1, 5, 3, 5, -Infinity, 3, 0, NaN, 5]);
    assert.deepEqual(Array.from(topKIds(row, 4)), [1, 3, 8, 2]);
    assert.deepEqual(Array.from(topKIds(row, 20)), [1, 3, 8, 2, 5, 0, 6], 'NaN and -Infinity never kept');
  });

  test('a row with every token masked has no mass; a zero temperature is refused with the reason', () => {
    const row = new Float32Array(50).fill(-Infinity);
    for (const params of [{ temperature: 1, topK: 0, topP: 0.9 }, { temperature: 1, topK: 5, topP: 1 }]) {
      const probs = toProbs(row, params);
      assert.ok(probs instanceof TokenProbs);
      assert.equal(probs.support.length, 0);
      assert.ok(probs.every((p) => p === 0));
    }
    assert.throws(() => toProbs(new Float32Array(5), { temperature: 0, topK: 5, topP: 1 }), /temperature > 0/);
  });

  test('softmaxAt is one entry of softmax', () => {
    const row = makeRow(1000, 'lm', new Rng(5));
    const full = softmax(row, 0.8);
    for (const t of [0, 17, 999]) assert.ok(Math.abs(softmaxAt(row, t, 0.8) - full[t]!) <= 1e-15 + 1e-12 * full[t]!);
  });
});

describe('support-listed vectors sample and subtract as dense ones do', () => {
  test('sample draws the same tokens from a TokenProbs as from its dense copy', () => {
    const rng = new Rng(11);
    for (const params of [PARAMS[0]!, PARAMS[1]!, PARAMS[6]!]) {
      const probs = toProbs(makeRow(20_000, 'lm', rng), params);
      assert.ok(probs instanceof TokenProbs);
      const dense = Float64Array.from(probs);
      assert.ok(!(dense instanceof TokenProbs));
      const a = new Rng(3);
      const b = new Rng(3);
      for (let i = 0; i < 2000; i++) assert.equal(sample(probs, a), sample(dense, b));
    }
  });

  test('the residual over the support equals the dense residual', () => {
    const rng = new Rng(12);
    for (const params of [PARAMS[0]!, PARAMS[1]!]) {
      const base = makeRow(20_000, 'lm', rng);
      const p = toProbs(base, params);
      const q = toProbs(base.map((l) => l + 0.8 * gaussian(rng)), params);
      const sparse = residual(p, q);
      const dense = residual(Float64Array.from(p), Float64Array.from(q));
      assert.ok(sparse instanceof TokenProbs);
      assert.deepEqual(Array.from(sparse), Array.from(dense));
      assert.equal(residual(p, p), p, 'no residual mass: the target itself');
    }
  });
});

describe('speculative sampling at V = 151,936 with top-k and top-p is distributed as the target', () => {
  const V = 151_936;
  const DRAWS = 20_000;
  /** A target row and a draft row that agrees with it only in part (both accept and reject paths run). */
  function rows(seed: number): [Float32Array, Float32Array] {
    const rng = new Rng(seed);
    const target = makeRow(V, 'lm', rng);
    // Lift a handful of tokens to the top so the nucleus is a few dozen tokens wide.
    for (let j = 0; j < 30; j++) target[Math.floor(rng.next() * V)] = 14 + 2 * gaussian(rng);
    const draft = target.map((l) => l + 1.2 * gaussian(rng));
    return [target, draft];
  }

  function run(params: SamplingParams, wrongRecovery: boolean) {
    const [targetRow, draftRow] = rows(7);
    const p = toProbs(targetRow, params);
    const q = toProbs(draftRow, params);
    const bonus = toProbs(makeRow(V, 'lm', new Rng(8)), params);
    const rng = new Rng(9);
    const counts = new Float64Array(V);
    let accepted = 0;
    for (let n = 0; n < DRAWS; n++) {
      const y = sample(q, rng);
      const result = wrongRecovery
        ? rng.next() * q[y]! <= p[y]! ? { accepted: 1, next: 0 } : { accepted: 0, next: sample(p, rng) }
        : acceptSampled([y], [q], [p, bonus], rng);
      accepted += result.accepted;
      counts[result.accepted === 1 ? y : result.next]!++;
    }
    return { counts, accepted, reference: referenceProbs(targetRow, params) };
  }

  for (const params of [
    { temperature: 0.6, topK: 20, topP: 0.95 },
    { temperature: 1, topK: 0, topP: 0.95 },
  ]) {
    test(`T ${params.temperature}, top-k ${params.topK}, top-p ${params.topP}`, (t) => {
      const { counts, accepted, reference } = run(params, false);
      const fit = chiSquare(counts, reference);
      t.diagnostic(`accepted ${accepted} of ${DRAWS}; chi2 ${fit.stat.toFixed(1)}, dof ${fit.dof}, p-value ${fit.pValue.toExponential(2)}`);
      assert.ok(accepted > DRAWS * 0.1 && accepted < DRAWS * 0.95, `both paths run (accepted ${accepted} of ${DRAWS})`);
      assert.ok(fit.dof >= 5, `enough cells to test (${fit.dof})`);
      assert.equal(fit.impossible, 0, 'no token outside the target nucleus');
      assert.ok(fit.pValue > 1e-4, `distributed as the target (p-value ${fit.pValue})`);

      const wrong = run(params, true);
      const wrongFit = chiSquare(wrong.counts, wrong.reference);
      assert.ok(wrongFit.pValue < 1e-4, `recovering from p instead of the residual is noticed (p-value ${wrongFit.pValue})`);
    });
  }
});
