/**
 * The server's surface for browsers, tools and operators, on a real port: CORS preflights
 * answered without the API key (and refused origins left without CORS headers), CORS headers
 * on responses and streams, /tokenize and /detokenize in vLLM's shapes, /version, /info,
 * x-request-id (echoed or made, on errors the openai client raises, in the log lines) and
 * expected refusals logged as one info line without a stack (503 model_loading).
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import OpenAI, { APIError } from 'openai';
import { SPECD_VERSION } from '../../src/paths.js';
import { buildApp } from '../../src/server/app.js';

const MODEL = 'specd-pair-target';
const KEY = 'surface-test-key';
const ORIGIN = 'https://chat.example';
const auth = { authorization: `Bearer ${KEY}` };

/** JSON log lines written by the app's logger. */
class LogLines extends Writable {
  readonly lines: Record<string, unknown>[] = [];
  override _write(chunk: Buffer, _encoding: string, done: () => void): void {
    for (const line of chunk.toString('utf8').split('\n')) if (line.trim()) this.lines.push(JSON.parse(line) as Record<string, unknown>);
    done();
  }
}

let app: FastifyInstance;
let url: string;
const logs = new LogLines();

before(async () => {
  app = await buildApp({ workers: 1, apiKey: KEY, logger: { level: 'info', stream: logs } });
  await app.specd.engine.ready;
  url = await app.listen({ host: '127.0.0.1', port: 0 });
});
after(() => app?.close());

const preflight = (path: string, origin = ORIGIN, base = url) =>
  fetch(`${base}${path}`, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' } });

const postJson = (path: string, body: unknown, headers: Record<string, string> = auth) =>
  fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', origin: ORIGIN, ...headers }, body: JSON.stringify(body) });

describe('CORS', () => {
  test('a preflight is answered without the API key, allowing the method and the asked-for headers', async () => {
    for (const path of ['/v1/chat/completions', '/v1/responses', '/v1/models', '/tokenize']) {
      const res = await preflight(path);
      assert.equal(res.status, 204, path);
      assert.equal(res.headers.get('access-control-allow-origin'), '*');
      assert.match(res.headers.get('access-control-allow-methods') ?? '', /\*|POST/);
      assert.equal(res.headers.get('access-control-allow-headers'), 'authorization,content-type');
    }
  });

  test('responses carry Access-Control-Allow-Origin: JSON, errors (401 without the key) and streams', async () => {
    const models = await fetch(`${url}/v1/models`, { headers: { origin: ORIGIN, ...auth } });
    assert.equal(models.status, 200);
    assert.equal(models.headers.get('access-control-allow-origin'), '*');
    assert.match(models.headers.get('access-control-expose-headers') ?? '', /x-request-id/);
    const refused = await fetch(`${url}/v1/models`, { headers: { origin: ORIGIN } });
    assert.equal(refused.status, 401);
    assert.equal(refused.headers.get('access-control-allow-origin'), '*');
    const stream = await postJson('/v1/chat/completions', { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 4, stream: true });
    assert.equal(stream.status, 200);
    assert.equal(stream.headers.get('access-control-allow-origin'), '*');
    assert.ok(stream.headers.get('x-request-id'));
    assert.match(await stream.text(), /\[DONE\]/);
  });

  test('--allowed-origins: other origins get no CORS headers; an empty list turns CORS off', async () => {
    const strict = await buildApp({ workers: 1, apiKey: KEY, cors: { allowedOrigins: [ORIGIN], allowedMethods: ['GET', 'POST'], allowedHeaders: ['authorization', 'content-type'] } });
    const off = await buildApp({ workers: 1, apiKey: KEY, cors: { allowedOrigins: [], allowedMethods: [], allowedHeaders: [] } });
    try {
      const strictUrl = await strict.listen({ host: '127.0.0.1', port: 0 });
      const allowed = await preflight('/v1/chat/completions', ORIGIN, strictUrl);
      assert.equal(allowed.status, 204);
      assert.equal(allowed.headers.get('access-control-allow-origin'), ORIGIN);
      assert.equal(allowed.headers.get('access-control-allow-methods'), 'GET, POST');
      const other = await preflight('/v1/chat/completions', 'https://evil.example', strictUrl);
      assert.equal(other.headers.get('access-control-allow-origin'), null);
      const offUrl = await off.listen({ host: '127.0.0.1', port: 0 });
      const noCors = await preflight('/v1/chat/completions', ORIGIN, offUrl);
      assert.equal(noCors.status, 401, 'without CORS a preflight is an ordinary keyed request');
      assert.equal(noCors.headers.get('access-control-allow-origin'), null);
    } finally {
      await strict.close();
      await off.close();
    }
  });
});

describe('/tokenize, /detokenize, /version, /info', () => {
  test('/tokenize a prompt and a chat (the count the endpoints use); /detokenize back', async () => {
    const { tokenizer } = app.specd.facts;
    const prompt = 'The quick brown fox, 25°C';
    const res = await postJson('/tokenize', { model: MODEL, prompt, return_token_strs: true });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { count: number; max_model_len: number; tokens: number[]; token_strs: string[] };
    assert.deepEqual(body.tokens, tokenizer.encode(prompt));
    assert.equal(body.count, body.tokens.length);
    assert.equal(body.max_model_len, app.specd.facts.contextLength);
    assert.equal(body.token_strs.length, body.count);
    assert.equal(body.token_strs[0], 'T');
    const back = (await (await postJson('/detokenize', { model: MODEL, tokens: body.tokens })).json()) as { prompt: string };
    assert.equal(back.prompt, prompt);

    const messages = [{ role: 'user', content: 'How many legs do 3 spiders have?' }];
    const chat = (await (await postJson('/tokenize', { messages })).json()) as { count: number; token_strs: null };
    assert.equal(chat.token_strs, null);
    const completion = (await (await postJson('/v1/chat/completions', { messages, max_tokens: 1 })).json()) as { usage: { prompt_tokens: number } };
    assert.equal(chat.count, completion.usage.prompt_tokens);
    const noPrompt = (await (await postJson('/tokenize', { messages, add_generation_prompt: false })).json()) as { count: number };
    assert.ok(noPrompt.count < chat.count, 'without the generation prompt');
  });

  test('bad input names the parameter', async () => {
    const bad = await postJson('/detokenize', { tokens: [65, 1_000_000] });
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as { error: { param: string } }).error.param, 'tokens[1]');
    const none = await postJson('/tokenize', {});
    assert.equal(((await none.json()) as { error: { param: string } }).error.param, 'prompt');
    const model = await postJson('/tokenize', { model: 'other', prompt: 'x' });
    assert.equal(model.status, 404);
    assert.equal((await postJson('/tokenize', { prompt: 'x' }, {})).status, 401, 'keyed');
  });

  test('/version needs no key; /info says what the server is', async () => {
    const version = await fetch(`${url}/version`);
    assert.deepEqual(await version.json(), { version: SPECD_VERSION });
    const info = (await (await fetch(`${url}/info`, { headers: auth })).json()) as Record<string, unknown>;
    assert.equal(info['model'], MODEL);
    assert.equal(info['max_model_len'], app.specd.facts.contextLength);
    assert.equal(info['vocab_size'], app.specd.facts.vocabSize);
    assert.match(info['chat_template'] as string, /messages/);
    // With the bundled head loaded the default policy is specdec++ at the head's own threshold (null: the head's recommendation).
    assert.deepEqual(info['speculative'], { policy: 'specdec++', threshold: null, k_min: 1, k_max: 16, label: 'specdec++' });
    assert.deepEqual(info['head'], { loaded: true, path: (info['head'] as { path: string }).path });
    assert.match((info['head'] as { path: string }).path, /specd-pair\.head\.onnx$/);
    assert.equal(info['workers'], 1);
    assert.equal(info['max_num_seqs'], app.specd.engine.options.batching.maxBatch, "vLLM's meaning: generations at once (workers x --max-batch)");
    assert.ok((info['max_num_seqs'] as number) > 1);
    assert.equal(info['state'], 'ready');
    assert.equal(info['device'], 'cpu');
    assert.equal((await fetch(`${url}/info`)).status, 401, 'keyed');
  });
});

describe('x-request-id and logs', () => {
  test("a request's own id is echoed, on errors too, and on its log lines; otherwise one is made", async () => {
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: KEY, maxRetries: 0, defaultHeaders: { 'x-request-id': 'trace-42' } });
    await assert.rejects(client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'Hi' }] }), (err: APIError) => {
      assert.equal(err.status, 404);
      assert.equal(err.requestID, 'trace-42');
      return true;
    });
    const line = logs.lines.find((l) => l['reqId'] === 'trace-42' && l['code'] === 'model_not_found');
    assert.ok(line, 'the refusal is logged with the request id');
    assert.equal(line['level'], 30);
    const made = await fetch(`${url}/version`);
    assert.match(made.headers.get('x-request-id') ?? '', /^[0-9a-f-]{36}$/);
    const forged = await fetch(`${url}/version`, { headers: { 'x-request-id': 'a b {"forged": 1}' } });
    assert.match(forged.headers.get('x-request-id') ?? '', /^[0-9a-f-]{36}$/, 'an unusable id is replaced');
  });

  test('503 model_loading is one info line without a stack', async () => {
    const lines = new LogLines();
    const loading = await buildApp({ workers: 1, logger: { level: 'info', stream: lines } });
    try {
      const res = await loading.inject({ method: 'POST', url: '/v1/chat/completions', payload: { messages: [{ role: 'user', content: 'Hi' }] } });
      assert.equal(res.statusCode, 503);
      assert.equal(res.json().error.code, 'model_loading');
      const refusal = lines.lines.filter((l) => l['code'] === 'model_loading');
      assert.equal(refusal.length, 1);
      assert.equal(refusal[0]!['level'], 30);
      assert.ok(!JSON.stringify(refusal[0]).includes('stack'));
      assert.ok(!lines.lines.some((l) => (l['level'] as number) >= 50), 'nothing at error level');
    } finally {
      await loading.specd.engine.ready.catch(() => {});
      await loading.close();
    }
  });
});
