/**
 * Prompt lookup (src/proposers/ngram.ts): the incremental index proposes exactly what a full
 * backward scan of the sequence proposes (longest n from prompt_lookup_max down to
 * prompt_lookup_min, latest occurrence, periodic continuation), round after round, and bad
 * options are refused by name. No model needed.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { PromptLookup, promptLookupOptions, PROMPT_LOOKUP_DEFAULTS } from '../../src/proposers/ngram.js';
import { ProposerOptionError } from '../../src/proposers/proposal.js';
import { Rng } from '../../src/engine/rng.js';

/** The definition, by brute force: scan every earlier position for the last n tokens. */
function reference(seq: readonly number[], min: number, max: number, k: number): { tokens: number[]; matchLength: number } {
  const L = seq.length;
  for (let n = Math.min(max, L - 1); n >= min; n--) {
    // Latest occurrence that ends before the last token (so that something followed it).
    for (let end = L - 1; end >= n; end--) {
      let same = true;
      for (let i = 1; i <= n && same; i++) same = seq[end - i] === seq[L - i];
      if (!same) continue;
      // Past the end the repetition goes on: v[i] = v[i - period].
      const virtual = [...seq];
      const period = L - end;
      const out: number[] = [];
      for (let j = 0; j < k; j++) {
        while (virtual.length <= end + j) virtual.push(virtual[virtual.length - period]!);
        out.push(virtual[end + j]!);
      }
      return { tokens: out, matchLength: n };
    }
  }
  return { tokens: [], matchLength: 0 };
}

describe('prompt lookup', () => {
  test("vLLM's example: the last 2 tokens matched earlier, what followed proposed", () => {
    const lookup = new PromptLookup([1, 2, 3, 4, 2, 3], { promptLookupMin: 2, promptLookupMax: 3, numSpeculativeTokens: 2 });
    assert.deepEqual(lookup.propose(), { tokens: [4, 2], matchLength: 2 });
  });

  test('the longest n wins over a later shorter match, the latest occurrence over an earlier one', () => {
    // [7 8 9] occurs at 0 (followed by 1) and [8 9] later at 5 (followed by 2): n = 3 wins.
    const lookup = new PromptLookup([7, 8, 9, 1, 5, 8, 9, 2, 6, 7, 8, 9], { promptLookupMin: 1, promptLookupMax: 3, numSpeculativeTokens: 3 });
    assert.deepEqual(lookup.propose(), { tokens: [1, 5, 8], matchLength: 3 });
    // Two occurrences of [4 5]: the later one's follower (6) is proposed.
    const latest = new PromptLookup([4, 5, 1, 0, 4, 5, 6, 0, 4, 5], { promptLookupMin: 2, promptLookupMax: 2, numSpeculativeTokens: 1 });
    assert.deepEqual(latest.propose().tokens, [6]);
  });

  test('a period continues past the end of the sequence', () => {
    const lookup = new PromptLookup([1, 2, 3, 1, 2, 3, 1, 2], { promptLookupMin: 2, promptLookupMax: 4, numSpeculativeTokens: 7 });
    assert.deepEqual(lookup.propose(), { tokens: [3, 1, 2, 3, 1, 2, 3], matchLength: 4 });
    const run = new PromptLookup([5, 5, 5], { promptLookupMin: 1, promptLookupMax: 3, numSpeculativeTokens: 4 });
    assert.deepEqual(run.propose(), { tokens: [5, 5, 5, 5], matchLength: 2 });
  });

  test('nothing matched: no candidates; a round asks for fewer than K', () => {
    const lookup = new PromptLookup([1, 2, 3, 4, 5], { promptLookupMin: 1, promptLookupMax: 2, numSpeculativeTokens: 3 });
    assert.deepEqual(lookup.propose(), { tokens: [], matchLength: 0 });
    lookup.extend([3]);
    assert.deepEqual(lookup.propose(), { tokens: [4, 5, 3], matchLength: 1 });
    assert.deepEqual(lookup.propose(2).tokens, [4, 5]);
    assert.deepEqual(lookup.propose(0).tokens, []);
    assert.deepEqual(new PromptLookup([]).propose().tokens, []);
  });

  test('incremental index equals the full scan, round after round (random text, small vocabulary)', () => {
    const rng = new Rng(11);
    for (const [min, max, vocab] of [
      [1, 1, 3],
      [2, 5, 4],
      [3, 4, 6],
      [1, 6, 12],
    ] as const) {
      const seq = Array.from({ length: 20 }, () => Math.floor(rng.next() * vocab));
      const lookup = new PromptLookup(seq, { promptLookupMin: min, promptLookupMax: max, numSpeculativeTokens: 6 });
      for (let round = 0; round < 300; round++) {
        assert.deepEqual(lookup.propose(), reference(seq, min, max, 6), `min ${min} max ${max} after ${seq.length} tokens`);
        // A round emits 1-4 tokens, often the proposal's own (as accepted candidates would be).
        const proposal = lookup.propose();
        const emitted = Array.from({ length: 1 + Math.floor(rng.next() * 4) }, (_, i) => (rng.next() < 0.6 && i < proposal.tokens.length ? proposal.tokens[i]! : Math.floor(rng.next() * vocab)));
        seq.push(...emitted);
        lookup.extend(emitted);
        assert.equal(lookup.length, seq.length);
      }
    }
  });

  test('a copied passage is proposed whole once its start is matched', () => {
    const passage = Array.from({ length: 200 }, (_, i) => 1000 + ((i * 7919) % 5003));
    const lookup = new PromptLookup([...passage, 1, 2, 3], { numSpeculativeTokens: 8 });
    lookup.extend(passage.slice(0, 5));
    const p = lookup.propose();
    assert.equal(p.matchLength, 5);
    assert.deepEqual(p.tokens, passage.slice(5, 13));
  });

  test('options: defaults, one bound given, errors name the option', () => {
    assert.deepEqual(promptLookupOptions(), { ...PROMPT_LOOKUP_DEFAULTS });
    assert.deepEqual(promptLookupOptions({ promptLookupMin: 7 }), { promptLookupMin: 7, promptLookupMax: 7, numSpeculativeTokens: 8 });
    assert.deepEqual(promptLookupOptions({ promptLookupMax: 1 }), { promptLookupMin: 1, promptLookupMax: 1, numSpeculativeTokens: 8 });
    const bad: [Parameters<typeof promptLookupOptions>[0], string, RegExp][] = [
      [{ promptLookupMin: 0 }, 'prompt_lookup_min', /integer in \[1, 64\], got 0/],
      [{ promptLookupMax: 2.5 }, 'prompt_lookup_max', /got 2.5/],
      [{ promptLookupMin: 4, promptLookupMax: 3 }, 'prompt_lookup_min', /must not exceed prompt_lookup_max \(3\)/],
      [{ numSpeculativeTokens: 0 }, 'num_speculative_tokens', /integer >= 1/],
      [{ promptLookupMax: 65 }, 'prompt_lookup_max', /\[1, 64\]/],
    ];
    for (const [given, option, message] of bad) {
      assert.throws(
        () => new PromptLookup([1], given),
        (e: unknown) => e instanceof ProposerOptionError && e.option === option && message.test(e.message),
        JSON.stringify(given),
      );
    }
  });
});
