/**
 * OpenAI's Responses API (POST /v1/responses) through the real `openai` client on a real port:
 * string and message input with instructions, max_output_tokens (status incomplete), greedy
 * output equal to chat's, usage with `usage.speculative` and per-request speculation, logprobs,
 * streamed typed events in OpenAI's order adding up to the non-streamed response, stored
 * responses (GET, DELETE, store: false, previous_response_id, the 404 for an unknown one),
 * errors and the API key, and /metrics counting it.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import OpenAI, { APIError } from 'openai';
import { buildApp } from '../../src/server/app.js';

const MODEL = 'specd-pair-target';
const KEY = 'responses-test-key';
const QUESTION = 'How many legs do 3 spiders have?';
/** Its greedy answer ends with EOS (26 tokens) after INSTRUCTIONS. */
const SHORT_QUESTION = 'Name a color.';
const INSTRUCTIONS = 'Answer briefly.';

let app: FastifyInstance;
let url: string;
let client: OpenAI;

before(async () => {
  app = await buildApp({ workers: 1, apiKey: KEY });
  await app.specd.engine.ready;
  url = await app.listen({ host: '127.0.0.1', port: 0 });
  client = new OpenAI({ baseURL: `${url}/v1`, apiKey: KEY, maxRetries: 0 });
});
after(() => app?.close());

type Params = Omit<OpenAI.Responses.ResponseCreateParamsNonStreaming, 'model'> & { speculative?: Record<string, unknown> };
type SpeculativeUsage = { policy: string; rounds: number; draft_tokens: number; accepted_tokens: number };

const create = (params: Params) => client.responses.create({ model: MODEL, ...params } as OpenAI.Responses.ResponseCreateParamsNonStreaming);

async function createStreamed(params: Params) {
  const stream = await client.responses.create({ model: MODEL, ...params, stream: true } as OpenAI.Responses.ResponseCreateParamsStreaming);
  const events: OpenAI.Responses.ResponseStreamEvent[] = [];
  for await (const event of stream) events.push(event);
  return events;
}

const speculativeOf = (r: OpenAI.Responses.Response) => (r.usage as unknown as { speculative: SpeculativeUsage }).speculative;

describe('POST /v1/responses', () => {
  test('string input with instructions: one output_text message, equal to chat completions with a system message', async () => {
    const res = await create({ input: SHORT_QUESTION, instructions: INSTRUCTIONS, max_output_tokens: 200, temperature: 0 });
    assert.equal(res.object, 'response');
    assert.match(res.id, /^resp_/);
    assert.equal(res.model, MODEL);
    assert.equal(res.status, 'completed');
    assert.equal((res as unknown as { store: boolean }).store, true);
    assert.equal(res.output.length, 1);
    const message = res.output[0] as OpenAI.Responses.ResponseOutputMessage;
    assert.deepEqual([message.type, message.role, message.status], ['message', 'assistant', 'completed']);
    assert.equal(message.content.length, 1);
    assert.equal(message.content[0]!.type, 'output_text');
    assert.ok(res.output_text.length > 0);
    const chat = await client.chat.completions.create({
      model: MODEL,
      messages: [
        { role: 'system', content: INSTRUCTIONS },
        { role: 'user', content: SHORT_QUESTION },
      ],
      max_tokens: 200,
      temperature: 0,
    });
    assert.equal(res.output_text, chat.choices[0]!.message.content);
    assert.equal(res.usage!.input_tokens, chat.usage!.prompt_tokens);
    assert.equal(res.usage!.output_tokens, chat.usage!.completion_tokens);
    assert.equal(res.usage!.total_tokens, res.usage!.input_tokens + res.usage!.output_tokens);
    assert.equal(speculativeOf(res).policy, 'specdec++'); // the server's default with the bundled head
    assert.ok(speculativeOf(res).rounds > 0);
  });

  test('message input (text parts, an earlier assistant turn) and max_output_tokens: status incomplete', async () => {
    const res = await create({
      input: [
        { role: 'user', content: [{ type: 'input_text', text: 'Hi' }] },
        { role: 'assistant', content: [{ type: 'output_text', text: 'Hello!', annotations: [] }] } as unknown as OpenAI.Responses.ResponseInputItem,
        { type: 'message', role: 'user', content: QUESTION },
      ],
      max_output_tokens: 5,
      temperature: 0,
      speculative: { policy: 'none' },
    });
    assert.equal(res.status, 'incomplete');
    assert.deepEqual(res.incomplete_details, { reason: 'max_output_tokens' });
    assert.equal(res.usage!.output_tokens, 5);
    assert.equal(speculativeOf(res).policy, 'none');
    assert.equal(speculativeOf(res).draft_tokens, 0);
  });

  test('logprobs with include message.output_text.logprobs and top_logprobs', async () => {
    const res = await create({ input: QUESTION, max_output_tokens: 8, temperature: 0, top_logprobs: 2, include: ['message.output_text.logprobs'] });
    const part = (res.output[0] as OpenAI.Responses.ResponseOutputMessage).content[0] as OpenAI.Responses.ResponseOutputText;
    assert.equal(part.logprobs!.length, 8);
    assert.equal(part.logprobs!.map((l) => l.token).join(''), part.text);
    for (const l of part.logprobs!) {
      assert.equal(l.top_logprobs.length, 2);
      assert.equal(l.top_logprobs[0]!.token, l.token, 'greedy: the chosen token is the most likely one');
    }
  });

  test('streamed: typed events in order, deltas adding up to the non-streamed text', async () => {
    const params: Params = { input: QUESTION, instructions: INSTRUCTIONS, max_output_tokens: 40, temperature: 0 };
    const whole = await create(params);
    const events = await createStreamed(params);
    const types = events.map((e) => e.type);
    const deltas = types.filter((t) => t === 'response.output_text.delta').length;
    assert.ok(deltas > 1, 'several deltas');
    const last = whole.status === 'completed' ? 'response.completed' : 'response.incomplete';
    assert.deepEqual(types, [
      'response.created',
      'response.in_progress',
      'response.output_item.added',
      'response.content_part.added',
      ...Array<string>(deltas).fill('response.output_text.delta'),
      'response.output_text.done',
      'response.content_part.done',
      'response.output_item.done',
      last,
    ]);
    assert.deepEqual(events.map((e) => e.sequence_number), [...events.keys()]);
    const text = events.map((e) => (e.type === 'response.output_text.delta' ? e.delta : '')).join('');
    assert.equal(text, whole.output_text);
    const done = events.find((e) => e.type === 'response.output_text.done') as OpenAI.Responses.ResponseTextDoneEvent;
    assert.equal(done.text, text);
    const created = events[0] as OpenAI.Responses.ResponseCreatedEvent;
    assert.equal(created.response.status, 'in_progress');
    const final = (events.at(-1) as OpenAI.Responses.ResponseCompletedEvent).response;
    assert.equal(final.id, created.response.id);
    assert.equal((final.output[0] as OpenAI.Responses.ResponseOutputMessage).content[0]!.type, 'output_text');
    // The cached share depends on what earlier requests left in the prefix cache.
    const comparable = (u: typeof whole.usage) => ({ ...u, speculative: undefined, input_tokens_details: undefined });
    assert.deepEqual(comparable(final.usage), comparable(whole.usage));
    assert.ok(speculativeOf(final).rounds > 0);
  });

  test('stored responses: GET and DELETE /v1/responses/{id}, store: false, and an unknown previous_response_id is a 404 naming it', async () => {
    const stored = await create({ input: QUESTION, max_output_tokens: 4, temperature: 0 });
    assert.equal((stored as unknown as { store: boolean }).store, true, 'store defaults to true');
    const again = await client.responses.retrieve(stored.id);
    assert.deepEqual(again, stored);
    // Continued, streamed: the final object names the previous response and is stored too.
    const events = await createStreamed({ input: 'And 4 spiders?', previous_response_id: stored.id, max_output_tokens: 4, temperature: 0 });
    const final = (events.at(-1) as OpenAI.Responses.ResponseCompletedEvent).response;
    assert.equal(final.previous_response_id, stored.id);
    // (The client adds output_text to what it retrieves, not to streamed objects.)
    const { output_text: _, ...retrieved } = await client.responses.retrieve(final.id);
    assert.deepEqual(retrieved, final);

    const unstored = await create({ input: QUESTION, max_output_tokens: 2, store: false });
    assert.equal((unstored as unknown as { store: boolean }).store, false);
    await assert.rejects(client.responses.retrieve(unstored.id), (err: APIError) => err.status === 404 && err.message.includes(unstored.id));
    await assert.rejects(create({ input: QUESTION, previous_response_id: unstored.id }), (err: APIError) => {
      assert.equal(err.status, 404);
      assert.equal(err.param, 'previous_response_id');
      assert.equal(err.type, 'invalid_request_error');
      assert.match(err.message, new RegExp(`'${unstored.id}' not found.*store: false`));
      return true;
    });
    await assert.rejects(createStreamed({ input: QUESTION, previous_response_id: 'resp_unknown' }), (err: APIError) => err.status === 404 && err.param === 'previous_response_id');

    await client.responses.delete(stored.id);
    await assert.rejects(client.responses.retrieve(stored.id), (err: APIError) => err.status === 404);
    await assert.rejects(client.responses.delete(stored.id), (err: APIError) => err.status === 404);
    await assert.rejects(create({ input: QUESTION, previous_response_id: stored.id }), (err: APIError) => err.status === 404 && err.param === 'previous_response_id');
    // A response continued from a deleted one's successor still holds the whole conversation.
    const third = await create({ input: 'And 5?', previous_response_id: final.id, max_output_tokens: 2, temperature: 0 });
    assert.equal(third.previous_response_id, final.id);
  });

  test('errors: what the server cannot honour and bad values name the parameter', async () => {
    const cases: [Params, string, number][] = [
      [{ input: QUESTION, tools: [{ type: 'web_search' }] } as unknown as Params, 'tools[0].type', 400],
      [{ input: [{ role: 'user', content: [{ type: 'input_image', image_url: 'http://x/y.png', detail: 'auto' }] }] }, 'input[0].content[0].type', 400],
      [{ input: [{ type: 'function_call_output', output: 'x' }] } as unknown as Params, 'input[0].call_id', 400],
      [{ input: [{ type: 'item_reference', id: 'msg_1' }] }, 'input[0].id', 404],
      [{ input: QUESTION, temperature: 3 }, 'temperature', 400],
      [{ input: QUESTION, max_output_tokens: 100_000 }, 'input', 400],
      [{ input: QUESTION, text: { format: { type: 'grammar' } } } as unknown as Params, 'text.format.type', 400],
      [{ input: QUESTION, speculative: { policy: 'fixed', threshold: 0.5 } }, 'speculative.threshold', 400],
    ];
    for (const [params, param, status] of cases) {
      await assert.rejects(create(params), (err: APIError) => {
        assert.equal(err.status, status, JSON.stringify(params));
        assert.equal(err.param, param, JSON.stringify(params));
        return true;
      });
    }
    await assert.rejects(client.responses.create({ model: 'no-such-model', input: QUESTION }), (err: APIError) => err.status === 404 && err.code === 'model_not_found');
    const keyless = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'wrong', maxRetries: 0 });
    await assert.rejects(keyless.responses.create({ model: MODEL, input: QUESTION }), (err: APIError) => err.status === 401);
  });

  test('/metrics counts Responses API generations like chat', async () => {
    const scrape = async () => {
      const text = await (await fetch(`${url}/metrics`)).text();
      const line = text.split('\n').find((l) => l.startsWith('specd_generation_tokens_total{'));
      return Number(line!.split(' ').at(-1));
    };
    const before = await scrape();
    const res = await create({ input: QUESTION, max_output_tokens: 6, temperature: 0 });
    assert.equal(await scrape(), before + res.usage!.output_tokens);
  });
});
