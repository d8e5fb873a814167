/**
 * The output decider (src/engine/output-decider.ts) with the bundled byte-level tokenizer and no
 * model: the rules on hand-made token sequences (a stop string in the first token, one ending
 * exactly at max tokens, one spanning many tokens, multi-byte characters and their text
 * offsets, EOS, ignore_eos), and a property test: for random texts, stop strings, EOS and max
 * tokens, feeding the tokens in rounds of any size gives the output the slow reference
 * (test/support/output-oracle.ts) computes, and the streamed pieces add up to it.
 */
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { OutputDecider, type OutputRules } from '../../src/engine/output-decider.js';
import { Rng } from '../../src/engine/rng.js';
import { BUNDLED_TARGET } from '../../src/paths.js';
import { TextTokenizer } from '../../src/text/tokenizer.js';
import { oracleOutput } from '../support/output-oracle.js';

let tokenizer: TextTokenizer;
before(async () => {
  tokenizer = await TextTokenizer.fromDir(BUNDLED_TARGET);
});

/** The bundled pair's EOS token. */
const EOS = 258;
const bytes = (text: string) => [...Buffer.from(text, 'utf8')];

/** Push `tokens` in rounds of the given sizes, taking the streamed pieces after each round. */
function decide(tokens: readonly number[], rules: Omit<OutputRules, 'tokenizer'>, rounds: readonly number[] = [1]) {
  const decider = new OutputDecider({ ...rules, tokenizer });
  const pieces = { text: '', tokenIds: [] as number[], textOffsets: [] as number[] };
  const takeAll = () => {
    const d = decider.take();
    assert.equal(d.from, pieces.tokenIds.length, 'pieces follow each other');
    pieces.text += d.text;
    pieces.tokenIds.push(...d.tokenIds);
    pieces.textOffsets.push(...d.textOffsets);
  };
  let i = 0;
  for (let r = 0; i < tokens.length && !decider.done; r++) {
    const size = rounds[r % rounds.length]!;
    for (const token of tokens.slice(i, i + size)) if (decider.push(token) !== 'continue') break;
    i += size;
    takeAll();
  }
  if (!decider.done) decider.end('length');
  takeAll();
  const out = { text: decider.text, tokenIds: decider.tokenIds, textOffsets: decider.textOffsets, finishReason: decider.finishReason };
  assert.deepEqual({ text: pieces.text, tokenIds: pieces.tokenIds, textOffsets: pieces.textOffsets }, { text: out.text, tokenIds: out.tokenIds, textOffsets: out.textOffsets }, 'streamed pieces add up to the output');
  return out;
}

describe('output decider', () => {
  test('a stop string in the first token: empty text, that token, finish reason stop', () => {
    const r = decide(bytes('Hi there'), { maxTokens: 1, eosTokenIds: [EOS], stop: ['H'] });
    assert.deepEqual(r, { text: '', tokenIds: bytes('H'), textOffsets: [0], finishReason: 'stop' });
  });

  test('a stop string completed by the max_tokens-th token ends with stop, not length', () => {
    const r = decide(bytes('The end.'), { maxTokens: 7, eosTokenIds: [EOS], stop: ['end'] }, [4]);
    assert.equal(r.finishReason, 'stop');
    assert.equal(r.text, 'The ');
    assert.deepEqual(r.tokenIds, bytes('The e'), 'up to the token holding the first character of the stop string');
    const longer = decide(bytes('The end.'), { maxTokens: 6, eosTokenIds: [EOS], stop: ['end'] }, [4]);
    assert.deepEqual([longer.text, longer.finishReason], ['The en', 'length'], 'one token short: held-back text is released at the end');
  });

  test('a stop string spanning rounds keeps the tokens up to its first character, whatever the rounds', () => {
    const tokens = bytes(' is 20 square feet. If');
    for (const rounds of [[1], [2], [3], [5], [9], [4, 1, 7]]) {
      const r = decide(tokens, { maxTokens: 40, eosTokenIds: [EOS], stop: ['e fee'] }, rounds);
      assert.equal(r.text, ' is 20 squar', `rounds ${rounds}`);
      assert.equal(r.finishReason, 'stop');
      assert.deepEqual(r.tokenIds, bytes(' is 20 square'), `rounds ${rounds}`);
      assert.deepEqual(r.textOffsets, [...r.tokenIds.keys()]);
    }
  });

  test('of two stop strings, the one completed first wins, even when the other starts earlier', () => {
    const r = decide(bytes('abcdef'), { maxTokens: 40, eosTokenIds: [EOS], stop: ['abcde', 'c'] }, [6]);
    assert.equal(r.text, 'ab');
    const tie = decide(bytes('xabcd'), { maxTokens: 40, eosTokenIds: [EOS], stop: ['bcd', 'abcd'] }, [5]);
    assert.equal(tie.text, 'x', 'completed by the same token: the earliest start');
  });

  test('multi-byte characters: every byte token starts where its character starts', () => {
    const text = 'a 25°C day, 日本 A';
    const r = decide(bytes(text), { maxTokens: 100, eosTokenIds: [EOS], stop: [] }, [3]);
    assert.equal(r.text, text);
    const expected: number[] = [];
    let offset = 0;
    for (const ch of text) {
      for (let b = 0; b < Buffer.byteLength(ch); b++) expected.push(offset);
      offset += ch.length;
    }
    assert.deepEqual(r.textOffsets, expected);
    assert.equal(r.textOffsets.at(-1), text.indexOf('A'), "'A' after the multi-byte characters sits where the text has it");
  });

  test('a stop string starting with a multi-byte character keeps all of its first character\'s bytes', () => {
    const r = decide(bytes('it is 25°C now'), { maxTokens: 100, eosTokenIds: [EOS], stop: ['°C'] });
    assert.equal(r.text, 'it is 25');
    assert.deepEqual(r.tokenIds, bytes('it is 25°'));
  });

  test('max tokens inside a character releases it as U+FFFD; EOS ends before itself', () => {
    const r = decide(bytes('ab°'), { maxTokens: 3, eosTokenIds: [EOS], stop: [] });
    assert.deepEqual([r.text, r.finishReason, r.tokenIds.length], ['ab\uFFFD', 'length', 3]);
    const e = decide([...bytes('ok'), EOS, ...bytes('more')], { maxTokens: 10, eosTokenIds: [EOS], stop: [] }, [4]);
    assert.deepEqual(e, { text: 'ok', tokenIds: bytes('ok'), textOffsets: [0, 1], finishReason: 'stop' });
    const ignored = decide([...bytes('ok'), EOS, ...bytes('more')], { maxTokens: 10, eosTokenIds: [], stop: [] }, [4]);
    assert.deepEqual([ignored.text, ignored.tokenIds, ignored.textOffsets], ['okmore', [...bytes('ok'), EOS, ...bytes('more')], [0, 1, 2, 2, 3, 4, 5]], 'ignore_eos: EOS stays, without text');
  });

  test('property: any rounds give the reference output (random texts, stops, EOS, max tokens)', () => {
    const alphabet = ['a', 'b', 'c', ' ', 'é', '°', '日', '\n', '😀'];
    const rng = new Rng(16);
    const pick = <T>(xs: readonly T[]) => xs[Math.floor(rng.next() * xs.length)]!;
    for (let trial = 0; trial < 400; trial++) {
      const text = Array.from({ length: 1 + Math.floor(rng.next() * 30) }, () => pick(alphabet)).join('');
      const tokens = bytes(text);
      if (rng.next() < 0.3) tokens.splice(Math.floor(rng.next() * tokens.length), 0, EOS);
      // Stop strings: pieces of the text (so they occur) and a random one.
      const stop = Array.from({ length: Math.floor(rng.next() * 3) }, () => {
        const chars = [...text];
        const at = Math.floor(rng.next() * chars.length);
        return chars.slice(at, at + 1 + Math.floor(rng.next() * 4)).join('');
      });
      if (rng.next() < 0.3) stop.push(pick(alphabet) + pick(alphabet));
      const rules = { maxTokens: 1 + Math.floor(rng.next() * (tokens.length + 2)), eosTokenIds: [EOS], stop };
      const expected = oracleOutput(tokens, rules);
      const rounds = Array.from({ length: 3 }, () => 1 + Math.floor(rng.next() * 9));
      const got = decide(tokens, rules, rounds);
      const want = { ...expected, finishReason: expected.finishReason ?? 'length' };
      assert.deepEqual(got, want, `text ${JSON.stringify(text)} tokens ${JSON.stringify(tokens)} rules ${JSON.stringify(rules)} rounds ${rounds}`);
    }
  });
});
