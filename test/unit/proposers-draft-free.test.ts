/**
 * Draft-free proposers for a batch (src/proposers/draft-free.ts) and the hybrid's choice
 * (src/proposers/hybrid.ts): per sequence the better of prompt lookup and suffix decoding by
 * expected accepted length, a batch budget spent on the likeliest candidates, acceptance learned
 * from observed rounds, a finished output cached for the next request; the draft skipped only
 * where a draft-free proposal is expected to do at least as well; counters per method. No model.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DraftFreeProposer } from '../../src/proposers/draft-free.js';
import { chooseAfterDraft, copiedLengthByCost, copiedTail, DraftAcceptanceMean, skipDraft } from '../../src/proposers/hybrid.js';
import { MethodStats } from '../../src/proposers/method-stats.js';
import { ProposerOptionError } from '../../src/proposers/proposal.js';

const passage = (n: number, base: number) => Array.from({ length: n }, (_, i) => base + ((i * 7919) % 5003));

describe('draft-free proposer', () => {
  test('one sequence: proposes, learns from what is accepted, extends with what is verified', () => {
    const text = passage(200, 1000);
    const proposer = new DraftFreeProposer<string>({ methods: ['ngram'], ngram: { numSpeculativeTokens: 6 } });
    proposer.add('a', [...text, 7, 7]);
    proposer.extend('a', text.slice(0, 5));
    const [p] = proposer.propose(['a']);
    assert.equal(p!.method, 'ngram');
    assert.deepEqual(p!.tokens, text.slice(5, 11));
    const before = p!.expectedAccepted;
    // Every candidate accepted, plus the bonus token.
    proposer.observe('a', p, 6, text.slice(5, 12));
    const [q] = proposer.propose(['a']);
    assert.deepEqual(q!.tokens, text.slice(12, 18));
    assert.ok(q!.expectedAccepted > before, `${q!.expectedAccepted} after a fully accepted round, ${before} before`);
    assert.throws(() => proposer.propose(['b']), /sequence b is not tracked/);
    assert.throws(() => proposer.add('a', [1]), /already tracked/);
  });

  test("a greedy round the draft won still teaches the displaced proposal's acceptance, judged up to what was emitted", () => {
    const text = passage(200, 1000);
    const proposer = new DraftFreeProposer({ methods: ['ngram'], ngram: { numSpeculativeTokens: 6 } });
    proposer.add(0, [...text, 7, 7]);
    proposer.extend(0, text.slice(0, 5));
    const [p] = proposer.propose([0]);
    const rate = (j: number) => proposer.acceptance.ngram.rate(p!.matchLength, j);
    const before = [1, 2, 3].map(rate);
    // The round emitted 3 tokens, the first 2 equal to the proposal's: candidates 1-2 accepted,
    // 3 rejected, 4-6 never judged.
    proposer.observeUnverified(0, p, [...text.slice(5, 7), 9999]);
    assert.ok(rate(1) > before[0]! && rate(2) > before[1]! && rate(3) < before[2]!, `${[1, 2, 3].map(rate)} after, ${before} before`);
    // The emitted tokens extend the sequence: the next proposal continues after them.
    const [q] = proposer.propose([0]);
    assert.notDeepEqual(q!.tokens, text.slice(8, 14), 'the text went on with 9999');
    // Emitted tokens that all agree: every judged candidate accepted, none rejected.
    const fresh = new DraftFreeProposer({ methods: ['ngram'], ngram: { numSpeculativeTokens: 6 } });
    fresh.add(0, [...text, 7, 7]);
    fresh.extend(0, text.slice(0, 5));
    const [r] = fresh.propose([0]);
    const first = fresh.acceptance.ngram.rate(r!.matchLength, 3);
    fresh.observeUnverified(0, r, text.slice(5, 7));
    assert.equal(fresh.acceptance.ngram.rate(r!.matchLength, 3), first, 'candidate 3 was not judged');
    assert.ok(fresh.acceptance.ngram.rate(r!.matchLength, 2) > first);
  });

  test('both methods: the larger expected accepted length wins per sequence', () => {
    const text = passage(100, 1000);
    const proposer = new DraftFreeProposer({ methods: ['ngram', 'suffix'], ngram: { promptLookupMin: 1, promptLookupMax: 1, numSpeculativeTokens: 4 } });
    // Teach the trackers: ngram's 1-token matches are always rejected.
    for (let i = 0; i < 30; i++) proposer.acceptance.ngram.observe(1, 4, 0);
    proposer.add(0, text);
    proposer.extend(0, text.slice(0, 8));
    const [p] = proposer.propose([0]);
    assert.equal(p!.method, 'suffix');
    assert.deepEqual(p!.tokens, text.slice(8, 16));
  });

  test("a batch's budget goes to the likeliest candidates", () => {
    const proposer = new DraftFreeProposer({ methods: ['ngram'], ngram: { promptLookupMin: 1, promptLookupMax: 4, numSpeculativeTokens: 5 } });
    // 4-token matches are accepted often, 1-token matches seldom.
    for (let i = 0; i < 50; i++) {
      proposer.acceptance.ngram.observe(4, 5, 5);
      proposer.acceptance.ngram.observe(1, 5, 0);
    }
    const a = passage(50, 1000);
    const b = passage(50, 9000);
    proposer.add(0, [...a, 1]);
    proposer.add(1, [...b, 2]);
    proposer.extend(0, a.slice(0, 4)); // a 4-token match
    proposer.extend(1, [b[10]!]); // a 1-token match
    const full = proposer.propose([0, 1]);
    assert.deepEqual(full.map((p) => [p.matchLength, p.tokens.length]), [
      [4, 5],
      [1, 5],
    ]);
    const cut = proposer.propose([0, 1], 6);
    assert.deepEqual(cut.map((p) => p.tokens.length), [5, 1]);
    assert.deepEqual(cut[0]!.tokens, a.slice(4, 9));
    assert.ok(cut[1]!.expectedAccepted < full[1]!.expectedAccepted);
    assert.deepEqual(proposer.propose([0, 1], 0).map((p) => [p.tokens.length, p.method]), [
      [0, undefined],
      [0, undefined],
    ]);
  });

  test("a finished sequence's output is proposed to the next (suffix); a cancelled one's is not", () => {
    const answer = passage(60, 30_000);
    for (const finished of [true, false]) {
      const proposer = new DraftFreeProposer({ methods: ['suffix'] });
      proposer.add(1, [1, 2, 3]);
      proposer.extend(1, answer);
      proposer.remove(1, finished);
      assert.equal(proposer.size, 0);
      proposer.add(2, [4, 5, 6]);
      proposer.extend(2, answer.slice(0, 5));
      assert.deepEqual(proposer.propose([2])[0]!.tokens, finished ? answer.slice(5, 10) : []);
    }
  });

  test('a byte-level vocabulary gets longer matches and deeper trees; given knobs win', () => {
    const text = passage(200, 10);
    const byte = new DraftFreeProposer({ methods: ['suffix', 'ngram'], vocabSize: 259 });
    const subword = new DraftFreeProposer({ methods: ['suffix', 'ngram'], vocabSize: 151_936 });
    for (const p of [byte, subword]) {
      p.add(0, text);
      p.extend(0, text.slice(0, 40));
    }
    assert.equal(byte.maxTokens, 64);
    assert.equal(subword.maxTokens, 24);
    // A 40-token match: 24 deep leaves the best split at 12; 64 deep, 32.
    assert.deepEqual(byte.propose([0])[0]!.tokens, text.slice(40, 72));
    assert.deepEqual(subword.propose([0])[0]!.tokens, text.slice(40, 52));
    const given = new DraftFreeProposer({ methods: ['ngram'], vocabSize: 259, ngram: { numSpeculativeTokens: 3 } });
    assert.equal(given.maxTokens, 3);
  });

  test('bad methods are refused by name', () => {
    assert.throws(() => new DraftFreeProposer({ methods: [] }), (e: unknown) => e instanceof ProposerOptionError && e.option === 'method');
    assert.throws(() => new DraftFreeProposer({ methods: ['eagle' as 'ngram'] }), /unknown draft-free method 'eagle'/);
    assert.throws(() => new DraftFreeProposer({ methods: ['suffix'], suffix: { minTokenProb: 2 } }), /suffix_decoding_min_token_prob/);
  });
});

describe('hybrid choice', () => {
  test('the draft is skipped only where the draft-free proposal is expected to do at least as well', () => {
    const mean = new DraftAcceptanceMean();
    assert.equal(skipDraft(5, mean.value), false, 'an unmeasured draft drafts');
    mean.observe(3);
    mean.observe(2);
    assert.ok(Math.abs(mean.value! - 2.8) < 1e-12);
    assert.equal(skipDraft(3.5, mean.value), true);
    assert.equal(skipDraft(2.5, mean.value), false);
    assert.equal(skipDraft(0, 0), false, 'nothing proposed: the draft drafts');
    // With measured costs: tokens per ms. A draft round of 4 candidates, 2 accepted, costs T(5) + 4 D = 14 + 4 x 4 = 30 ms for 3 tokens;
    // copying 8 candidates costs T(9) = 18 ms, so it pays from 1 + E_free >= 1.8.
    const costs = { verifyMs: (n: number) => 10 + n, draftStepMs: 4 };
    assert.equal(skipDraft(0.8, 2, 8, 4, { verifyMs: (n) => (n === 5 ? 14 : 18), draftStepMs: 4 }), true);
    assert.equal(skipDraft(0.7, 2, 8, 4, { verifyMs: (n) => (n === 5 ? 14 : 18), draftStepMs: 4 }), false);
    assert.equal(skipDraft(0.8, 2, 8, 4), false, 'without costs: E_free against E_draft');
    assert.equal(skipDraft(0, 2, 0, 4, costs), false, 'nothing proposed: the draft drafts');
    assert.equal(chooseAfterDraft(2.5, 2.4, true), 'draft-free');
    assert.equal(chooseAfterDraft(2.4, 2.4, true), 'draft');
    assert.equal(chooseAfterDraft(2.5, 2.4, false), 'draft', 'sampling: a round that drafted verifies the draft');
    assert.throws(() => new DraftAcceptanceMean(0), /weight must be a number in/);
  });

  test('after drafting, with measured costs: tokens per ms of the two verifications', () => {
    // T(n) = 10 + 2 n. Copying 8 with E 2.5: 3.5 / 28 = 0.125 per ms; the draft's 2 with E 1.5: 2.5 / 16 = 0.156.
    const costs = { verifyMs: (n: number) => 10 + 2 * n };
    assert.equal(chooseAfterDraft(2.5, 1.5, true, { free: 8, draft: 2 }, costs), 'draft', 'more expected, but slower per ms');
    assert.equal(chooseAfterDraft(2.5, 1.5, true, { free: 8, draft: 2 }), 'draft-free', 'lengths without costs: expected lengths alone');
    assert.equal(chooseAfterDraft(2.5, 1.5, true), 'draft-free');
    // Copying 3 with E 2.5: 3.5 / 18 = 0.194 per ms beats 0.156.
    assert.equal(chooseAfterDraft(2.5, 1.5, true, { free: 3, draft: 2 }, costs), 'draft-free');
    assert.equal(chooseAfterDraft(2.5, 1.5, false, { free: 3, draft: 2 }, costs), 'draft', 'sampling: the draft');
  });

  test('a copied proposal is cut to the length with the most tokens per ms', () => {
    // T(n) = 10 + 2 n; rates 0.9, 0.9, 0.3, 0.3: E = 0.9, 1.71, 1.953, 2.026; rate(k) = (1 + E) / (12 + 2 k):
    // k = 0: 0.083, 1: 0.136, 2: 0.169, 3: 0.164, 4: 0.151, so 2.
    const verifyMs = (n: number) => 10 + 2 * n;
    const cut = copiedLengthByCost([0.9, 0.9, 0.3, 0.3], verifyMs);
    assert.equal(cut.length, 2);
    assert.ok(Math.abs(cut.expected - 1.71) < 1e-12);
    assert.equal(copiedLengthByCost([0.9, 0.9, 0.3, 0.3], () => 10).length, 4, 'rows that cost nothing: every candidate');
    assert.equal(copiedLengthByCost([0.01, 0.9], verifyMs).length, 0, 'a first candidate unlikely to pass its row: none');
    assert.deepEqual(copiedLengthByCost([], verifyMs), { length: 0, expected: 0 });
  });

  test("copied candidates that continue the draft's are appended to them", () => {
    assert.equal(copiedTail([4, 5], [4, 5, 6, 7, 8], 10), 3);
    assert.equal(copiedTail([4, 5], [4, 5, 6, 7, 8], 2), 2, 'within the room');
    assert.equal(copiedTail([4, 9], [4, 5, 6, 7, 8], 10), 0, 'the copy leaves the draft: nothing appended');
    assert.equal(copiedTail([4, 5], [4, 5], 10), 0, 'nothing after the draft');
    assert.equal(copiedTail([], [4, 5], 10), 2, 'an empty draft is continued by any copy');
    // T(n) = 10 + 2 n; the draft's 2 with E 1.5 and S 0.6: 2.5 / 16 = 0.156 per ms. Tail rates 0.9, 0.2:
    // t = 1: (2.5 + 0.54) / 18 = 0.169; t = 2: (3.04 + 0.108) / 20 = 0.157, so 1.
    const value = { expected: 1.5, survive: 0.6, rates: [0.9, 0.2, 0.9], verifyMs: (n: number) => 10 + 2 * n };
    assert.equal(copiedTail([4, 5], [4, 5, 6, 7], 10, value), 1);
    assert.equal(copiedTail([4, 5], [4, 5, 6, 7], 10, { ...value, survive: 0.05 }), 0, 'a draft unlikely to survive: no tail');
  });
});

describe('per-method counters', () => {
  test("drafts, draft tokens, accepted and per-position counts per method, merged as vLLM's", () => {
    const request = new MethodStats();
    request.observe('ngram', 4, 2);
    request.observe('ngram', 2, 2);
    request.observe('draft', 3, 0);
    request.observe('suffix', 0, 0); // nothing proposed: not a draft
    assert.deepEqual(request.snapshot(), {
      draft: { numDrafts: 1, numDraftTokens: 3, numAcceptedTokens: 0, numAcceptedTokensPerPos: [0, 0, 0] },
      ngram: { numDrafts: 2, numDraftTokens: 6, numAcceptedTokens: 4, numAcceptedTokensPerPos: [2, 2, 0, 0] },
    });
    const engine = new MethodStats();
    engine.observe('ngram', 5, 5);
    engine.merge(request);
    assert.deepEqual(engine.snapshot().ngram, { numDrafts: 3, numDraftTokens: 11, numAcceptedTokens: 9, numAcceptedTokensPerPos: [3, 3, 1, 1, 1] });
    assert.throws(() => engine.observe('suffix', 2, 3), /accepted \(3\) must be an integer in \[0, proposed = 2\]/);
  });
});
