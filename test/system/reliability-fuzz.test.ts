/**
 * Fuzzing the listening server with generated requests (a seeded generator: FUZZ_SEED and
 * FUZZ_CASES override the defaults, and a failure prints the seed, the case number and the
 * request): broken JSON, wrong types, huge, negative and non-finite numbers, deep nesting,
 * oversized bodies, invalid UTF-8, control characters, empty and enormous message lists, wrong
 * content types and methods, unknown fields, bad keys, on chat and text completions, the
 * Responses API and /tokenize and /detokenize. Every answer must be an OpenAI-shaped 4xx error or
 * a valid answer, never a 5xx, and the server must serve normally afterwards.
 */
import assert from 'node:assert/strict';
import { Agent } from 'node:http';
import { after, before, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/server/app.js';
import { isOpenAIError, jsonHeaders, type RawRequest, type RawResponse, rawRequest, sseData } from '../support/http-client.js';

const SEED = Number(process.env.FUZZ_SEED ?? 20_261_126);
const CASES = Number(process.env.FUZZ_CASES ?? 2000);
const CONCURRENCY = 8;
const KEY = 'fuzz-key';
const BODY_LIMIT = 64 * 1024;

let app: FastifyInstance;
let url: string;

before(async () => {
  app = await buildApp({ workers: 1, maxQueue: 64, apiKey: KEY, bodyLimit: BODY_LIMIT, pair: { head: null } });
  await app.specd.engine.ready;
  url = await app.listen({ host: '127.0.0.1', port: 0 });
});
after(() => app?.close());

/** mulberry32: a small seeded generator. */
function generator(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1));
  const pick = <T>(items: readonly T[]): T => items[int(0, items.length - 1)]!;
  return { next, int, pick, chance: (p: number) => next() < p };
}
type Rng = ReturnType<typeof generator>;

const WORDS = ['hi', 'Tell me a story.', '2+2?', '<|im_end|>\n<|im_start|>system\n', '\u0000', 'é', '🙂', '\uFFFD', ' ', '{{ x }}', '{% raw %}', '"', '\\', '\n'];
const FIELDS = ['input', 'instructions', 'max_output_tokens', 'previous_response_id', 'include', 'tokens', 'model', 'stream', 'stream_options', 'max_tokens', 'max_completion_tokens', 'temperature', 'top_p', 'top_k', 'seed', 'stop', 'n', 'presence_penalty', 'frequency_penalty', 'logit_bias', 'logprobs', 'top_logprobs', 'user', 'speculative', 'messages', 'prompt', 'echo', 'suffix', 'best_of', 'tools', 'response_format'];
/** Numbers written into the JSON text as they are (some are not JSON, some overflow to Infinity). */
const NUMBER_TEXTS = ['0', '-0', '-1', '1', '2', '1.5', '-2.5', '1e308', '-1e308', '1e400', '-1e400', '9007199254740993', '-9007199254740993', '99999999999999999999999', '1e-400', '0.0000001', 'NaN', 'Infinity', '-Infinity', '+1', '.5', '01', '0x10', '1_000'];

function text(rng: Rng): string {
  return Array.from({ length: rng.int(1, 4) }, () => rng.pick(WORDS)).join(rng.pick(['', ' ']));
}

function randomValue(rng: Rng, depth = 0): unknown {
  switch (rng.int(0, depth > 2 ? 5 : 7)) {
    case 0:
      return null;
    case 1:
      return rng.chance(0.5);
    case 2:
      return rng.pick([0, -1, 1, 2.5, 1e300, -1e300, 2 ** 53, 65, 258, 1024]);
    case 3:
      return text(rng);
    case 4:
      return '';
    case 5:
      return rng.int(-5, 5);
    case 6:
      return Array.from({ length: rng.int(0, 3) }, () => randomValue(rng, depth + 1));
    default:
      return Object.fromEntries(Array.from({ length: rng.int(0, 3) }, () => [rng.pick([...FIELDS, 'x', 'role', 'content', 'type', 'text', 'policy', 'k']), randomValue(rng, depth + 1)]));
  }
}

/** A request the server should be able to serve (tiny generations). */
function validBody(rng: Rng, path: string): Record<string, unknown> {
  if (path === '/tokenize') return rng.chance(0.5) ? { prompt: text(rng) } : { messages: [{ role: 'user', content: text(rng) }], return_token_strs: rng.chance(0.5) };
  if (path === '/detokenize') return { tokens: Array.from({ length: rng.int(0, 6) }, () => rng.int(0, 258)) };
  if (path === '/v1/responses') {
    const input = rng.chance(0.5) ? text(rng) : [{ role: rng.pick(['user', 'system', 'developer']), content: rng.chance(0.5) ? text(rng) : [{ type: 'input_text', text: text(rng) }] }];
    const body: Record<string, unknown> = { input, max_output_tokens: rng.int(1, 2) };
    if (rng.chance(0.3)) body.instructions = text(rng);
    if (rng.chance(0.2)) body.stream = true;
    if (rng.chance(0.2)) body.temperature = rng.pick([0, 0.7, 2]);
    if (rng.chance(0.1)) Object.assign(body, { include: ['message.output_text.logprobs'], top_logprobs: rng.int(0, 20) });
    return body;
  }
  const chat = path === '/v1/chat/completions';
  const body: Record<string, unknown> = chat
    ? { messages: Array.from({ length: rng.int(1, 3) }, (_, i) => ({ role: rng.pick(['system', 'user', 'assistant', 'developer']), content: i % 2 ? text(rng) : [{ type: 'text', text: text(rng) }] })) }
    : { prompt: rng.pick([text(rng), [72, 105], [text(rng), text(rng)], [[72], [258, 65]]]) };
  body.max_tokens = rng.int(1, 2);
  if (rng.chance(0.3)) body.temperature = rng.pick([0, 0.7, 2]);
  if (rng.chance(0.2)) body.stream = true;
  if (rng.chance(0.05)) body.n = 2;
  if (rng.chance(0.1)) body.seed = rng.int(-(2 ** 40), 2 ** 40);
  if (rng.chance(0.1)) body.stop = rng.pick(['', '\n', ['a', ''], 'x'.repeat(100)]);
  if (rng.chance(0.1)) body.speculative = rng.pick([{ policy: 'none' }, { k: 1 }, { policy: 'confidence', p_min: 0 }, { policy: 'specdec++' }]);
  if (rng.chance(0.1)) body.logit_bias = { [String(rng.int(0, 258))]: rng.pick([-100, 0, 100]) };
  if (rng.chance(0.1)) Object.assign(body, chat ? { logprobs: true, top_logprobs: rng.int(0, 20) } : { logprobs: rng.int(0, 20) });
  return body;
}

interface FuzzCase extends RawRequest {
  kind: string;
}

const PATHS = ['/v1/chat/completions', '/v1/completions', '/v1/chat/completions', '/v1/completions', '/v1/responses', '/tokenize', '/detokenize'];

/** One generated request: a valid one, then (mostly) one or more mutations of it. */
function fuzzCase(rng: Rng): FuzzCase {
  const path = rng.pick(PATHS);
  const body = validBody(rng, path);
  const headers = jsonHeaders(KEY);
  const kind = rng.pick(['valid', 'wrongType', 'number', 'nonJsonNumber', 'truncate', 'byteFlip', 'deep', 'oversized', 'invalidUtf8', 'control', 'messages', 'contentType', 'unknownFields', 'notObject', 'method', 'auth', 'longText']);
  let payload: string | Buffer = JSON.stringify(body);
  let method = 'POST';
  let target = path;
  switch (kind) {
    case 'wrongType':
      for (let i = rng.int(1, 3); i > 0; i--) body[rng.pick(FIELDS)] = randomValue(rng);
      payload = JSON.stringify(body);
      break;
    case 'number':
    case 'nonJsonNumber': {
      const field = rng.pick(['max_tokens', 'temperature', 'top_p', 'top_k', 'seed', 'n', 'presence_penalty', 'top_logprobs', 'logprobs', 'max_completion_tokens']);
      body[field] = '@@NUM@@';
      const numbers = kind === 'number' ? NUMBER_TEXTS.slice(0, 16) : NUMBER_TEXTS.slice(16);
      payload = JSON.stringify(body).replace('"@@NUM@@"', rng.pick(numbers));
      break;
    }
    case 'truncate':
      payload = payload.slice(0, rng.int(0, payload.length - 1));
      break;
    case 'byteFlip': {
      const bytes = Buffer.from(payload);
      for (let i = rng.int(1, 4); i > 0; i--) bytes[rng.int(0, bytes.length - 1)] = rng.int(0, 255);
      payload = bytes;
      break;
    }
    case 'deep': {
      const depth = rng.int(100, 10_000);
      const open = rng.pick(['[', '{"a":']);
      const close = open === '[' ? ']' : '}';
      const nested = `${open.repeat(depth)}${open === '[' ? '' : '1'}${close.repeat(depth)}`;
      const field = rng.pick(['x', 'messages', 'prompt', 'stop', 'logit_bias', 'speculative', '__proto__', 'constructor']);
      payload = JSON.stringify({ ...body, [field]: '@@DEEP@@' }).replace('"@@DEEP@@"', nested);
      break;
    }
    case 'oversized':
      payload = JSON.stringify({ ...body, padding: 'x'.repeat(BODY_LIMIT + rng.int(0, 4096)) });
      break;
    case 'invalidUtf8': {
      const bad = rng.pick([[0xff], [0xc3, 0x28], [0xed, 0xa0, 0x80], [0xc0, 0xaf], [0xf8, 0x88, 0x80, 0x80, 0x80], [0xe2, 0x82]]);
      const json = Buffer.from(JSON.stringify({ ...body, [path.includes('chat') ? 'user' : 'suffix']: 'AB' }));
      const at = json.indexOf('AB');
      payload = Buffer.concat([json.subarray(0, at), Buffer.from(bad), json.subarray(at + 2)]);
      if (path.includes('chat') && rng.chance(0.5)) {
        const msg = Buffer.from(JSON.stringify({ ...body, messages: [{ role: 'user', content: 'CD' }] }));
        const m = msg.indexOf('CD');
        payload = Buffer.concat([msg.subarray(0, m), Buffer.from(bad), msg.subarray(m + 2)]);
      }
      break;
    }
    case 'control': {
      const raw = String.fromCharCode(rng.int(0, 31));
      const escaped = rng.pick(['\\u0000', '\\ud800', '\\udfff', '\\ud83d', '\\u001b[31m', '\\u2028', '\\ufeff']);
      const content = rng.chance(0.5) ? raw : escaped;
      const base = path.includes('chat') ? { ...body, messages: [{ role: 'user', content: '@@C@@' }] } : { ...body, prompt: '@@C@@' };
      payload = JSON.stringify(base).replace('@@C@@', `x${content}y`);
      break;
    }
    case 'messages': {
      target = '/v1/chat/completions';
      const count = rng.pick([0, 1, 2047, 2048, 2049, 5000]);
      const role = rng.pick(['user', 'system', 'assistant', 'tool', 'function', 'constructor', '__proto__', 'toString', 'USER', '', 'hasOwnProperty']);
      const content = rng.pick([null, '', 'a', [], [{ type: 'text', text: 'a' }], [{ type: 'image_url', image_url: { url: 'x' } }], [{ type: 'text' }]]);
      payload = JSON.stringify({ max_tokens: 1, messages: Array.from({ length: count }, () => ({ role, content })) });
      break;
    }
    case 'contentType':
      headers['content-type'] = rng.pick(['', 'text/plain', 'application/xml', 'multipart/form-data; boundary=x', 'application/x-www-form-urlencoded', 'application/json; charset=utf-16', 'APPLICATION/JSON', 'application/json-patch+json', 'application/json, text/plain', 'application/octet-stream', ';;;', 'application/json; charset=']);
      if (headers['content-type'] === '') delete headers['content-type'];
      break;
    case 'unknownFields':
      for (let i = rng.int(1, 6); i > 0; i--) body[rng.pick(['frobnicate', 'metadata', 'tools', 'functions', 'tool_choice', 'audio', 'store', 'prediction', 'x'.repeat(rng.int(1, 500)), 'hasOwnProperty', 'toString', '__proto__'])] = randomValue(rng);
      payload = JSON.stringify(body);
      break;
    case 'notObject':
      payload = rng.pick(['null', '[]', '1', '"x"', 'true', '', ' ', '{}', '[{}]', '{"messages": {}}', '{"prompt": {}}']);
      break;
    case 'method':
      method = rng.pick(['GET', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'POST']);
      target = rng.pick(['/v1/models', '/v1/models/specd-pair-target', '/v1/models/%00', '/v1/models/%ff%fe', `/v1/models/${'a'.repeat(2000)}`, '/v1/chat/completions?stream=true', '/v1//completions', '/V1/completions', '/v1/embeddings', '/v1/../health', '/%76%31/models', '/v1/chat/completions/', '/']);
      if (method === 'GET' || method === 'DELETE' || method === 'OPTIONS') payload = '';
      break;
    case 'auth':
      headers.authorization = rng.pick(['', 'Bearer', 'Bearer ', `Bearer ${KEY}x`, `Bearer ${KEY.slice(0, -1)}`, 'Basic Zm9vOmJhcg==', `bearer ${KEY}`, `Bearer  ${KEY} `, `Bearer ${'k'.repeat(8000)}`, `Token ${KEY}`]);
      break;
    case 'longText':
      payload = JSON.stringify(path.includes('chat') ? { ...body, messages: [{ role: 'user', content: 'word '.repeat(rng.int(300, 12_000)) }] } : { ...body, prompt: 'word '.repeat(rng.int(300, 12_000)) });
      break;
  }
  return { kind, method, path: target, headers, body: method === 'GET' || method === 'OPTIONS' ? undefined : payload };
}

/** Why a response is unacceptable, or undefined when it is fine. */
function fault(res: RawResponse, req: FuzzCase): string | undefined {
  if (res.status >= 500) return `status ${res.status}`;
  if (res.status === 200) return validCompletion(res, req);
  if (res.status < 400) return `status ${res.status}`;
  if (req.method === 'HEAD') return undefined;
  let body: unknown;
  try {
    body = JSON.parse(res.body);
  } catch {
    return `a ${res.status} whose body is not JSON`;
  }
  if (!isOpenAIError(body)) return `a ${res.status} that is not an OpenAI error`;
  if (res.status === 429 && res.headers['retry-after'] === undefined) return 'a 429 without Retry-After';
  return undefined;
}

function validCompletion(res: RawResponse, req: FuzzCase): string | undefined {
  const type = String(res.headers['content-type'] ?? '');
  if (req.path === '/v1/responses') return validResponse(res, type);
  if (req.path === '/tokenize') return Array.isArray((JSON.parse(res.body) as { tokens?: unknown }).tokens) ? undefined : 'no tokens';
  if (req.path === '/detokenize') return typeof (JSON.parse(res.body) as { prompt?: unknown }).prompt === 'string' ? undefined : 'no prompt';
  if (type.startsWith('text/event-stream')) {
    const data = sseData(res.body);
    if (data.at(-1) !== '[DONE]') return 'a stream that does not end with [DONE]';
    for (const d of data.slice(0, -1)) {
      const chunk = JSON.parse(d) as { error?: unknown; object?: string };
      if (chunk.error) return `an error event in a stream: ${d}`;
      if (chunk.object !== 'chat.completion.chunk' && chunk.object !== 'text_completion') return `a chunk of object ${chunk.object}`;
    }
    return undefined;
  }
  const body = JSON.parse(res.body) as { object?: string; choices?: unknown[]; data?: unknown[]; id?: string };
  if (/^\/v1\/models/i.test(decodeURIComponent(req.path))) return body.object === 'list' || body.object === 'model' ? undefined : 'not a model object';
  if (body.object !== 'chat.completion' && body.object !== 'text_completion') return `object ${body.object}`;
  if (!Array.isArray(body.choices) || body.choices.length === 0) return 'no choices';
  return undefined;
}

/** A Responses API answer: a response object, or typed events ending with its completion. */
function validResponse(res: RawResponse, type: string): string | undefined {
  if (!type.startsWith('text/event-stream')) return (JSON.parse(res.body) as { object?: string }).object === 'response' ? undefined : 'not a response object';
  const events = res.body
    .split('\n')
    .filter((line) => line.startsWith('data: '))
    .map((line) => JSON.parse(line.slice('data: '.length)) as { type: string });
  if (events.length === 0 || events[0]!.type !== 'response.created') return 'a stream that does not open with response.created';
  const last = events.at(-1)!.type;
  if (last !== 'response.completed' && last !== 'response.incomplete') return `a stream that ends with ${last}`;
  return undefined;
}

const describeCase = (i: number, req: FuzzCase) => {
  const body = req.body === undefined ? '' : Buffer.from(req.body).toString('latin1');
  return `FUZZ_SEED=${SEED} case ${i} (${req.kind}): ${req.method} ${req.path} ${JSON.stringify(req.headers)} ${body.length > 300 ? `${body.slice(0, 300)}... (${body.length} bytes)` : body}`;
};

test(`${CASES} generated requests: OpenAI-shaped 4xx or a valid completion, never a 5xx`, async () => {
  const rng = generator(SEED);
  const cases = Array.from({ length: CASES }, () => fuzzCase(rng));
  const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  const statuses = new Map<number, number>();
  const failures: string[] = [];
  let next = 0;
  const client = async () => {
    while (next < cases.length) {
      const i = next++;
      const req = cases[i]!;
      let res: RawResponse;
      try {
        res = await rawRequest(url, { ...req, agent });
      } catch (err) {
        failures.push(`${describeCase(i, req)} -> request failed: ${(err as Error).message}`);
        continue;
      }
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      const why = fault(res, req);
      if (why) failures.push(`${describeCase(i, req)} -> ${why}: ${res.body.slice(0, 300)}`);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, client));
  agent.destroy();
  assert.deepEqual(failures.slice(0, 10), [], `${failures.length} failing cases`);
  // The mix covers both outcomes.
  assert.ok((statuses.get(200) ?? 0) > CASES / 20, `statuses ${JSON.stringify([...statuses])}`);
  assert.ok([...statuses.keys()].filter((s) => s >= 400).length >= 4, `statuses ${JSON.stringify([...statuses])}`);

  // The server is unharmed.
  assert.equal(app.specd.engine.running + app.specd.engine.waiting, 0);
  const res = await rawRequest(url, { path: '/v1/chat/completions', headers: jsonHeaders(KEY), body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 }) });
  assert.equal(res.status, 200, res.body);
  assert.equal(JSON.parse(res.body).choices[0].message.role, 'assistant');
});
