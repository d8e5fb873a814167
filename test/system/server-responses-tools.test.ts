/**
 * Function tools on the Responses API (POST /v1/responses) through the real `openai` client on a
 * real port: a forced call as a `function_call` output item whose arguments satisfy the schema
 * and equal chat completions' for the same request; the same call streamed as OpenAI streams it
 * (output_item.added, function_call_arguments.delta adding up to .done, output_item.done) and
 * equal to the non-streamed one; `function_call` and `function_call_output` input items planned
 * as chat's assistant tool_calls and tool messages (same prompt tokens, same greedy output);
 * parallel_tool_calls false; `tool_choice` none; a cut by max_output_tokens; errors naming the
 * Responses API's parameters.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import OpenAI, { APIError } from 'openai';
import { buildApp } from '../../src/server/app.js';

const MODEL = 'specd-pair-target';

let app: FastifyInstance;
let client: OpenAI;

before(async () => {
  app = await buildApp({ workers: 1 });
  await app.specd.engine.ready;
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 });
});
after(() => app?.close());

const WEATHER_PARAMETERS = {
  type: 'object',
  properties: { city: { type: 'string', maxLength: 20 }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } },
  required: ['city', 'unit'],
  additionalProperties: false,
};
const TOOLS: OpenAI.Responses.FunctionTool[] = [
  { type: 'function', name: 'get_weather', description: 'Weather in a city.', parameters: WEATHER_PARAMETERS, strict: true },
  { type: 'function', name: 'get_time', description: 'Local time in a city.', parameters: null, strict: false },
];
const CHAT_TOOLS: OpenAI.Chat.ChatCompletionTool[] = [
  { type: 'function', function: { name: 'get_weather', description: 'Weather in a city.', parameters: WEATHER_PARAMETERS } },
  { type: 'function', function: { name: 'get_time', description: 'Local time in a city.' } },
];
const QUESTION = 'What is the weather in Paris?';
const FORCED = { type: 'function', name: 'get_weather' } as const;

type Params = Omit<OpenAI.Responses.ResponseCreateParamsNonStreaming, 'model'>;
const create = (params: Params) => client.responses.create({ model: MODEL, ...params });

function checkWeatherArguments(text: string): void {
  const args = JSON.parse(text) as { city: unknown; unit: unknown };
  assert.deepEqual(Object.keys(args).sort(), ['city', 'unit']);
  assert.equal(typeof args.city, 'string');
  assert.ok((args.city as string).length <= 20);
  assert.ok(['celsius', 'fahrenheit'].includes(args.unit as string));
}

const functionCalls = (res: OpenAI.Responses.Response) => res.output.filter((o): o is OpenAI.Responses.ResponseFunctionToolCall => o.type === 'function_call');

describe('function tools on /v1/responses', () => {
  test('a forced call is a function_call item with valid arguments, as chat completions calls it', async () => {
    const res = await create({ input: QUESTION, tools: TOOLS, tool_choice: FORCED, temperature: 0, max_output_tokens: 120 });
    assert.equal(res.status, 'completed');
    assert.equal(res.output.length, 1, 'no message: the output is the call');
    const [call] = functionCalls(res);
    assert.ok(call);
    assert.equal(call.name, 'get_weather');
    assert.match(call.call_id, /^call_/);
    assert.match(call.id!, /^fc_/);
    assert.equal(call.status, 'completed');
    checkWeatherArguments(call.arguments);
    assert.deepEqual(
      res.tools.map((t) => (t as OpenAI.Responses.FunctionTool).name),
      ['get_weather', 'get_time'],
    );
    const chat = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: QUESTION }],
      tools: CHAT_TOOLS,
      tool_choice: { type: 'function', function: { name: 'get_weather' } },
      temperature: 0,
      max_tokens: 120,
    });
    const chatCall = chat.choices[0]!.message.tool_calls![0] as OpenAI.Chat.ChatCompletionMessageFunctionToolCall;
    assert.equal(chatCall.function.arguments, call.arguments);
    assert.equal(res.usage!.input_tokens, chat.usage!.prompt_tokens);
    assert.equal(res.usage!.output_tokens, chat.usage!.completion_tokens);
  });

  test('streamed: output_item.added, argument deltas adding up to .done, output_item.done, equal to the non-streamed call', async () => {
    // required: the model picks the function, and may call several (each item streamed in turn).
    const params = { input: QUESTION, tools: TOOLS, tool_choice: 'required', temperature: 0, max_output_tokens: 120 } as const;
    const whole = await create(params);
    const stream = await client.responses.create({ model: MODEL, ...params, stream: true });
    const events: OpenAI.Responses.ResponseStreamEvent[] = [];
    for await (const e of stream) events.push(e);
    const types = events.map((e) => e.type);
    assert.deepEqual(types.slice(0, 3), ['response.created', 'response.in_progress', 'response.output_item.added']);
    const added = events[2] as OpenAI.Responses.ResponseOutputItemAddedEvent;
    assert.equal(added.item.type, 'function_call');
    assert.equal((added.item as OpenAI.Responses.ResponseFunctionToolCall).arguments, '');
    const deltas = events.filter((e): e is OpenAI.Responses.ResponseFunctionCallArgumentsDeltaEvent => e.type === 'response.function_call_arguments.delta');
    const dones = events.filter((e): e is OpenAI.Responses.ResponseFunctionCallArgumentsDoneEvent => e.type === 'response.function_call_arguments.done');
    const itemsDone = events.filter((e): e is OpenAI.Responses.ResponseOutputItemDoneEvent => e.type === 'response.output_item.done');
    assert.ok(dones.length >= 1);
    assert.equal(itemsDone.length, dones.length);
    for (const [i, done] of dones.entries()) {
      const mine = deltas.filter((d) => d.item_id === done.item_id);
      assert.ok(mine.length >= 1);
      assert.equal(mine.map((d) => d.delta).join(''), done.arguments, 'the deltas add up to the arguments');
      assert.ok(mine.every((d) => d.output_index === i && done.output_index === i));
      assert.equal((itemsDone[i]!.item as OpenAI.Responses.ResponseFunctionToolCall).arguments, done.arguments);
    }
    // The calls may run to max_output_tokens (the last one then incomplete), as in the non-streamed response.
    assert.deepEqual(types.slice(-3), ['response.function_call_arguments.done', 'response.output_item.done', `response.${whole.status}`]);
    assert.ok(!types.some((t) => t.startsWith('response.output_text')), 'no text when the output is a call');
    const completed = (events.at(-1) as OpenAI.Responses.ResponseCompletedEvent).response;
    assert.equal(completed.status, whole.status);
    assert.deepEqual(completed.output, itemsDone.map((e) => e.item));
    const strip = (c: OpenAI.Responses.ResponseFunctionToolCall) => [c.name, c.arguments, c.status];
    assert.deepEqual(completed.output.map((c) => strip(c as OpenAI.Responses.ResponseFunctionToolCall)), functionCalls(whole).map(strip));
    assert.equal(completed.output.length, whole.output.length);
    assert.deepEqual(
      events.map((e) => e.sequence_number),
      events.map((_, i) => i),
    );
  });

  test('tool_choice auto, streamed and not: the same output items (text, calls or both)', async () => {
    const params = { input: QUESTION, instructions: 'Use the tools when they help.', tools: TOOLS, temperature: 0, max_output_tokens: 80 } as const;
    const whole = await create(params);
    const stream = await client.responses.create({ model: MODEL, ...params, stream: true });
    let final: OpenAI.Responses.Response | undefined;
    let text = '';
    for await (const e of stream) {
      if (e.type === 'response.output_text.delta') text += e.delta;
      if (e.type === 'response.completed' || e.type === 'response.incomplete') final = e.response;
    }
    const shape = (r: OpenAI.Responses.Response) =>
      r.output.map((o) => (o.type === 'message' ? ['message', (o.content[0] as { text: string }).text, o.status] : o.type === 'function_call' ? ['call', o.name, o.arguments, o.status] : [o.type]));
    assert.deepEqual(shape(final!), shape(whole));
    assert.equal(text, whole.output_text);
    assert.equal(final!.status, whole.status);
    assert.doesNotMatch(whole.output_text, /<tool_call>/);
  });

  test('function_call and function_call_output input items: the agent loop continues, planned as chat tool messages', async () => {
    const first = await create({ input: QUESTION, tools: TOOLS, tool_choice: FORCED, temperature: 0, max_output_tokens: 120 });
    const [call] = functionCalls(first);
    const output = 'It is 18 degrees and clear.';
    const input: OpenAI.Responses.ResponseInput = [
      { role: 'user', content: QUESTION },
      { type: 'function_call', call_id: call!.call_id, name: call!.name, arguments: call!.arguments },
      { type: 'function_call_output', call_id: call!.call_id, output },
    ];
    const second = await create({ input, tools: TOOLS, tool_choice: 'none', temperature: 0, max_output_tokens: 40 });
    assert.equal(functionCalls(second).length, 0);
    assert.equal(second.output[0]!.type, 'message');
    const chat = await client.chat.completions.create({
      model: MODEL,
      messages: [
        { role: 'user', content: QUESTION },
        { role: 'assistant', content: '', tool_calls: [{ id: call!.call_id, type: 'function', function: { name: call!.name, arguments: call!.arguments } }] },
        { role: 'tool', tool_call_id: call!.call_id, content: output },
      ],
      tools: CHAT_TOOLS,
      tool_choice: 'none',
      temperature: 0,
      max_tokens: 40,
    });
    assert.equal(second.usage!.input_tokens, chat.usage!.prompt_tokens);
    assert.equal(second.output_text, chat.choices[0]!.message.content ?? '');
    // An earlier turn's reasoning item, as agent loops send it back, is accepted and left out of the prompt.
    const reasoningItem = { type: 'reasoning', id: 'rs_1', summary: [], content: [{ type: 'reasoning_text', text: 'think' }] } as unknown as OpenAI.Responses.ResponseInputItem;
    const withReasoning = await create({ input: [input[0]!, reasoningItem, ...input.slice(1)], tools: TOOLS, tool_choice: 'none', temperature: 0, max_output_tokens: 1 });
    assert.equal(withReasoning.usage!.input_tokens, second.usage!.input_tokens);
    // The tool's output is in the prompt: without it the prompt is shorter.
    const without = await create({ input: input.slice(0, 2), tools: TOOLS, tool_choice: 'none', temperature: 0, max_output_tokens: 1 });
    assert.ok(without.usage!.input_tokens < second.usage!.input_tokens);
  });

  test('parallel_tool_calls false with tool_choice required gives exactly one call; a cut leaves it incomplete', async () => {
    const one = await create({ input: QUESTION, tools: TOOLS, tool_choice: 'required', parallel_tool_calls: false, temperature: 0, max_output_tokens: 200 });
    assert.equal(functionCalls(one).length, 1);
    assert.equal(one.parallel_tool_calls, false);
    // max_tool_calls 1 is the same cap.
    const capped = await create({ input: QUESTION, tools: TOOLS, tool_choice: 'required', max_tool_calls: 1, temperature: 0, max_output_tokens: 200 });
    assert.deepEqual(functionCalls(capped).map((c) => [c.name, c.arguments]), functionCalls(one).map((c) => [c.name, c.arguments]));
    const cut = await create({ input: QUESTION, tools: TOOLS, tool_choice: FORCED, temperature: 0, max_output_tokens: 12 });
    assert.equal(cut.status, 'incomplete');
    assert.ok(cut.output.every((o) => o.type !== 'message' || (o.content[0] as { text: string }).text.indexOf('<tool') < 0), 'no markup in text');
    const full = functionCalls(await create({ input: QUESTION, tools: TOOLS, tool_choice: FORCED, temperature: 0, max_output_tokens: 120 }))[0]!;
    for (const c of functionCalls(cut)) {
      assert.equal(c.status, 'incomplete');
      assert.ok(full.arguments.startsWith(c.arguments), 'a cut call has a prefix of the arguments');
    }
  });

  test('errors name the Responses API parameter', async () => {
    const cases: [unknown, string][] = [
      [{ input: QUESTION, tools: [{ type: 'file_search', vector_store_ids: ['v'] }] }, 'tools[0].type'],
      [{ input: QUESTION, tools: TOOLS, max_tool_calls: 3 }, 'max_tool_calls'],
      [{ input: QUESTION, tools: [{ type: 'function', parameters: {} }] }, 'tools[0].name'],
      [{ input: QUESTION, tools: [{ type: 'function', name: 'bad name', parameters: {} }] }, 'tools[0].name'],
      [{ input: QUESTION, tools: TOOLS, tool_choice: { type: 'function', name: 'nope' } }, 'tool_choice.name'],
      [{ input: QUESTION, tools: TOOLS, tool_choice: { type: 'function' } }, 'tool_choice.name'],
      [{ input: QUESTION, tool_choice: 'required' }, 'tool_choice'],
      [{ input: QUESTION, tools: TOOLS, tool_choice: 'required', text: { format: { type: 'json_object' } } }, 'text.format'],
      [{ input: [{ type: 'function_call', call_id: 'c', name: 'get_time' }] }, 'input[0].arguments'],
      [{ input: [{ type: 'function_call_output', call_id: 'c', output: [{ type: 'input_image', image_url: 'x' }] }] }, 'input[0].output[0].type'],
    ];
    for (const [params, param] of cases) {
      await assert.rejects(create(params as Params), (err: APIError) => {
        assert.equal(err.status, 400, JSON.stringify(params));
        assert.equal(err.param, param, JSON.stringify(params));
        return true;
      });
    }
    const res = await create({ input: QUESTION, max_output_tokens: 3 });
    assert.ok(res.output_text.length > 0, 'the server still answers');
  });
});
