/**
 * The suffix tree of suffix decoding (src/proposers/suffix-tree.ts): after any interleaving of
 * appends to several sequences and removals, every node's count is the number of depth-bounded
 * windows that reach it, and `speculate` proposes exactly what counting the windows by brute
 * force gives (most frequent continuation, probabilities as count ratios, the caps of
 * max_spec_factor / max_spec_offset / min_token_prob, the best-scoring match length). No model.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Rng } from '../../src/engine/rng.js';
import { type SpeculateOptions, SuffixTree } from '../../src/proposers/suffix-tree.js';

/** Every window: the first min(depth, rest) tokens of every suffix of every sequence. */
function windows(seqs: Iterable<readonly number[]>, depth: number): number[][] {
  const out: number[][] = [];
  for (const s of seqs) for (let i = 0; i < s.length; i++) out.push(s.slice(i, i + depth));
  return out;
}

/** count(S): windows that start with S. */
function count(ws: readonly number[][], s: readonly number[]): number {
  let n = 0;
  for (const w of ws) {
    if (w.length < s.length) continue;
    let same = true;
    for (let i = 0; i < s.length && same; i++) same = w[i] === s[i];
    if (same) n++;
  }
  return n;
}

/** Suffix decoding's speculation, from window counts alone. */
function reference(ws: number[][], depth: number, context: readonly number[], o: SpeculateOptions) {
  let best = { tokens: [] as number[], probs: [] as number[], score: 0, matchLength: 0 };
  for (let m = 1; m <= Math.min(context.length - 1, depth); m++) {
    const path = context.slice(context.length - m);
    if (count(ws, path) === 0) break;
    const cap = Math.max(0, Math.min(o.maxSpecTokens, Math.floor(m * o.maxSpecFactor + o.maxSpecOffset + 1e-6)));
    const tokens: number[] = [];
    const probs: number[] = [];
    let prob = 1;
    let score = 0;
    while (tokens.length < cap) {
      const here = count(ws, path);
      let bestT = -1;
      let bestC = 0;
      for (const t of new Set(ws.flat())) {
        const c = count(ws, [...path, t]);
        if (c > bestC || (c === bestC && c > 0 && t < bestT)) [bestT, bestC] = [t, c];
      }
      if (bestC === 0) break;
      const p = (prob * bestC) / here;
      if (p < o.minTokenProb) break;
      prob = p;
      tokens.push(bestT);
      probs.push(prob);
      score += prob;
      path.push(bestT);
    }
    if (score >= best.score) best = { tokens, probs, score, matchLength: m };
  }
  return best;
}

function assertSameDraft(actual: ReturnType<SuffixTree['speculate']>, expected: ReturnType<typeof reference>, what: string) {
  assert.deepEqual(actual.tokens, expected.tokens, what);
  assert.equal(actual.matchLength, expected.matchLength, what);
  assert.equal(actual.probs.length, expected.probs.length, what);
  actual.probs.forEach((p, i) => assert.ok(Math.abs(p - expected.probs[i]!) < 1e-9, `${what}: prob ${i} ${p} vs ${expected.probs[i]}`));
  assert.ok(Math.abs(actual.score - expected.score) < 1e-9, what);
}

const OPTS: SpeculateOptions = { maxSpecTokens: 16, maxSpecFactor: 1, maxSpecOffset: 0, minTokenProb: 0.1 };

describe('suffix tree', () => {
  test('a hand example: counts become probabilities', () => {
    const tree = new SuffixTree(8);
    // "a b c" twice, then "a b d" once: after "a b", c has 2 of 3 windows.
    tree.extend(0, [1, 2, 3, 9, 1, 2, 3, 9, 1, 2, 4, 9]);
    assert.equal(tree.checkIntegrity(), undefined);
    const d = tree.speculate([7, 1, 2], { ...OPTS, minTokenProb: 0 });
    assert.equal(d.matchLength, 2);
    assert.deepEqual(d.tokens, [3, 9]);
    assert.ok(Math.abs(d.probs[0]! - 2 / 3) < 1e-12 && Math.abs(d.probs[1]! - 2 / 3) < 1e-12, String(d.probs));
    // max_spec_factor 0.5 of a 2-token match: 1 token; min_token_prob above 2/3: none.
    assert.deepEqual(tree.speculate([7, 1, 2], { ...OPTS, maxSpecFactor: 0.5 }).tokens, [3]);
    assert.deepEqual(tree.speculate([7, 1, 2], { ...OPTS, minTokenProb: 0.7 }).tokens, []);
    // max_spec_offset adds to the cap; max_spec_tokens bounds it.
    assert.equal(tree.speculate([7, 1, 2], { ...OPTS, maxSpecFactor: 0, maxSpecOffset: 2, minTokenProb: 0 }).tokens.length, 2);
    assert.equal(tree.speculate([7, 1, 2], { ...OPTS, maxSpecTokens: 1 }).tokens.length, 1);
    // Nothing occurs: no proposal.
    assert.deepEqual(tree.speculate([5, 6], OPTS), { tokens: [], probs: [], score: 0, matchLength: 0 });
  });

  test('depth bounds the windows: match + proposal never exceed it', () => {
    const tree = new SuffixTree(4);
    tree.extend(0, [1, 2, 3, 4, 5, 6, 7, 8]);
    // [1 2 3] continues with [4] only (4 tokens deep); [2 3] with [4 5], the better score.
    const d = tree.speculate([0, 1, 2, 3], { ...OPTS, minTokenProb: 0 });
    assert.deepEqual([d.tokens, d.matchLength], [[4, 5], 2]);
    assert.deepEqual(tree.speculate([0, 1], { ...OPTS, minTokenProb: 0 }).tokens, [2]);
    assert.deepEqual(tree.speculate([9, 5], { ...OPTS, maxSpecFactor: 8, minTokenProb: 0 }).tokens, [6, 7, 8]);
  });

  test('random appends to interleaved sequences and removals: counts and proposals equal brute force', () => {
    const rng = new Rng(5);
    const int = (n: number) => Math.floor(rng.next() * n);
    for (const [depth, vocab] of [
      [1, 3],
      [3, 3],
      [6, 4],
      [8, 6],
    ] as const) {
      const tree = new SuffixTree(depth);
      const live = new Map<number, number[]>();
      let nextId = 0;
      for (let step = 0; step < 160; step++) {
        const r = rng.next();
        if (r < 0.08 && live.size > 1) {
          const id = [...live.keys()][int(live.size)]!;
          tree.remove(id);
          live.delete(id);
        } else {
          const id = r < 0.2 || live.size === 0 ? nextId++ : [...live.keys()][int(live.size)]!;
          const tokens = Array.from({ length: 1 + int(5) }, () => int(vocab));
          tree.extend(id, tokens);
          live.set(id, [...(live.get(id) ?? []), ...tokens]);
        }
        assert.equal(tree.checkIntegrity(), undefined, `depth ${depth}, step ${step}`);
        const ws = windows(live.values(), depth);
        const context = Array.from({ length: 1 + int(depth + 2) }, () => int(vocab));
        const opts: SpeculateOptions = { maxSpecTokens: 1 + int(8), maxSpecFactor: [0.5, 1, 2][int(3)]!, maxSpecOffset: int(2), minTokenProb: [0, 0.1, 0.4][int(3)]! };
        assertSameDraft(tree.speculate(context, opts), reference(ws, depth, context, opts), `depth ${depth}, step ${step}, context ${context}`);
      }
      for (const id of [...live.keys()]) tree.remove(id);
      assert.equal(tree.nodeCount(), 1, 'removing every sequence leaves the root alone');
      assert.equal(tree.sequenceCount, 0);
    }
  });

  test('compressed edges: nodes grow with the tokens, not tokens x depth', () => {
    const rng = new Rng(9);
    const tree = new SuffixTree(24);
    const tokens = Array.from({ length: 20_000 }, () => Math.floor(rng.next() * 50_000));
    tree.extend(0, tokens);
    assert.ok(tree.nodeCount() <= 2 * tokens.length + 1, `${tree.nodeCount()} nodes for ${tokens.length} tokens`);
    assert.equal(tree.checkIntegrity(), undefined);
  });

  test('bad depth and unknown sequence are refused', () => {
    assert.throws(() => new SuffixTree(0), /depth must be an integer >= 1, got 0/);
    assert.throws(() => new SuffixTree(8).remove(3), /no sequence 3/);
  });
});
