/**
 * The Responses API's streamed events from scripted outputs (no model: the bundled model does
 * not write text after a call with `tool_choice: auto`): every item's `output_index` in the
 * events is its place in the final object, for text before, between and after calls, whatever
 * the round boundaries; and the streamed final object lists the same items in the same order as
 * the non-streamed object of the same text.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ApiFinishReason, Usage } from '../../src/server/responses.js';
import type { ResponseEcho } from '../../src/server/responses-api.js';
import { ResponseEventStream, responseFromText } from '../../src/server/responses-stream.js';

const ECHO: ResponseEcho = { id: 'resp_test', itemId: 'msg_test', createdAt: 0, model: 'm', body: {} };
const USAGE = { prompt_tokens: 1, prompt_tokens_details: { cached_tokens: 0 }, completion_tokens: 1, total_tokens: 2 } as Usage;
const call = (city: string) => `<tool_call>\n{"name": "get_weather", "arguments": {"city": "${city}"}}\n</tool_call>`;

const OUTPUTS: { name: string; text: string; order: string[] }[] = [
  { name: 'text after a call', text: `${call('Paris')}\nIt is sunny.`, order: ['function_call', 'message'] },
  { name: 'text, a call, more text', text: `Let me check.\n${call('Paris')}\nDone.`, order: ['message', 'function_call'] },
  { name: 'a call, text, a call', text: `${call('Paris')}\nAnd Rome:\n${call('Rome')}`, order: ['function_call', 'message', 'function_call'] },
  { name: 'two calls', text: `${call('Paris')}\n${call('Rome')}`, order: ['function_call', 'function_call'] },
  { name: 'text only', text: 'No tool needed.', order: ['message'] },
];

interface Event {
  type: string;
  output_index?: number;
  item?: { type: string; id: string };
  item_id?: string;
  response?: { output: { type: string; id: string; name?: string; arguments?: string; content?: { text: string }[] }[] };
}

function streamed(pieces: string[], finishReason: ApiFinishReason = 'stop'): Event[] {
  const events: Event[] = [];
  const stream = new ResponseEventStream(ECHO, 'rs_test', { tools: true }, (type, data) => events.push({ type, ...data }));
  stream.start();
  for (const piece of pieces) stream.tokens(piece, []);
  stream.finish(finishReason, USAGE);
  return events;
}

/** An item without its random ids. */
function comparable(item: NonNullable<Event['response']>['output'][number]) {
  return item.type === 'function_call' ? { type: item.type, name: item.name, arguments: item.arguments } : { type: item.type, text: item.content?.[0]?.text };
}

/** The text in pieces: two pieces at every cut point, and one character at a time. */
function splits(text: string): string[][] {
  const out = [[text], [...text]];
  for (let i = 1; i < text.length; i++) out.push([text.slice(0, i), text.slice(i)]);
  return out;
}

describe('Responses events with tools, from scripted outputs', () => {
  for (const { name, text, order } of OUTPUTS) {
    test(`${name}: each item's output_index is its place in the final object, at every split; equal to the non-streamed object`, () => {
      const whole = responseFromText(ECHO, 'rs_test', { tools: true }, text, 'stop', USAGE, []);
      assert.deepEqual(whole.output.map((o) => o.type), order);
      for (const pieces of splits(text)) {
        const events = streamed(pieces);
        const final = events.at(-1)!;
        assert.equal(final.type, 'response.completed');
        const output = final.response!.output;
        assert.deepEqual(output.map(comparable), whole.output.map((o) => comparable(o as never)), `split ${JSON.stringify(pieces.map((p) => p.length))}`);
        output.forEach((item, i) => {
          const added = events.filter((e) => e.type === 'response.output_item.added' && e.item!.id === item.id);
          const done = events.filter((e) => e.type === 'response.output_item.done' && e.item!.id === item.id);
          assert.equal(added.length, 1, `${item.type} ${i} added once`);
          assert.equal(done.length, 1, `${item.type} ${i} done once`);
          assert.equal(added[0]!.output_index, i, `${item.type} added at ${added[0]!.output_index}, listed at ${i}`);
          assert.equal(done[0]!.output_index, i);
          for (const e of events.filter((x) => x.item_id === item.id)) assert.equal(e.output_index, i, `${e.type} of item ${i}`);
        });
        // Indexes open in order: 0, 1, 2, ...
        const opened = events.filter((e) => e.type === 'response.output_item.added').map((e) => e.output_index);
        assert.deepEqual(opened, output.map((_, i) => i));
      }
    });
  }
});
