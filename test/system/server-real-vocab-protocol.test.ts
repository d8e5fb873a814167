/**
 * The protocol at a real vocabulary (Qwen3's tokenizer and chat template, V = 151,936; the text is
 * noise, the protocol is what is checked) through the real `openai` client on a real port, beside
 * server-real-vocab.test.ts: Qwen3's Hermes `<tool_call>` calls (valid arguments, streamed equal
 * to whole, a conversation with a tool result), json_schema (valid, streamed equal to whole, a cut
 * output a prefix), the Responses API (text and function calls, streamed and not),
 * `--reasoning-parser qwen3` splitting an output that writes `<think>...</think>` (steered by
 * logit_bias and penalties, checked against the output's own token bytes), `logprobs` with
 * `top_logprobs`, and `n` > 1 with a seed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Ajv } from 'ajv';
import OpenAI from 'openai';
import { TextTokenizer } from '../../src/text/tokenizer.js';
import { serveTinyQwen3, TINY_QWEN3_MODEL, type RealVocabServer } from '../support/real-vocab-server.js';

const MODEL = TINY_QWEN3_MODEL;
let client: OpenAI;
let tokenizer: TextTokenizer;
let server: RealVocabServer;

before(async () => {
  server = await serveTinyQwen3('specd-real-vocab-protocol-');
  ({ client, tokenizer } = server);
});
after(async () => {
  await server?.close();
});

type Params = Omit<OpenAI.Chat.ChatCompletionCreateParamsNonStreaming, 'model'>;
const chat = (params: Params) => client.chat.completions.create({ model: MODEL, ...params });
const question: OpenAI.Chat.ChatCompletionMessageParam[] = [{ role: 'user', content: 'Wie wird das Wetter in Zürich? ☀️' }];

const WEATHER: OpenAI.Chat.ChatCompletionFunctionTool = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Weather in a city.',
    parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 16 }, unit: { enum: ['celsius', 'fahrenheit'] } }, required: ['city', 'unit'], additionalProperties: false },
  },
};
const validateWeather = new Ajv().compile(WEATHER.function.parameters!);

type Call = { id: string; name: string; arguments: string };
interface Streamed {
  content: string;
  reasoning: string;
  calls: Call[];
  finish: string | null;
  logprobs: OpenAI.Chat.ChatCompletionTokenLogprob[];
}

async function chatStream(params: Params): Promise<Streamed> {
  const out: Streamed = { content: '', reasoning: '', calls: [], finish: null, logprobs: [] };
  for await (const chunk of await client.chat.completions.create({ model: MODEL, ...params, stream: true })) {
    const choice = chunk.choices[0];
    if (!choice) continue;
    out.content += choice.delta.content ?? '';
    out.reasoning += (choice.delta as { reasoning_content?: string }).reasoning_content ?? '';
    out.logprobs.push(...(choice.logprobs?.content ?? []));
    for (const call of choice.delta.tool_calls ?? []) {
      if (call.id) out.calls.push({ id: call.id, name: call.function!.name!, arguments: call.function?.arguments ?? '' });
      else out.calls[call.index]!.arguments += call.function?.arguments ?? '';
    }
    if (choice.finish_reason) out.finish = choice.finish_reason;
  }
  return out;
}

function callsOf(message: OpenAI.Chat.ChatCompletionMessage): Call[] {
  return (message.tool_calls ?? []).map((c) => {
    const f = (c as OpenAI.Chat.ChatCompletionMessageFunctionToolCall).function;
    return { id: c.id, name: f.name, arguments: f.arguments };
  });
}

describe("Qwen3's Hermes tool calls", () => {
  test('required: valid calls, finish_reason tool_calls, no markup in content, streamed equal to whole', async () => {
    const params: Params = { messages: question, tools: [WEATHER], tool_choice: 'required', parallel_tool_calls: false, max_tokens: 80, temperature: 0 };
    const whole = await chat(params);
    const choice = whole.choices[0]!;
    assert.equal(choice.finish_reason, 'tool_calls');
    assert.ok(!choice.message.content, `content beside the calls: ${choice.message.content}`);
    const calls = callsOf(choice.message);
    assert.equal(calls.length, 1);
    for (const c of calls) {
      assert.equal(c.name, 'get_weather');
      assert.match(c.id, /^call_/);
      assert.ok(validateWeather(JSON.parse(c.arguments)), c.arguments);
    }
    const streamed = await chatStream(params);
    assert.equal(streamed.finish, 'tool_calls');
    assert.equal(streamed.content, '');
    assert.deepEqual(streamed.calls.map((c) => [c.name, c.arguments]), calls.map((c) => [c.name, c.arguments]));
  });

  test('a call cut by max_tokens leaks no markup and its arguments are a prefix of the whole call', async () => {
    const params: Params = { messages: question, tools: [WEATHER], tool_choice: 'required', parallel_tool_calls: false, temperature: 0 };
    const full = callsOf((await chat({ ...params, max_tokens: 80 })).choices[0]!.message)[0]!;
    const cut = await chat({ ...params, max_tokens: 8 });
    assert.equal(cut.choices[0]!.finish_reason, 'length');
    assert.ok(!(cut.choices[0]!.message.content ?? '').includes('<tool'), `markup in content: ${cut.choices[0]!.message.content}`);
    for (const c of callsOf(cut.choices[0]!.message)) assert.ok(full.arguments.startsWith(c.arguments), `${c.arguments} is not a prefix of ${full.arguments}`);
  });

  test("a conversation with the call and its result, rendered by Qwen3's template, continues", async () => {
    const first = await chat({ messages: question, tools: [WEATHER], tool_choice: 'required', parallel_tool_calls: false, max_tokens: 80, temperature: 0 });
    const call = first.choices[0]!.message.tool_calls![0]!;
    const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [...question, { role: 'assistant', content: null, tool_calls: [call] }, { role: 'tool', tool_call_id: call.id, content: '{"temperature": 21}' }];
    const next = await chat({ messages, tools: [WEATHER], tool_choice: 'none', max_tokens: 8, temperature: 0 });
    assert.ok(['stop', 'length'].includes(next.choices[0]!.finish_reason));
    const expected = tokenizer.encodeChat(
      [...question, { role: 'assistant', content: '', tool_calls: [{ ...call, function: { ...(call as OpenAI.Chat.ChatCompletionMessageFunctionToolCall).function, arguments: JSON.parse((call as OpenAI.Chat.ChatCompletionMessageFunctionToolCall).function.arguments) } }] }, { role: 'tool', tool_call_id: call.id, content: '{"temperature": 21}' }] as never,
      { templateVars: { tools: [WEATHER] } },
    );
    assert.ok(tokenizer.decode(expected).includes('<tool_response>'), "Qwen3's template wraps the result");
    assert.ok(next.usage!.prompt_tokens > first.usage!.prompt_tokens + 10, 'the call and the result are in the prompt');
  });
});

describe('json_schema at 151,936 tokens', () => {
  const schema = { type: 'object', properties: { name: { type: 'string', maxLength: 12 }, tags: { type: 'array', items: { enum: ['a', 'b', 'ü'] }, maxItems: 3 } }, required: ['name', 'tags'], additionalProperties: false };
  const format = { type: 'json_schema', json_schema: { name: 'record', schema, strict: true } } as const;

  test('a valid document, streamed equal to whole; a cut one a prefix of it', async () => {
    const params: Params = { messages: question, response_format: format, max_tokens: 80, temperature: 0 };
    const whole = await chat(params);
    const text = whole.choices[0]!.message.content!;
    assert.equal(whole.choices[0]!.finish_reason, 'stop');
    assert.ok(new Ajv().compile(schema)(JSON.parse(text)), text);
    assert.equal((await chatStream(params)).content, text);
    const cut = await chat({ ...params, max_tokens: 4 });
    assert.equal(cut.choices[0]!.finish_reason, 'length');
    assert.ok(text.startsWith(cut.choices[0]!.message.content!), `${cut.choices[0]!.message.content} is not a prefix of ${text}`);
  });

  test('sampled with the model defaults and a seed: valid and reproducible', async () => {
    const params: Params = { messages: question, response_format: format, max_tokens: 80, seed: 11 };
    const a = (await chat(params)).choices[0]!.message.content!;
    assert.ok(new Ajv().compile(schema)(JSON.parse(a)), a);
    assert.equal((await chat(params)).choices[0]!.message.content, a);
  });
});

describe('the Responses API at 151,936 tokens', () => {
  test('text: the same greedy output as chat, streamed equal to whole', async () => {
    const input = 'Grüße aus Köln! 👋';
    const viaChat = (await chat({ messages: [{ role: 'user', content: input }], max_tokens: 24, temperature: 0 })).choices[0]!.message.content;
    const body: OpenAI.Responses.ResponseCreateParamsNonStreaming = { model: MODEL, input, max_output_tokens: 24, temperature: 0 };
    const res = await client.responses.create(body);
    assert.equal(res.status === 'completed' || res.status === 'incomplete', true);
    assert.equal(res.output_text, viaChat);
    let streamed = '';
    let completed: OpenAI.Responses.Response | undefined;
    for await (const e of await client.responses.create({ ...body, stream: true })) {
      if (e.type === 'response.output_text.delta') streamed += e.delta;
      if (e.type === 'response.completed' || e.type === 'response.incomplete') completed = e.response;
    }
    assert.equal(streamed, res.output_text);
    assert.equal(completed?.usage?.output_tokens, res.usage?.output_tokens);
  });

  test('a function tool: function_call items with valid arguments, streamed as argument deltas', async () => {
    const tool: OpenAI.Responses.FunctionTool = { type: 'function', name: 'get_weather', parameters: WEATHER.function.parameters!, strict: true };
    const body: OpenAI.Responses.ResponseCreateParamsNonStreaming = { model: MODEL, input: 'Weather in Zürich?', tools: [tool], tool_choice: 'required', parallel_tool_calls: false, max_output_tokens: 80, temperature: 0 };
    const res = await client.responses.create(body);
    const calls = res.output.filter((o) => o.type === 'function_call');
    assert.equal(calls.length, 1, JSON.stringify(res.output));
    assert.ok(validateWeather(JSON.parse(calls[0]!.arguments)), calls[0]!.arguments);
    let args = '';
    let done = '';
    for await (const e of await client.responses.create({ ...body, stream: true })) {
      if (e.type === 'response.function_call_arguments.delta') args += e.delta;
      if (e.type === 'response.function_call_arguments.done') done = e.arguments;
    }
    assert.equal(args, calls[0]!.arguments);
    assert.equal(done, calls[0]!.arguments);
  });
});

describe('--reasoning-parser qwen3 on an output that writes <think>', () => {
  // Steering noise: <think> first, then ' maybe', then </think> (each penalised once it is out).
  const maybe = () => tokenizer.encode(' maybe')[0]!;
  const think = () => ({ [tokenizer.encode('<think>')[0]!]: 40, [maybe()]: 38, [tokenizer.encode('</think>')[0]!]: 37 });
  const params = (): Params => ({ messages: [{ role: 'user', content: 'Think first.' }], max_tokens: 8, temperature: 0, presence_penalty: 2, frequency_penalty: 2, logit_bias: think(), logprobs: true });

  test('reasoning_content is the text between the tags, content the rest; streamed deltas add up to them', async () => {
    assert.equal(tokenizer.encode('<think>').length, 1, '<think> is one token in Qwen3');
    const res = await chat(params());
    const raw = Buffer.concat(res.choices[0]!.logprobs!.content!.map((t) => Buffer.from(t.bytes!))).toString('utf8');
    assert.ok(raw.startsWith('<think>') && raw.includes('</think>'), `the steering failed: ${raw}`);
    const end = raw.indexOf('</think>');
    const reasoning = raw.slice('<think>'.length, end);
    const content = raw.slice(end + '</think>'.length).replace(/^\n+/, '');
    const message = res.choices[0]!.message as OpenAI.Chat.ChatCompletionMessage & { reasoning_content: string | null };
    assert.equal(message.reasoning_content, reasoning);
    assert.equal(message.content ?? '', content);
    const streamed = await chatStream(params());
    assert.equal(streamed.reasoning, reasoning);
    assert.equal(streamed.content, content);
  });
});

describe('logprobs, n and seed at 151,936 tokens', () => {
  test('top_logprobs: the greedy token first, sorted, bytes that make the text; streamed the same', async () => {
    const params: Params = { messages: question, max_tokens: 12, temperature: 0, logprobs: true, top_logprobs: 20 };
    const res = await chat(params);
    const content = res.choices[0]!.logprobs!.content!;
    assert.equal(content.length, res.usage!.completion_tokens);
    for (const t of content) {
      assert.equal(t.top_logprobs.length, 20);
      assert.equal(t.top_logprobs[0]!.token, t.token, 'greedy: the chosen token is the most likely');
      assert.equal(t.top_logprobs[0]!.logprob, t.logprob);
      for (let i = 1; i < 20; i++) assert.ok(t.top_logprobs[i]!.logprob <= t.top_logprobs[i - 1]!.logprob);
      assert.ok(t.top_logprobs.reduce((p, x) => p + Math.exp(x.logprob), 0) <= 1 + 1e-6);
    }
    assert.equal(Buffer.concat(content.map((t) => Buffer.from(t.bytes!))).toString('utf8'), res.choices[0]!.message.content);
    const streamed = await chatStream(params);
    assert.deepEqual(streamed.logprobs.map((t) => [t.token, t.logprob]), content.map((t) => [t.token, t.logprob]));
  });

  test('n choices with a seed: choice i is the single request with seed + i', async () => {
    const params: Params = { messages: question, max_tokens: 16, seed: 40, n: 3 };
    const res = await chat(params);
    assert.deepEqual(res.choices.map((c) => c.index), [0, 1, 2]);
    for (let i = 0; i < 3; i++) {
      const single = await chat({ ...params, n: 1, seed: 40 + i });
      assert.equal(res.choices[i]!.message.content, single.choices[0]!.message.content, `choice ${i}`);
    }
    const texts = new Set(res.choices.map((c) => c.message.content));
    assert.ok(texts.size > 1, 'the choices differ');
  });
});
