/**
 * A draft-free proposal is a point mass: verified by the engine's acceptance rule
 * (src/engine/acceptance.ts) with q = one-hot(y), a candidate is accepted with probability
 * min(1, p(y)) and a rejection draws from norm(max(0, p - onehot(y))), so the output is
 * distributed as the target's. Here prompt lookup proposes from the text so far (it repeats
 * itself, so proposals are frequent and often wrong), toy target distributions over 6 tokens
 * verify, and the first three tokens' joint distribution is tested against the target's
 * (chi-square), with controls that a wrong rule is noticed. Greedy: accepted while equal to the
 * argmax, so the output equals the target's greedy output. No model.
 */
import assert from 'node:assert/strict';
import { describe, test, type TestContext } from 'node:test';
import { acceptGreedy, acceptSampled, type AcceptanceResult } from '../../src/engine/acceptance.js';
import { Rng } from '../../src/engine/rng.js';
import { sample } from '../../src/engine/sampling.js';
import { PromptLookup } from '../../src/proposers/ngram.js';
import { chiSquare } from '../support/statistics.js';
import { TOY_PROMPT, TOY_V, toyOneHot, toyTargetAt, toyTargetJoint } from '../support/toy-bigram.js';

const V = TOY_V;
const ALPHA = 1e-4;
const PROMPT = TOY_PROMPT;
const targetAt = toyTargetAt;

type Rule = (candidates: readonly number[], q: readonly Float64Array[], p: readonly Float64Array[], rng: Rng) => AcceptanceResult;
const oneHot = toyOneHot;

/** Generate `want` tokens: prompt lookup proposes, `rule` verifies against the toy target. */
function generate(rule: Rule, want: number, rng: Rng, stats = { proposed: 0, accepted: 0 }): number[] {
  const lookup = new PromptLookup(PROMPT, { promptLookupMin: 1, promptLookupMax: 2, numSpeculativeTokens: 3 });
  const text = [...PROMPT];
  while (text.length - PROMPT.length < want) {
    const { tokens } = lookup.propose();
    const p: Float64Array[] = [];
    for (let i = 0; i <= tokens.length; i++) p.push(targetAt([...text, ...tokens.slice(0, i)]));
    const r = rule(tokens, tokens.map(oneHot), p, rng);
    stats.proposed += tokens.length;
    stats.accepted += r.accepted;
    const verified = [...tokens.slice(0, r.accepted), r.next];
    text.push(...verified);
    lookup.extend(verified);
  }
  return text.slice(PROMPT.length, PROMPT.length + want);
}

const targetJoint = toyTargetJoint;

function counts(rule: Rule, trials: number, seed: number, stats?: { proposed: number; accepted: number }): Float64Array {
  const rng = new Rng(seed);
  const out = new Float64Array(V ** 3);
  for (let t = 0; t < trials; t++) {
    const [a, b, c] = generate(rule, 3, rng, stats);
    out[(a! * V + b!) * V + c!]!++;
  }
  return out;
}

const describeFit = (r: ReturnType<typeof chiSquare>) => `chi2 ${r.stat.toFixed(1)}, dof ${r.dof}, p ${r.pValue.toExponential(2)}, impossible ${r.impossible}`;

/** Wrong rules a point-mass proposal could tempt one into. */
const WRONG: Record<string, Rule> = {
  // Copying is free, so why not trust it: every candidate accepted.
  'accept every candidate': (c, _q, p, rng) => ({ accepted: c.length, next: sample(p[c.length]!, rng) }),
  // Recover from p itself instead of the residual norm(max(0, p - onehot(y))).
  'recover from p': (c, q, p, rng) => {
    for (let i = 0; i < c.length; i++) {
      if (!(rng.next() * q[i]![c[i]!]! <= p[i]![c[i]!]!)) return { accepted: i, next: sample(p[i]!, rng) };
    }
    return { accepted: c.length, next: sample(p[c.length]!, rng) };
  },
};

describe('point-mass proposals keep the output exact', () => {
  test('sampled: the first three tokens are distributed as the target samples them', (t: TestContext) => {
    const stats = { proposed: 0, accepted: 0 };
    const r = chiSquare(counts(acceptSampled, 60_000, 7, stats), targetJoint());
    t.diagnostic(`acceptSampled with one-hot q: ${describeFit(r)}; ${stats.accepted} of ${stats.proposed} candidates accepted`);
    assert.equal(r.impossible, 0, describeFit(r));
    assert.ok(r.pValue > ALPHA, describeFit(r));
    // Both paths ran: candidates were accepted and rejected in numbers.
    assert.ok(stats.proposed > 60_000 && stats.accepted > 0.1 * stats.proposed && stats.accepted < 0.9 * stats.proposed, JSON.stringify(stats));
  });

  test('the chi-square test notices wrong rules for point masses', (t: TestContext) => {
    for (const [name, rule] of Object.entries(WRONG)) {
      const r = chiSquare(counts(rule, 60_000, 7), targetJoint());
      t.diagnostic(`${name}: ${describeFit(r)}`);
      assert.ok(r.pValue < ALPHA, `${name}: ${describeFit(r)}`);
    }
  });

  test("greedy: the output is the target's greedy output", () => {
    const argmax = (p: Float64Array) => p.indexOf(Math.max(...p));
    const greedy: Rule = (c, _q, p) => acceptGreedy(c, p.map(argmax));
    const plain = [...PROMPT];
    for (let i = 0; i < 40; i++) plain.push(argmax(targetAt(plain)));
    const stats = { proposed: 0, accepted: 0 };
    assert.deepEqual(generate(greedy, 40, new Rng(1), stats), plain.slice(PROMPT.length));
    assert.ok(stats.accepted > 0 && stats.accepted < stats.proposed, JSON.stringify(stats));
  });
});
