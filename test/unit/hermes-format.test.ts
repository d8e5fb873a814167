/**
 * The Hermes tool-call format's parser without a model (grammar/hermes-format.ts, read as the
 * server reads it through server/tool-output.ts): whole text and streamed character by character
 * give the same content and calls; held-back tags; malformed calls; outputs cut by length.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { HermesParser } from '../../src/grammar/hermes-format.js';
import type { ToolCallEvent } from '../../src/grammar/tool-call-common.js';
import { assembleToolCalls, parseToolCalls, toolCallId } from '../../src/server/tool-output.js';

const CALLS =
  'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "nested": {"a": [1, {}]}}}\n</tool_call>\n' +
  '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>';

describe('HermesParser', () => {
  test('content and calls from the whole text', () => {
    const { content, toolCalls } = parseToolCalls(CALLS);
    assert.equal(content, 'Let me check.');
    assert.deepEqual(
      toolCalls.map((c) => [c.function.name, c.function.arguments]),
      [
        ['get_weather', '{"city": "Paris", "nested": {"a": [1, {}]}}'],
        ['add', '{"a": 1, "b": 2}'],
      ],
    );
    for (const c of toolCalls) assert.match(c.id, /^call_[A-Za-z0-9_-]{24}$/);
  });

  test('streamed one character at a time: the same result, and no tag text ever sent as content or arguments', () => {
    const parser = new HermesParser(toolCallId);
    const events: ToolCallEvent[] = [];
    for (const ch of CALLS) events.push(...parser.push(ch));
    events.push(...parser.flush());
    const streamed = assembleToolCalls(events);
    const whole = parseToolCalls(CALLS);
    assert.equal(streamed.content, whole.content);
    assert.deepEqual(
      streamed.toolCalls.map((c) => c.function),
      whole.toolCalls.map((c) => c.function),
    );
    for (const e of events) if (e.type !== 'call') assert.doesNotMatch(e.text, /tool_call|<\//);
    assert.ok(events.filter((e) => e.type === 'arguments').length > 10, 'arguments stream as deltas');
  });

  test('each call gets the id the server hands the parser, in order, streamed or whole', () => {
    let n = 0;
    const parser = new HermesParser(() => `call_${++n}`);
    const events = [...[...CALLS].flatMap((c) => parser.push(c)), ...parser.flush('stop')];
    assert.deepEqual(
      assembleToolCalls(events).toolCalls.map((c) => [c.id, c.function.name]),
      [
        ['call_1', 'get_weather'],
        ['call_2', 'add'],
      ],
    );
    const malformed = new HermesParser(() => 'call_m');
    const reordered = assembleToolCalls([...malformed.push('<tool_call>{"arguments": {}, "name": "f"}</tool_call>'), ...malformed.flush()]);
    assert.deepEqual(reordered.toolCalls.map((c) => c.id), ['call_m']);
  });

  test('plain text is content; text that only looks like a tag start is released; a malformed call stays text', () => {
    assert.deepEqual(parseToolCalls('Hello <tool'), { content: 'Hello <tool', toolCalls: [], contentAfterCalls: 0 });
    assert.deepEqual(parseToolCalls('a < b'), { content: 'a < b', toolCalls: [], contentAfterCalls: 0 });
    assert.deepEqual(parseToolCalls('<tool_call>not json</tool_call>'), { content: '<tool_call>not json</tool_call>', toolCalls: [], contentAfterCalls: 0 });
    const reordered = parseToolCalls('<tool_call>{"arguments": {"x": 1}, "name": "f"}</tool_call>');
    assert.deepEqual(reordered.toolCalls.map((c) => c.function), [{ name: 'f', arguments: '{"x":1}' }]);
    // Cut off inside the arguments (max tokens): the call keeps what it has.
    const cut = parseToolCalls('<tool_call>\n{"name": "f", "arguments": {"x": 1');
    assert.deepEqual(cut.toolCalls.map((c) => c.function), [{ name: 'f', arguments: '{"x": 1' }]);
  });
});

describe('tool calls cut by length', () => {
  const complete = parseToolCalls(CALLS, 'stop').toolCalls.map((c) => c.function.arguments);
  const streamed = (text: string, reason: string) => {
    const parser = new HermesParser(toolCallId);
    const events = [...text].flatMap((c) => parser.push(c));
    return assembleToolCalls([...events, ...parser.flush(reason)]);
  };

  test('at every cut point: no markup in the content, arguments a prefix of the complete ones, streamed equal to whole', () => {
    for (let cut = 0; cut <= CALLS.length; cut++) {
      const text = CALLS.slice(0, cut);
      const whole = parseToolCalls(text, 'length');
      const withoutIds = (r: ReturnType<typeof parseToolCalls>) => ({ content: r.content, calls: r.toolCalls.map((c) => c.function) });
      assert.deepEqual(withoutIds(streamed(text, 'length')), withoutIds(whole), `cut at ${cut}`);
      const content = whole.content ?? '';
      assert.ok(!content.includes('<') && !content.includes('{'), `markup in the content at cut ${cut}: ${JSON.stringify(content)}`);
      assert.ok('Let me check.'.startsWith(content.trimEnd()), `cut ${cut}: ${JSON.stringify(content)}`);
      whole.toolCalls.forEach((c, i) => assert.ok(complete[i]!.startsWith(c.function.arguments), `cut ${cut}: ${c.function.arguments} is not a prefix of ${complete[i]}`));
    }
  });

  test('a cut inside the opening tag or the call head leaves no content and no call', () => {
    assert.deepEqual(parseToolCalls('<tool', 'length'), { content: null, toolCalls: [], contentAfterCalls: 0 });
    assert.deepEqual(parseToolCalls('<tool_call>\n{"name": "f", "argu', 'length'), { content: null, toolCalls: [], contentAfterCalls: 0 });
    // Ended by EOS rather than cut, the same text is content.
    assert.equal(parseToolCalls('<tool', 'stop').content, '<tool');
  });

  test('trailing whitespace of a text answer stays, streamed or not', () => {
    assert.equal(parseToolCalls('Hello.\n\n', 'stop').content, 'Hello.\n\n');
    assert.equal(streamed('Hello.\n\n', 'stop').content, 'Hello.\n\n');
  });
});
