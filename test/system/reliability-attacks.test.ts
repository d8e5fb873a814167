/**
 * The attack list of the structured-outputs hardening issue, replayed against one real server
 * (bundled pair, one engine worker) as a hostile or careless client would send it, in one run:
 * each input that once stopped the engine, answered 500, leaked markup or weakened a schema is
 * sent (the engine-stopping ones twice) and must get its 4xx naming the parameter, or the
 * documented behaviour; afterwards the server still answers a plain, a structured and a tool
 * request, and /health is ok. Every call gives up after CLIENT_TIMEOUT_MS, so a hang fails the
 * test. (Slow bodies, the queue deadline and the stall watchdog take minutes of their own and
 * are in reliability-slow-clients, reliability-watchdog; special tokens in tools in
 * reliability-injection.)
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import OpenAI from 'openai';
import { buildApp } from '../../src/server/app.js';

const MODEL = 'specd-pair-target';
const CLIENT_TIMEOUT_MS = 60_000;
const MAX_BATCH = 8;

let app: FastifyInstance;
let base: string;
let client: OpenAI;

before(async () => {
  app = await buildApp({ workers: 1, batching: { maxBatch: MAX_BATCH }, maxQueue: 16, bodyLimit: 8 * 1024 * 1024 });
  await app.specd.engine.ready;
  base = await app.listen({ host: '127.0.0.1', port: 0 });
  client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'unused', maxRetries: 0, timeout: CLIENT_TIMEOUT_MS });
});
after(() => app?.close());

interface Answer {
  status: number;
  json: { error?: { message: string; param: string | null; code: string | null }; choices?: { message: { content: string | null; tool_calls?: { function: { arguments: string } }[] }; finish_reason: string }[]; output?: { type: string }[] } & Record<string, unknown>;
}

/** A POST as curl sends it: JSON text, no client library. */
async function post(path: string, body: unknown): Promise<Answer> {
  const res = await fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body), signal: AbortSignal.timeout(CLIENT_TIMEOUT_MS) });
  return { status: res.status, json: (await res.json()) as Answer['json'] };
}

const chatWithSchema = (schema: unknown, extra: object = {}) => ({
  model: MODEL,
  messages: [{ role: 'user', content: 'x' }],
  max_tokens: 4,
  response_format: { type: 'json_schema', json_schema: { name: 'p', schema } },
  ...extra,
});
const responsesWithSchema = (schema: unknown) => ({ model: MODEL, input: 'x', max_output_tokens: 4, text: { format: { type: 'json_schema', name: 'p', schema } } });

function nestedArrays(levels: number): string {
  return `${'{"type":"array","items":'.repeat(levels - 1)}{"type":"integer"}${'}'.repeat(levels - 1)}`;
}

/** Schemas that stopped the engine, answered 500 or were weakened silently: each must be a 400 naming the schema, every time. */
const REFUSED: { name: string; schema: unknown; message: RegExp }[] = [
  { name: 'an unclosed regex group', schema: { type: 'string', pattern: '([a-z' }, message: /Unclosed/ },
  { name: 'a lookahead regex', schema: { type: 'string', pattern: '(?=a)b' }, message: /Lookahead/ },
  { name: 'a $ref to a missing definition', schema: { type: 'object', properties: { a: { $ref: '#/$defs/missing' } } }, message: /points to nothing/ },
  { name: 'a $ref that only leads to itself', schema: { $defs: { loop: { $ref: '#/$defs/loop' } }, $ref: '#/$defs/loop' }, message: /admits no output/ },
  { name: '`required` naming an undeclared property', schema: { type: 'object', required: ['a'] }, message: /required|'a'/ },
  { name: 'an unenforceable keyword (multipleOf)', schema: { type: 'integer', multipleOf: 3 }, message: /multipleOf/ },
  { name: 'a remote $ref', schema: { $ref: 'https://example.com/s.json' }, message: /outside the schema/ },
  { name: 'an enum of 100,000 strings', schema: { enum: Array.from({ length: 100_000 }, (_, i) => `value-${i}`) }, message: /enum values/ },
];

describe('the attack list against one server', () => {
  for (const { name, schema, message } of REFUSED) {
    test(`${name}: 400 naming the schema, twice on chat, then on the Responses API`, async () => {
      const texts: string[] = [];
      for (let i = 0; i < 2; i++) {
        const { status, json } = await post('/v1/chat/completions', chatWithSchema(schema));
        assert.equal(status, 400, JSON.stringify(json));
        assert.equal(json.error!.param, 'response_format.json_schema.schema');
        assert.match(json.error!.message, message);
        texts.push(json.error!.message);
      }
      assert.equal(texts[1], texts[0]);
      const { status, json } = await post('/v1/responses', responsesWithSchema(schema));
      assert.equal(status, 400, JSON.stringify(json));
      assert.equal(json.error!.param, 'text.format.schema');
    });
  }

  for (const levels of [75, 5000]) {
    test(`${levels} nested arrays (${nestedArrays(levels).length} bytes): a 400, twice, and json_object still works after`, async () => {
      const body = `{"model":"${MODEL}","messages":[{"role":"user","content":"x"}],"max_tokens":4,"response_format":{"type":"json_schema","json_schema":{"name":"p","schema":${nestedArrays(levels)}}}}`;
      for (let i = 0; i < 2; i++) {
        const { status, json } = await post('/v1/chat/completions', body);
        assert.equal(status, 400, JSON.stringify(json));
        assert.match(json.error!.message, /levels deep/);
      }
      const ok = await post('/v1/chat/completions', { model: MODEL, messages: [{ role: 'user', content: 'x' }], max_tokens: 8, response_format: { type: 'json_object' } });
      assert.equal(ok.status, 200, JSON.stringify(ok.json));
      assert.ok(ok.json.choices![0]!.message.content!.startsWith('{'));
    });
  }

  test('a forced tool call cut by max_tokens at every length up to 12 leaks no markup into content', async () => {
    const tool = { type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } };
    for (let n = 1; n <= 12; n++) {
      const { status, json } = await post('/v1/chat/completions', { model: MODEL, messages: [{ role: 'user', content: 'Weather in Paris?' }], tools: [tool], tool_choice: 'required', max_tokens: n, temperature: 0 });
      assert.equal(status, 200, JSON.stringify(json));
      const content = json.choices![0]!.message.content ?? '';
      assert.doesNotMatch(content, /<|tool_call/, `max_tokens ${n}: content ${JSON.stringify(content)}`);
    }
  });

  test('a function declared without parameters is called with {}', async () => {
    const res = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'What time is it?' }], tools: [{ type: 'function', function: { name: 'now' } }], tool_choice: 'required', max_tokens: 60, temperature: 0 });
    const calls = res.choices[0]!.message.tool_calls!;
    assert.ok(calls.length >= 1);
    for (const c of calls) assert.equal(c.type === 'function' ? c.function.arguments : undefined, '{}');
  });

  test('the Responses API takes function tools (the official client)', async () => {
    const res = await client.responses.create({
      model: MODEL,
      input: 'Weather in Paris?',
      tools: [{ type: 'function', name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 20 } }, required: ['city'], additionalProperties: false }, strict: true }],
      tool_choice: 'required',
      max_output_tokens: 150,
    });
    const call = res.output.find((o) => o.type === 'function_call');
    assert.ok(call && call.type === 'function_call');
    assert.equal(typeof (JSON.parse(call.arguments) as { city: unknown }).city, 'string');
  });

  test('a 3 MB prompt on /tokenize and a 3.9 MB tool description are refused with a 4xx, and /health answers meanwhile', async () => {
    const big = 'word '.repeat(600_000);
    const health = fetch(`${base}/health`, { signal: AbortSignal.timeout(CLIENT_TIMEOUT_MS) });
    const tokenize = await post('/tokenize', { model: MODEL, prompt: big });
    assert.ok(tokenize.status >= 400 && tokenize.status < 500, `/tokenize answered ${tokenize.status}`);
    assert.equal((await health).status, 200);
    const tool = { type: 'function', function: { name: 'f', description: 'd'.repeat(3_900_000), parameters: { type: 'object', properties: {} } } };
    const tools = await post('/v1/chat/completions', { model: MODEL, messages: [{ role: 'user', content: 'x' }], tools: [tool], max_tokens: 4 });
    assert.ok(tools.status >= 400 && tools.status < 500, `tools answered ${tools.status}`);
  });

  test(`/info reports max_num_seqs as workers x --max-batch (${MAX_BATCH})`, async () => {
    const info = (await (await fetch(`${base}/info`, { signal: AbortSignal.timeout(CLIENT_TIMEOUT_MS) })).json()) as { max_num_seqs: number };
    assert.equal(info.max_num_seqs, MAX_BATCH);
  });

  test('afterwards the server answers a plain, a structured and a tool request, and /health is ok', async () => {
    const plain = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 8 });
    assert.ok(plain.choices[0]!.message.content!.length > 0);
    const structured = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'Hi' }],
      max_tokens: 30,
      response_format: { type: 'json_schema', json_schema: { name: 'n', schema: { type: 'object', properties: { n: { type: 'integer' } }, required: ['n'], additionalProperties: false } } },
    });
    assert.ok(structured.choices[0]!.message.content!.startsWith('{"n": '));
    const tool = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }], tools: [{ type: 'function', function: { name: 'now' } }], tool_choice: 'required', max_tokens: 100 });
    assert.ok(tool.choices[0]!.message.tool_calls!.length >= 1);
    const health = await fetch(`${base}/health`, { signal: AbortSignal.timeout(CLIENT_TIMEOUT_MS) });
    assert.equal(health.status, 200);
  });
});
