/**
 * The Responses API's store without a model: a continued request's input is the stored
 * conversation (earlier input, the output's message and function calls; reasoning left out)
 * before its own; item references become the stored items they name; the size bound evicts the least recently used; the time-to-live expires
 * entries; an unknown id is a 404 naming previous_response_id.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ApiError } from '../../src/server/errors.js';
import { ResponseStore, type StorableResponse } from '../../src/server/response-store.js';
import type { ResponsesBody } from '../../src/server/responses-api.js';

const HOUR_MS = 3_600_000;

function response(id: string, text: string, extra: StorableResponse['output'] = []): StorableResponse {
  return {
    id,
    output: [
      { type: 'reasoning', id: `rs_${id}`, content: [{ type: 'reasoning_text', text: 'thinking' }] },
      { type: 'message', id: `msg_${id}`, role: 'assistant', status: 'completed', content: [{ type: 'output_text', text, annotations: [], logprobs: [] }] },
      ...extra,
    ],
  };
}

describe('ResponseStore', () => {
  test('a continued request: the stored conversation, then its own input; instructions are its own', () => {
    const store = new ResponseStore({ maxBytes: 2 ** 20, ttlMs: HOUR_MS });
    const first: ResponsesBody = { input: 'Hi', instructions: 'Be brief.' };
    store.put(store.continued(first), response('resp_1', 'Hello.'));
    const second = store.continued({ input: [{ role: 'user', content: 'Weather?' }], previous_response_id: 'resp_1', instructions: 'Be kind.' });
    assert.equal(second.previous_response_id, undefined);
    assert.equal(second.instructions, 'Be kind.');
    assert.deepEqual(second.input, [
      { type: 'message', role: 'user', content: 'Hi' },
      { type: 'message', role: 'assistant', content: [{ type: 'output_text', text: 'Hello.' }] },
      { role: 'user', content: 'Weather?' },
    ]);
    const call = { type: 'function_call', id: 'fc_1', status: 'completed', call_id: 'call_1', name: 'weather', arguments: '{"city":"Oslo"}' };
    store.put(second, response('resp_2', '', [call]));
    const third = store.continued({ input: [{ type: 'function_call_output', call_id: 'call_1', output: 'rain' }], previous_response_id: 'resp_2' });
    assert.deepEqual((third.input as unknown[]).slice(3), [
      { type: 'message', role: 'assistant', content: [{ type: 'output_text', text: '' }] },
      { type: 'function_call', call_id: 'call_1', name: 'weather', arguments: '{"city":"Oslo"}' },
      { type: 'function_call_output', call_id: 'call_1', output: 'rain' },
    ]);
    assert.deepEqual(store.continued({ input: 'x' }), { input: 'x' }, 'without previous_response_id the body is unchanged');
  });

  test('item references: a stored output item in its place (a reasoning item: nothing); an unknown or evicted one is a 404 naming it', () => {
    const store = new ResponseStore({ maxBytes: 2 ** 20, ttlMs: HOUR_MS });
    const call = { type: 'function_call', id: 'fc_1', status: 'completed', call_id: 'call_1', name: 'weather', arguments: '{}' };
    store.put({ input: 'Hi' }, response('resp_1', 'Hello.', [call]));
    const body = store.continued({
      input: [
        { role: 'user', content: 'Hi' },
        { type: 'item_reference', id: 'rs_resp_1' },
        { type: 'item_reference', id: 'msg_resp_1' },
        { type: 'item_reference', id: 'fc_1' },
        { type: 'function_call_output', call_id: 'call_1', output: 'rain' },
      ],
    });
    assert.deepEqual(body.input, [
      { role: 'user', content: 'Hi' },
      { type: 'message', role: 'assistant', content: [{ type: 'output_text', text: 'Hello.' }] },
      { type: 'function_call', call_id: 'call_1', name: 'weather', arguments: '{}' },
      { type: 'function_call_output', call_id: 'call_1', output: 'rain' },
    ]);
    assert.throws(() => store.continued({ input: [{ role: 'user', content: 'x' }, { type: 'item_reference', id: 'msg_nowhere' }] }), (err: ApiError) => {
      assert.equal(err.status, 404);
      assert.equal(err.param, 'input[1].id');
      assert.match(err.message, /'msg_nowhere' not found/);
      return true;
    });
    store.delete('resp_1');
    assert.throws(() => store.continued({ input: [{ type: 'item_reference', id: 'msg_resp_1' }] }), (err: ApiError) => err.status === 404 && err.param === 'input[0].id');
  });

  test('an unknown id is a 404 naming previous_response_id; delete removes an entry', () => {
    const store = new ResponseStore({ maxBytes: 2 ** 20, ttlMs: HOUR_MS });
    assert.throws(() => store.continued({ input: 'x', previous_response_id: 'resp_none' }), (err: ApiError) => {
      assert.equal(err.status, 404);
      assert.equal(err.param, 'previous_response_id');
      assert.match(err.message, /'resp_none' not found.*1 MiB of responses for 3600 s/);
      return true;
    });
    store.put({ input: 'a' }, response('resp_a', 'A'));
    assert.equal(store.get('resp_a')?.id, 'resp_a');
    assert.equal(store.delete('resp_a'), true);
    assert.equal(store.delete('resp_a'), false);
    assert.equal(store.get('resp_a'), undefined);
  });

  test('the size bound: the least recently used leave first, and the total stays within it', () => {
    const one = Buffer.byteLength(JSON.stringify({ response: response('resp_0', 'x'.repeat(1000)), items: [] }));
    // Room for about three entries of ~2 kB (response and items each hold the text).
    const store = new ResponseStore({ maxBytes: 7 * one, ttlMs: HOUR_MS });
    for (let i = 0; i < 4; i++) store.put({ input: 'q' }, response(`resp_${i}`, 'x'.repeat(1000)));
    assert.equal(store.get('resp_0'), undefined, 'the oldest left');
    assert.ok(store.get('resp_1'));
    store.put({ input: 'q' }, response('resp_4', 'x'.repeat(1000)));
    // resp_1 was just used: resp_2 leaves instead.
    assert.ok(store.get('resp_1'));
    assert.equal(store.get('resp_2'), undefined);
    assert.equal(store.size, 3);
    store.put({ input: 'q' }, response('resp_big', 'x'.repeat(20 * one)));
    assert.equal(store.get('resp_big'), undefined, 'an entry larger than the store is not kept');
  });

  test('the time-to-live: an entry leaves when it expires', async () => {
    const store = new ResponseStore({ maxBytes: 2 ** 20, ttlMs: 40 });
    store.put({ input: 'q' }, response('resp_t', 'T'));
    assert.ok(store.get('resp_t'));
    await new Promise((r) => setTimeout(r, 80));
    assert.equal(store.get('resp_t'), undefined);
    assert.throws(() => store.continued({ input: 'x', previous_response_id: 'resp_t' }), (err: ApiError) => err.status === 404);
  });

  test('bounds must be positive', () => {
    assert.throws(() => new ResponseStore({ maxBytes: 0, ttlMs: 1 }), RangeError);
    assert.throws(() => new ResponseStore({ maxBytes: 1, ttlMs: Number.NaN }), RangeError);
  });
});
