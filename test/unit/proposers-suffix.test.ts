/**
 * Suffix decoding (src/proposers/suffix.ts) and the online acceptance by match length
 * (src/proposers/acceptance-by-match.ts): a request that repeats its prompt is proposed the
 * rest of the passage, earlier outputs are proposed through the bounded global cache (FIFO
 * eviction, off at 0) and shared by an engine's requests per tree shape, the better-scoring tree wins, options are refused by name; acceptance
 * rates converge to the observed ones and expected lengths follow the chain rule. No model.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Rng } from '../../src/engine/rng.js';
import { AcceptanceByMatchLength, expectedAcceptedFromHead } from '../../src/proposers/acceptance-by-match.js';
import { ProposerOptionError } from '../../src/proposers/proposal.js';
import { DraftFreeProposer } from '../../src/proposers/draft-free.js';
import { MAX_SHARED_SUFFIX_CACHES, SUFFIX_DECODING_DEFAULTS, SuffixCachePool, SuffixDecodingCache, suffixDecodingOptions } from '../../src/proposers/suffix.js';

/** Distinct tokens (a passage with no internal repeats). */
const passage = (n: number, base: number) => Array.from({ length: n }, (_, i) => base + ((i * 7919) % 5003));

/**
 * Greedy rounds against a known output: each round proposes, the target accepts the common
 * prefix of proposal and truth and emits one more true token. Returns the number of rounds.
 */
function rounds(request: { propose(): { tokens: number[] }; extend(t: readonly number[]): void }, truth: readonly number[]): number {
  let at = 0;
  let n = 0;
  while (at < truth.length) {
    const { tokens } = request.propose();
    let a = 0;
    while (a < tokens.length && at + a < truth.length && tokens[a] === truth[at + a]) a++;
    const emitted = truth.slice(at, Math.min(truth.length, at + a + 1));
    request.extend(emitted);
    at += emitted.length;
    n++;
  }
  return n;
}

describe('suffix decoding', () => {
  test("a request that copies its prompt's passage: proposals grow with the match, up to the depth", () => {
    const cache = new SuffixDecodingCache({ maxCachedRequests: 0 });
    const text = passage(300, 1000);
    const request = cache.start([1, 2, ...text, 3, 4]);
    request.extend(text.slice(0, 2));
    // A 2-token match: factor 1 allows 2 tokens.
    let p = request.propose();
    assert.deepEqual([p.tokens, p.matchLength], [text.slice(2, 4), 2]);
    request.extend(text.slice(2, 12));
    // A 12-token match in a 24-deep tree: 12 tokens, each certain (the passage occurs once before).
    p = request.propose();
    assert.deepEqual([p.tokens, p.matchLength], [text.slice(12, 24), 12]);
    assert.deepEqual(p.probs, new Array(12).fill(0.5), 'the current occurrence counts too: 1 of 2 windows continues');
    // The whole passage copied in far fewer rounds than tokens.
    const n = rounds(request, text.slice(12));
    assert.ok(n < (300 - 12) / 5, `${n} rounds for ${300 - 12} tokens`);
  });

  test("earlier outputs are proposed through the global cache; without it they are not", () => {
    const answer = passage(120, 20_000);
    for (const maxCachedRequests of [0, 4]) {
      const cache = new SuffixDecodingCache({ maxCachedRequests });
      const first = cache.start([5, 6, 7]);
      first.extend(answer);
      first.finish();
      first.finish(); // idempotent
      assert.equal(cache.cachedRequests, maxCachedRequests ? 1 : 0);
      const second = cache.start([8, 9, 10]);
      second.extend(answer.slice(0, 6));
      const p = second.propose();
      if (maxCachedRequests) assert.deepEqual([p.tokens, p.matchLength], [answer.slice(6, 12), 6]);
      else assert.deepEqual(p.tokens, []);
      assert.throws(() => first.extend([1]), /has finished/);
    }
  });

  test('the global cache keeps the newest outputs (FIFO eviction)', () => {
    const cache = new SuffixDecodingCache({ maxCachedRequests: 2 });
    const outputs = [passage(40, 30_000), passage(40, 40_000), passage(40, 50_000)];
    for (const out of outputs) {
      const r = cache.start([1]);
      r.extend(out);
      r.finish();
    }
    assert.equal(cache.cachedRequests, 2);
    const proposed = outputs.map((out) => {
      const r = cache.start([2]);
      r.extend(out.slice(0, 4));
      return r.propose().tokens;
    });
    assert.deepEqual(proposed, [[], outputs[1]!.slice(4, 8), outputs[2]!.slice(4, 8)]);
  });

  test("an engine's pool shares a global tree per tree shape between proposers; requests keep their own proposal knobs", () => {
    const pool = new SuffixCachePool();
    const answer = passage(80, 60_000);
    const finish = (p: DraftFreeProposer) => {
      p.add(0, [1, 2]);
      p.extend(0, answer);
      p.remove(0);
    };
    // One proposer per request, as the engine builds them; the first request's output reaches the second.
    finish(new DraftFreeProposer({ methods: ['suffix'], suffix: { maxCachedRequests: 2 }, suffixCaches: pool }));
    assert.equal(pool.cachedRequests, 1);
    const next = new DraftFreeProposer({ methods: ['suffix'], suffix: { maxCachedRequests: 2, maxSpecFactor: 3 }, suffixCaches: pool });
    next.add(0, [3, 4]);
    next.extend(0, answer.slice(0, 4));
    assert.deepEqual(next.propose([0])[0]!.tokens, answer.slice(4, 16), 'factor 3 x match 4: its own knob over the shared tree');
    // A sequence that must not depend on earlier requests (seeded sampling) does not read the tree; its output is cached all the same.
    const seeded = new DraftFreeProposer({ methods: ['suffix'], suffix: { maxCachedRequests: 2 }, suffixCaches: pool, readsGlobalCache: false });
    seeded.add(0, [3, 4]);
    seeded.extend(0, answer.slice(0, 4));
    assert.deepEqual(seeded.propose([0])[0]!.tokens, []);
    seeded.remove(0);
    assert.equal(pool.cachedRequests, 2);
    // Another shape (no global tree, or another depth) does not see it.
    for (const suffix of [{ maxCachedRequests: 0 }, { maxCachedRequests: 2, maxTreeDepth: 12 }]) {
      const other = new DraftFreeProposer({ methods: ['suffix'], suffix, suffixCaches: pool });
      other.add(0, [3, 4]);
      other.extend(0, answer.slice(0, 4));
      assert.deepEqual(other.propose([0])[0]!.tokens, [], JSON.stringify(suffix));
    }
    // Bounded: beyond MAX_SHARED_SUFFIX_CACHES shapes the least recently used goes.
    for (let depth = 30; depth < 30 + MAX_SHARED_SUFFIX_CACHES; depth++) pool.get(suffixDecodingOptions({ maxTreeDepth: depth }));
    assert.equal(pool.cachedRequests, 0);
    finish(new DraftFreeProposer({ methods: ['suffix'], suffixCaches: pool }));
    assert.equal(pool.cachedRequests, 1);
    pool.clear();
    assert.equal(pool.cachedRequests, 0);
    assert.throws(() => new SuffixDecodingCache({ maxTreeDepth: 8 }).start([1], suffixDecodingOptions({ maxTreeDepth: 9 })), /tree depth 9 in a cache of depth 8/);
  });

  test("the better score wins: the global tree's frequent continuation over the request's rare one", () => {
    const cache = new SuffixDecodingCache({ minTokenProb: 0 });
    // Three earlier outputs continue [1 2 3] with [4 5 6 7].
    for (let i = 0; i < 3; i++) {
      const r = cache.start([0]);
      r.extend([1, 2, 3, 4, 5, 6, 7, 90 + i]);
      r.finish();
    }
    // This request's prompt continued [1 2 3] once with [8 ...]; its own tree scores 0.5 per token.
    const r = cache.start([1, 2, 3, 8, 8, 8, 8]);
    r.extend([1, 2, 3]);
    const p = r.propose();
    assert.deepEqual(p.tokens, [4, 5, 6]);
    assert.ok(Math.abs(p.score! - 3) < 1e-12, String(p.score));
  });

  test('num_speculative_tokens and the round budget cap a proposal', () => {
    const text = passage(100, 1000);
    // Depth 24: a match of m tokens leaves 24 - m to propose and the factor allows m; 12 is the best split.
    const free = new SuffixDecodingCache({ maxCachedRequests: 0 }).start(text);
    free.extend(text.slice(0, 20));
    assert.deepEqual([free.propose().tokens, free.propose().matchLength], [text.slice(20, 32), 12]);
    const capped = new SuffixDecodingCache({ numSpeculativeTokens: 5, maxCachedRequests: 0 }).start(text);
    capped.extend(text.slice(0, 20));
    assert.deepEqual(capped.propose().tokens, text.slice(20, 25));
    assert.deepEqual(capped.propose(2).tokens, text.slice(20, 22));
  });

  test('options: defaults as vLLM, errors name the option', () => {
    assert.deepEqual(suffixDecodingOptions(), { ...SUFFIX_DECODING_DEFAULTS, numSpeculativeTokens: 24 });
    const bad: [Parameters<typeof suffixDecodingOptions>[0], string][] = [
      [{ maxTreeDepth: 0 }, 'suffix_decoding_max_tree_depth'],
      [{ maxCachedRequests: -1 }, 'suffix_decoding_max_cached_requests'],
      [{ maxSpecFactor: -0.5 }, 'suffix_decoding_max_spec_factor'],
      [{ minTokenProb: 1.5 }, 'suffix_decoding_min_token_prob'],
      [{ minTokenProb: Number.NaN }, 'suffix_decoding_min_token_prob'],
      [{ numSpeculativeTokens: 0 }, 'num_speculative_tokens'],
    ];
    for (const [given, option] of bad) {
      assert.throws(
        () => new SuffixDecodingCache(given),
        (e: unknown) => e instanceof ProposerOptionError && e.option === option && e.message.startsWith(option),
        JSON.stringify(given),
      );
    }
  });
});

describe('acceptance by match length', () => {
  test('rates converge to what is observed, per bucket and position', () => {
    const rng = new Rng(3);
    const tracker = new AcceptanceByMatchLength({ decay: 1, maxMatchLength: 16, maxPosition: 32, priorRate: 0.5 });
    // Match length 2: each position accepted with 0.3; match length 8: with 0.9.
    for (let i = 0; i < 4000; i++) {
      for (const [m, rate] of [
        [2, 0.3],
        [8, 0.9],
      ] as const) {
        let a = 0;
        while (a < 6 && rng.next() < rate) a++;
        tracker.observe(m, 6, a);
      }
    }
    // Within 4 standard errors: position j is verified in 4000 r^(j-1) rounds.
    for (const j of [1, 2, 3]) {
      for (const [m, r] of [
        [2, 0.3],
        [8, 0.9],
      ] as const) {
        const se = Math.sqrt((r * (1 - r)) / (4000 * r ** (j - 1)));
        assert.ok(Math.abs(tracker.rate(m, j) - r) < 4 * se, `m ${m}, position ${j}: ${tracker.rate(m, j)} (se ${se})`);
      }
    }
    // E = sum_j r^j
    const chain = (r: number, k: number) => Array.from({ length: k }, (_, j) => r ** (j + 1)).reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(tracker.expectedAccepted(8, 6) - chain(0.9, 6)) < 0.15, String(tracker.expectedAccepted(8, 6)));
    assert.ok(tracker.expectedAccepted(8, 6) > 3 * tracker.expectedAccepted(2, 6));
    // Unseen bucket: the prior (0.5 per position).
    assert.ok(Math.abs(tracker.expectedAccepted(5, 2) - (0.5 + 0.25)) < 1e-12);
    assert.equal(tracker.expectedAccepted(8, 0), 0);
    // Long matches share the last bucket.
    assert.equal(tracker.rate(40, 1), tracker.rate(16, 1));
  });

  test('the defaults: matches of 4 and more share a bucket, positions 4 and later a rate, an unseen cell is at 0.6', () => {
    const tracker = new AcceptanceByMatchLength();
    assert.ok(Math.abs(tracker.expectedAccepted(9, 2) - (0.6 + 0.36)) < 1e-12);
    for (let i = 0; i < 50; i++) tracker.observe(6, 8, 8);
    assert.equal(tracker.rate(4, 1), tracker.rate(30, 1));
    assert.notEqual(tracker.rate(3, 1), tracker.rate(4, 1));
    assert.equal(tracker.rate(6, 4), tracker.rate(6, 20));
    assert.notEqual(tracker.rate(6, 3), tracker.rate(6, 4));
  });

  test('decay follows a change; observations out of range are refused', () => {
    const tracker = new AcceptanceByMatchLength({ decay: 0.9, priorRate: 0.5 });
    for (let i = 0; i < 100; i++) tracker.observe(3, 4, 4);
    assert.ok(tracker.rate(3, 1) > 0.9, String(tracker.rate(3, 1)));
    for (let i = 0; i < 60; i++) tracker.observe(3, 4, 0);
    assert.ok(tracker.rate(3, 1) < 0.1, `after the text stops repeating: ${tracker.rate(3, 1)}`);
    assert.throws(() => tracker.observe(3, 2, 3), /accepted \(3\) must be an integer in \[0, proposed = 2\]/);
    assert.throws(() => tracker.observe(0, 2, 1), /match length must be >= 1/);
    assert.throws(() => new AcceptanceByMatchLength({ decay: 0 }), ProposerOptionError);
  });

  test("the head's expected accepted length is the chain of its probabilities", () => {
    assert.ok(Math.abs(expectedAcceptedFromHead([0.9, 0.8, 0.5]) - (0.9 + 0.72 + 0.36)) < 1e-12);
    assert.equal(expectedAcceptedFromHead([]), 0);
  });
});
