/**
 * The server's answers to invalid, unauthorised, oversized and untimely requests, through
 * `app.inject` (no listening socket): every one is OpenAI-shaped, names the parameter at fault
 * and is never a 5xx; /health is 503 while the workers load, then 200; a full queue answers
 * 429 with Retry-After.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { buildApp } from '../../src/server/app.js';
import { defaultWorkers, threadsPerWorker } from '../../src/server/defaults.js';
import { requestPolicy } from '../../src/server/speculation.js';
import { ApiError } from '../../src/server/errors.js';

const KEY = 'test-key-123';
const BODY_LIMIT = 64 * 1024;
const auth = { authorization: `Bearer ${KEY}` };
const user = (content: string) => [{ role: 'user', content }];

let app: FastifyInstance;
let loadingHealth: LightMyRequestResponse;
let loadingChat: LightMyRequestResponse;
let loadingSpecdec: LightMyRequestResponse;
let loadingMetrics: LightMyRequestResponse[];

before(async () => {
  // The bundled pair without an acceptance head (whether or not one is bundled).
  app = await buildApp({ workers: 1, maxQueue: 1, batching: { maxBatch: 1 }, apiKey: KEY, bodyLimit: BODY_LIMIT, pair: { head: null } });
  // Straight after buildApp the worker is still loading its models.
  loadingHealth = await app.inject({ method: 'GET', url: '/health' });
  loadingChat = await app.inject({ method: 'POST', url: '/v1/chat/completions', headers: auth, payload: { messages: user('hi'), max_tokens: 4 } });
  loadingSpecdec = await app.inject({ method: 'POST', url: '/v1/chat/completions', headers: auth, payload: { messages: user('hi'), max_tokens: 4, speculative: { policy: 'specdec++' } } });
  // Two scrapes in a row: the event-loop statistics have no sample yet, then none since the last scrape.
  loadingMetrics = [await app.inject({ method: 'GET', url: '/metrics' }), await app.inject({ method: 'GET', url: '/metrics' })];
  await app.specd.engine.ready;
});
after(() => app?.close());

const chat = (payload: unknown, headers: Record<string, string> = auth) => app.inject({ method: 'POST', url: '/v1/chat/completions', headers, payload: payload as object });
const completions = (payload: unknown) => app.inject({ method: 'POST', url: '/v1/completions', headers: auth, payload: payload as object });

interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** The response is an OpenAI error with this status, naming `param`. */
function expectError(res: LightMyRequestResponse, status: number, param: string | null, code?: string): ErrorBody['error'] {
  const body = res.json<ErrorBody>();
  assert.equal(res.statusCode, status, res.body);
  assert.ok(body.error && typeof body.error.message === 'string' && body.error.message.length > 0, res.body);
  assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(body.error.param, param, res.body);
  if (code !== undefined) assert.equal(body.error.code, code, res.body);
  assert.equal(body.error.type, status >= 500 ? 'server_error' : status === 429 ? 'rate_limit_error' : 'invalid_request_error');
  return body.error;
}

describe('loading', () => {
  test('/health is 503 {status: loading} while the workers load, then 200', async () => {
    assert.equal(loadingHealth.statusCode, 503);
    assert.equal(loadingHealth.json().status, 'loading');
    const res = await app.inject({ method: 'GET', url: '/health' });
    assert.equal(res.statusCode, 200);
    assert.deepEqual(res.json(), { status: 'ok', workers: 1, workers_ready: 1, workers_stalled: 0, worker_stalls: 0 });
  });

  test('generation requests while loading get 503 with Retry-After', () => {
    expectError(loadingChat, 503, null, 'model_loading');
    assert.equal(loadingChat.headers['retry-after'], '1');
    // Whether the server has an acceptance head is not known before the models have loaded.
    expectError(loadingSpecdec, 503, null, 'model_loading');
  });

  test('/metrics straight after start: every sample a finite number, no NaN', () => {
    for (const res of loadingMetrics) {
      assert.equal(res.statusCode, 200);
      assert.doesNotMatch(res.body, /nan/i);
      const samples = res.body.split('\n').filter((l) => l !== '' && !l.startsWith('#'));
      assert.ok(samples.some((l) => l.startsWith('nodejs_eventloop_lag_mean_seconds ')), 'the event-loop statistics are reported');
      for (const line of samples) {
        const value = Number(line.slice(line.lastIndexOf(' ') + 1));
        assert.ok(Number.isFinite(value), line);
        // Not the empty histogram's minimum (2^63 ns).
        if (line.startsWith('nodejs_eventloop_lag_')) assert.ok(value >= 0 && value < 60, line);
      }
    }
  });
});

describe('authentication', () => {
  test('a missing or wrong key is 401; /health and /metrics stay open', async () => {
    expectError(await chat({ messages: user('hi') }, {}), 401, null, 'invalid_api_key');
    expectError(await chat({ messages: user('hi') }, { authorization: 'Bearer wrong' }), 401, null, 'invalid_api_key');
    expectError(await chat({ messages: user('hi') }, { authorization: KEY }), 401, null, 'invalid_api_key');
    assert.equal((await app.inject({ method: 'GET', url: '/v1/models' })).statusCode, 401);
    assert.equal((await app.inject({ method: 'GET', url: '/v1/models', headers: auth })).statusCode, 200);
    assert.equal((await app.inject({ method: 'GET', url: '/metrics' })).statusCode, 200);
  });
});

describe('models', () => {
  test('/v1/models lists the served model; an unknown model is 404 model_not_found', async () => {
    const list = (await app.inject({ method: 'GET', url: '/v1/models', headers: auth })).json();
    assert.equal(list.object, 'list');
    assert.equal(list.data[0].id, 'specd-pair-target');
    assert.equal(list.data[0].max_model_len, 1024);
    expectError(await chat({ model: 'gpt-4o', messages: user('hi') }), 404, 'model', 'model_not_found');
    expectError(await completions({ model: 'nope', prompt: 'x' }), 404, 'model', 'model_not_found');
    expectError(await app.inject({ method: 'GET', url: '/v1/models/nope', headers: auth }), 404, 'model', 'model_not_found');
    expectError(await app.inject({ method: 'GET', url: '/v1/nothing', headers: auth }), 404, null, 'not_found');
  });
});

describe('request validation: 400 naming the parameter', () => {
  const cases: [string, unknown, string | null, string?][] = [
    ['missing messages', {}, 'messages', 'missing_required_parameter'],
    ['empty messages', { messages: [] }, 'messages'],
    ['messages not an array', { messages: 'hi' }, 'messages', 'invalid_type'],
    ['message without role', { messages: [{ content: 'x' }] }, 'messages[0].role', 'missing_required_parameter'],
    ['unknown role', { messages: [{ role: 'robot', content: 'x' }] }, 'messages[0].role'],
    ['tool message without tool_call_id', { messages: [{ role: 'tool', content: 'x' }] }, 'messages[0].tool_call_id', 'missing_required_parameter'],
    ['function role (deprecated)', { messages: [{ role: 'function', content: 'x', name: 'f' }] }, 'messages[0].role', 'unsupported_parameter'],
    ['tool_calls on a user message', { messages: [{ role: 'user', content: 'x', tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: '{}' } }] }] }, 'messages[0].tool_calls'],
    ['tool call arguments not a string', { messages: [{ role: 'assistant', content: null, tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: { a: 1 } } }] }] }, 'messages[0].tool_calls[0].function.arguments', 'invalid_type'],
    ['content of the wrong type', { messages: [{ role: 'user', content: 5 }] }, 'messages[0].content', 'invalid_type'],
    ['image content part', { messages: [{ role: 'user', content: [{ type: 'text', text: 'a' }, { type: 'image_url', image_url: {} }] }] }, 'messages[0].content[1].type', 'unsupported_parameter'],
    ['text part without text', { messages: [{ role: 'user', content: [{ type: 'text' }] }] }, 'messages[0].content[0].text', 'missing_required_parameter'],
    ['max_tokens a string', { messages: user('x'), max_tokens: '5' }, 'max_tokens', 'invalid_type'],
    ['max_tokens 0', { messages: user('x'), max_tokens: 0 }, 'max_tokens'],
    ['max_tokens fractional', { messages: user('x'), max_tokens: 2.5 }, 'max_tokens', 'invalid_type'],
    ['max_completion_tokens negative', { messages: user('x'), max_completion_tokens: -1 }, 'max_completion_tokens'],
    ['temperature above 2', { messages: user('x'), temperature: 2.5 }, 'temperature'],
    ['temperature a string', { messages: user('x'), temperature: 'hot' }, 'temperature', 'invalid_type'],
    ['top_p negative', { messages: user('x'), top_p: -0.1 }, 'top_p'],
    ['top_p above 1', { messages: user('x'), top_p: 1.5 }, 'top_p'],
    ['top_k below -1', { messages: user('x'), top_k: -2 }, 'top_k'],
    ['seed fractional', { messages: user('x'), seed: 1.5 }, 'seed', 'invalid_type'],
    ['stop a number', { messages: user('x'), stop: 5 }, 'stop', 'invalid_type'],
    ['stop list with a number', { messages: user('x'), stop: ['a', 1] }, 'stop[1]', 'invalid_type'],
    ['too many stop strings', { messages: user('x'), stop: Array.from({ length: 17 }, (_, i) => `s${i}`) }, 'stop'],
    ['n 0', { messages: user('x'), n: 0 }, 'n'],
    ['n too large', { messages: user('x'), n: 100 }, 'n'],
    ['logprobs a number', { messages: user('x'), logprobs: 3 }, 'logprobs', 'invalid_type'],
    ['top_logprobs above 20', { messages: user('x'), logprobs: true, top_logprobs: 21 }, 'top_logprobs'],
    ['top_logprobs without logprobs', { messages: user('x'), top_logprobs: 2 }, 'top_logprobs'],
    ['presence_penalty above 2', { messages: user('x'), presence_penalty: 3 }, 'presence_penalty'],
    ['frequency_penalty below -2', { messages: user('x'), frequency_penalty: -3 }, 'frequency_penalty'],
    ['stop with more strings than allowed', { messages: user('x'), stop: Array.from({ length: 17 }, (_, i) => `s${i}`) }, 'stop', 'invalid_value'],
    ['logit_bias key not a token id', { messages: user('x'), logit_bias: { abc: 1 } }, 'logit_bias'],
    ['logit_bias value out of range', { messages: user('x'), logit_bias: { '65': 101 } }, 'logit_bias[65]'],
    ['logit_bias id outside the vocabulary', { messages: user('x'), logit_bias: { '999': 1 } }, 'logit_bias'],
    ['stream a string', { messages: user('x'), stream: 'yes' }, 'stream', 'invalid_type'],
    ['ignore_eos a string', { messages: user('x'), ignore_eos: 'true' }, 'ignore_eos', 'invalid_type'],
    ['stream_options without stream', { messages: user('x'), stream_options: { include_usage: true } }, 'stream_options'],
    ['tools not an array', { messages: user('x'), tools: { type: 'function' } }, 'tools', 'invalid_type'],
    ['tool of another type', { messages: user('x'), tools: [{ type: 'code_interpreter' }] }, 'tools[0].type', 'unsupported_parameter'],
    ['tool without a function name', { messages: user('x'), tools: [{ type: 'function', function: {} }] }, 'tools[0].function.name', 'missing_required_parameter'],
    ['tool with a bad function name', { messages: user('x'), tools: [{ type: 'function', function: { name: 'get weather' } }] }, 'tools[0].function.name'],
    ['tool declared twice', { messages: user('x'), tools: [{ type: 'function', function: { name: 'f' } }, { type: 'function', function: { name: 'f' } }] }, 'tools[1].function.name'],
    ['tool parameters with an unenforced keyword', { messages: user('x'), tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: { n: { type: 'integer', multipleOf: 2 } } } } }] }, 'tools[0].function.parameters', 'unsupported_schema'],
    ['tool parameters of a type other than object', { messages: user('x'), tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'string' } } }] }, 'tools[0].function.parameters', 'invalid_function_parameters'],
    ['tool strict not a boolean', { messages: user('x'), tools: [{ type: 'function', function: { name: 'f', strict: 'yes' } }] }, 'tools[0].function.strict', 'invalid_type'],
    ['tool description not a string', { messages: user('x'), tools: [{ type: 'function', function: { name: 'f', description: 5 } }] }, 'tools[0].function.description', 'invalid_type'],
    ['tool_choice without tools', { messages: user('x'), tool_choice: 'required' }, 'tool_choice'],
    ['tool_choice naming no declared function', { messages: user('x'), tools: [{ type: 'function', function: { name: 'f' } }], tool_choice: { type: 'function', function: { name: 'g' } } }, 'tool_choice.function.name'],
    ['tool_choice unknown', { messages: user('x'), tools: [{ type: 'function', function: { name: 'f' } }], tool_choice: 'always' }, 'tool_choice'],
    ['tools with a response format', { messages: user('x'), tools: [{ type: 'function', function: { name: 'f' } }], response_format: { type: 'json_object' } }, 'response_format', 'unsupported_parameter'],
    ['deprecated functions', { messages: user('x'), functions: [{ name: 'f' }] }, 'functions', 'unsupported_parameter'],
    ['response_format unknown type', { messages: user('x'), response_format: { type: 'xml' } }, 'response_format.type'],
    ['response_format with a grammar beside its schema', { messages: user('x'), response_format: { type: 'json_schema', json_schema: { name: 'a', schema: { type: 'string' } }, grammar: 'root ::= "a"' } }, 'response_format.grammar', 'unsupported_parameter'],
    ['json_schema with a field OpenAI does not define', { messages: user('x'), response_format: { type: 'json_schema', json_schema: { name: 'a', schema: { type: 'string' }, regex: 'a+' } } }, 'response_format.json_schema.regex', 'unsupported_parameter'],
    ["vLLM's guided_json", { messages: user('x'), guided_json: { type: 'string' } }, 'guided_json', 'unsupported_parameter'],
    ["vLLM's structured_outputs beside a response_format", { messages: user('x'), response_format: { type: 'json_object' }, structured_outputs: { grammar: 'root ::= "a"' } }, 'structured_outputs', 'unsupported_parameter'],
    ['response_format not an object', { messages: user('x'), response_format: 'json' }, 'response_format', 'invalid_type'],
    ['json_schema without json_schema', { messages: user('x'), response_format: { type: 'json_schema' } }, 'response_format.json_schema', 'missing_required_parameter'],
    ['json_schema without a name', { messages: user('x'), response_format: { type: 'json_schema', json_schema: { schema: { type: 'object' } } } }, 'response_format.json_schema.name', 'missing_required_parameter'],
    ['json_schema schema not an object', { messages: user('x'), response_format: { type: 'json_schema', json_schema: { name: 'a', schema: [1] } } }, 'response_format.json_schema.schema', 'invalid_type'],
    ['json_schema with an unenforced keyword', { messages: user('x'), response_format: { type: 'json_schema', json_schema: { name: 'a', schema: { type: 'object', properties: { tags: { type: 'array', uniqueItems: true } } } } } }, 'response_format.json_schema.schema', 'unsupported_schema'],
    ['json_schema xgrammar cannot compile', { messages: user('x'), response_format: { type: 'json_schema', json_schema: { name: 'a', schema: { type: 'foo' } } } }, 'response_format.json_schema.schema', 'invalid_schema'],
    ['json_schema with a dangling $ref', { messages: user('x'), response_format: { type: 'json_schema', json_schema: { name: 'a', schema: { $ref: '#/$defs/missing' } } } }, 'response_format.json_schema.schema', 'invalid_schema'],
    ["vLLM's min_p", { messages: user('x'), min_p: 0.1 }, 'min_p', 'unsupported_parameter'],
    ["vLLM's repetition_penalty", { messages: user('x'), repetition_penalty: 1.2 }, 'repetition_penalty', 'unsupported_parameter'],
    ["vLLM's min_tokens", { messages: user('x'), min_tokens: 4 }, 'min_tokens', 'unsupported_parameter'],
    ["vLLM's stop_token_ids", { messages: user('x'), stop_token_ids: [7] }, 'stop_token_ids', 'unsupported_parameter'],
    ["vLLM's include_stop_str_in_output", { messages: user('x'), include_stop_str_in_output: true }, 'include_stop_str_in_output', 'unsupported_parameter'],
    ["vLLM's allowed_token_ids", { messages: user('x'), allowed_token_ids: [1, 2] }, 'allowed_token_ids', 'unsupported_parameter'],
    ["vLLM's bad_words", { messages: user('x'), bad_words: ['x'] }, 'bad_words', 'unsupported_parameter'],
    ["vLLM's use_beam_search", { messages: user('x'), use_beam_search: true }, 'use_beam_search', 'unsupported_parameter'],
    ["vLLM's length_penalty", { messages: user('x'), length_penalty: 0.5 }, 'length_penalty', 'unsupported_parameter'],
    ["vLLM's prompt_logprobs", { messages: user('x'), prompt_logprobs: 1 }, 'prompt_logprobs', 'unsupported_parameter'],
    ["vLLM's truncate_prompt_tokens", { messages: user('x'), truncate_prompt_tokens: 8 }, 'truncate_prompt_tokens', 'unsupported_parameter'],
    ["vLLM's logits_processors", { messages: user('x'), logits_processors: ['a.b'] }, 'logits_processors', 'unsupported_parameter'],
    ['audio', { messages: user('x'), audio: { voice: 'alloy', format: 'mp3' } }, 'audio', 'unsupported_parameter'],
    ['modalities audio', { messages: user('x'), modalities: ['text', 'audio'] }, 'modalities', 'unsupported_parameter'],
    ['speculative not an object', { messages: user('x'), speculative: 'fast' }, 'speculative', 'invalid_type'],
    ['speculative unknown policy', { messages: user('x'), speculative: { policy: 'magic' } }, 'speculative.policy'],
    ['speculative k out of range', { messages: user('x'), speculative: { policy: 'fixed', k: 99 } }, 'speculative.k'],
    ['speculative k not an integer', { messages: user('x'), speculative: { k: 1.5 } }, 'speculative.k', 'invalid_type'],
    ['speculative p_min out of range', { messages: user('x'), speculative: { policy: 'confidence', p_min: 2 } }, 'speculative.p_min'],
    ['speculative knob of another policy', { messages: user('x'), speculative: { policy: 'fixed', p_min: 0.5 } }, 'speculative.p_min'],
    ['speculative unknown knob', { messages: user('x'), speculative: { turbo: true } }, 'speculative.turbo', 'unknown_parameter'],
    ['speculative hybrid (reserved, not available yet)', { messages: user('x'), speculative: { policy: 'hybrid' } }, 'speculative.policy'],
    ['speculative suffix knob out of range', { messages: user('x'), speculative: { policy: 'suffix', suffix_decoding_max_tree_depth: 999 } }, 'speculative.suffix_decoding_max_tree_depth'],
    ['speculative policy needing a head the server lacks', { messages: user('x'), speculative: { policy: 'specdec++', threshold: 0.5 } }, 'speculative.policy'],
    ['prompt + max_tokens beyond the context', { messages: user('x'), max_tokens: 1020 }, 'messages', 'context_length_exceeded'],
    ['prompt alone beyond the context', { messages: user('x'.repeat(1100)) }, 'messages', 'context_length_exceeded'],
    ['body not an object', [1, 2], null, 'invalid_body'],
  ];
  for (const [label, payload, param, code] of cases) {
    test(`chat: ${label}`, async () => {
      expectError(await chat(payload), 400, param, code);
    });
  }

  const completionCases: [string, unknown, string | null, string?][] = [
    ['missing prompt', {}, 'prompt', 'missing_required_parameter'],
    ['prompt a number', { prompt: 5 }, 'prompt', 'invalid_type'],
    ['empty prompt', { prompt: '' }, 'prompt'],
    ['token id outside the vocabulary', { prompt: [72, 105, 9999] }, 'prompt'],
    ['negative token id', { prompt: [[72, -1]] }, 'prompt'],
    ['mixed prompt list', { prompt: ['a', 1] }, 'prompt[1]', 'invalid_type'],
    ['logprobs a boolean', { prompt: 'a', logprobs: true }, 'logprobs', 'invalid_type'],
    ['logprobs above 20', { prompt: 'a', logprobs: 21 }, 'logprobs'],
    ['echo', { prompt: 'a', echo: true }, 'echo', 'unsupported_parameter'],
    ['response_format with an uncompilable schema', { prompt: 'a', response_format: { type: 'json_schema', json_schema: { name: 'a', schema: { type: 'object', minProperties: 1 } } } }, 'response_format.json_schema.schema', 'invalid_schema'],
    ['ignore_eos a number', { prompt: 'a', ignore_eos: 1 }, 'ignore_eos', 'invalid_type'],
    ['suffix', { prompt: 'a', suffix: 'b' }, 'suffix', 'unsupported_parameter'],
    ["vLLM's guided_regex", { prompt: 'a', guided_regex: 'a+' }, 'guided_regex', 'unsupported_parameter'],
    ['best_of', { prompt: 'a', best_of: 3 }, 'best_of', 'unsupported_parameter'],
    ["vLLM's repetition_penalty", { prompt: 'a', repetition_penalty: 1.1 }, 'repetition_penalty', 'unsupported_parameter'],
    ['too many choices', { prompt: ['a', 'b', 'c'], n: 6 }, 'prompt'],
    ['max_tokens beyond the context', { prompt: 'a', max_tokens: 1024 }, 'prompt', 'context_length_exceeded'],
  ];
  for (const [label, payload, param, code] of completionCases) {
    test(`completions: ${label}`, async () => {
      expectError(await completions(payload), 400, param, code);
    });
  }

  test('a body that is not JSON (or not an object) is 400; an unknown content type is 415; none is a 5xx', async () => {
    const bad = await app.inject({ method: 'POST', url: '/v1/chat/completions', headers: { ...auth, 'content-type': 'application/json' }, payload: '{"messages": [' });
    expectError(bad, 400, null, 'invalid_body');
    const text = await app.inject({ method: 'POST', url: '/v1/chat/completions', headers: { ...auth, 'content-type': 'text/plain' }, payload: 'hello' });
    expectError(text, 400, null, 'invalid_body');
    const xml = await app.inject({ method: 'POST', url: '/v1/chat/completions', headers: { ...auth, 'content-type': 'application/xml' }, payload: '<a/>' });
    assert.equal(xml.statusCode, 415);
    assert.equal(xml.json().error.type, 'invalid_request_error');
  });

  test('a body over the limit is 413', async () => {
    const res = await chat({ messages: user('x'.repeat(BODY_LIMIT)) });
    expectError(res, 413, null, 'request_too_large');
  });

  test("values OpenAI's reference accepts: top_p 0 keeps only the most likely token; reasoning_effort none, tool_choice auto without tools, a prediction", async () => {
    const greedy = await chat({ messages: user('Hi'), max_tokens: 12, temperature: 0 });
    const nucleus0 = await chat({ messages: user('Hi'), max_tokens: 12, temperature: 1, top_p: 0, seed: 5 });
    assert.equal(nucleus0.statusCode, 200, nucleus0.body);
    assert.equal(nucleus0.json().choices[0].message.content, greedy.json().choices[0].message.content);
    const refusal = await chat({ messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: [{ type: 'refusal', refusal: 'I cannot.' }] }, { role: 'user', content: 'Why?' }], max_tokens: 2 });
    assert.equal(refusal.statusCode, 200, `an assistant refusal part is text: ${refusal.body}`);
    const res = await chat({ messages: user('Hi'), max_tokens: 2, reasoning_effort: 'none', tool_choice: 'auto', tools: [], function_call: 'auto', verbosity: 'low', service_tier: 'auto', store: false });
    assert.equal(res.statusCode, 200, res.body);
    expectError(await chat({ messages: user('Hi'), reasoning_effort: 'low' }), 400, 'reasoning_effort', 'unsupported_parameter');
    // A predicted output only speeds a response up at OpenAI: accepted, and the output is the same.
    for (const content of ['Hello there', [{ type: 'text', text: 'Hello' }]]) {
      const predicted = await chat({ messages: user('Hi'), max_tokens: 12, temperature: 0, prediction: { type: 'content', content } });
      assert.equal(predicted.statusCode, 200, predicted.body);
      assert.equal(predicted.json().choices[0].message.content, greedy.json().choices[0].message.content);
    }
    expectError(await chat({ messages: user('Hi'), prediction: { type: 'image' } }), 400, 'prediction', 'unsupported_parameter');
  });

  test("vLLM's sampling extras at their neutral values are accepted, with the same output", async () => {
    const greedy = await chat({ messages: user('Hi'), max_tokens: 8, temperature: 0 });
    const neutral = await chat({ messages: user('Hi'), max_tokens: 8, temperature: 0, min_p: 0, repetition_penalty: 1, min_tokens: 0, stop_token_ids: [], include_stop_str_in_output: false, allowed_token_ids: null, bad_words: [], use_beam_search: false, length_penalty: 1, prompt_logprobs: null, logits_processors: [] });
    assert.equal(neutral.statusCode, 200, neutral.body);
    assert.equal(neutral.json().choices[0].message.content, greedy.json().choices[0].message.content);
  });

  test('unknown extra fields are ignored, as OpenAI does', async () => {
    const res = await chat({ messages: user('Hi'), max_tokens: 2, temperature: 0, frobnicate: { a: 1 }, metadata: { k: 'v' }, user: 'u1', tool_choice: 'none', response_format: { type: 'text' } });
    assert.equal(res.statusCode, 200, res.body);
    assert.equal(res.json().choices[0].message.role, 'assistant');
  });
});

describe('capacity', () => {
  test('with one worker busy and the queue (1) full, the next request gets 429 with Retry-After', async () => {
    // Long generations: EOS is biased away so the first keeps the worker busy.
    const long = { messages: user('Tell me a long story.'), max_tokens: 120, temperature: 0, logit_bias: { '256': -100, '258': -100 } };
    const { engine } = app.specd;
    const first = chat(long);
    await until(() => engine.running === 1);
    const second = chat(long);
    await until(() => engine.waiting === 1);
    const third = await chat({ ...long, max_tokens: 4 });
    expectError(third, 429, null, 'queue_full');
    assert.equal(third.headers['retry-after'], '1');
    assert.equal((await first).statusCode, 200);
    assert.equal((await second).statusCode, 200);
    const after = await chat({ ...long, max_tokens: 4 });
    assert.equal(after.statusCode, 200, 'capacity comes back');
  });
});

/** Polls `cond` every few milliseconds until it holds (fails after `timeoutMs`). */
async function until(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) assert.fail('condition not reached in time');
    await new Promise((r) => setTimeout(r, 2));
  }
}

describe('per-request speculation (unit)', () => {
  const server = { policy: 'fixed', k: 4 } as const;
  test('knobs override the server default; another policy starts from its own defaults', () => {
    assert.deepEqual(requestPolicy(undefined, server), server);
    assert.deepEqual(requestPolicy({ k: 2 }, server), { policy: 'fixed', k: 2 });
    assert.deepEqual(requestPolicy({ policy: 'none' }, server), { policy: 'none' });
    assert.deepEqual(requestPolicy({ policy: 'confidence', p_min: 0.3 }, server), { policy: 'confidence', pMin: 0.3, kMax: 16 });
  });
  test('bad knobs throw a 400 naming them', () => {
    assert.throws(() => requestPolicy({ policy: 'none', k: 3 }, server), (e: ApiError) => e.status === 400 && e.param === 'speculative.k');
    assert.throws(() => requestPolicy({ policy: 'fixed:3' }, server), (e: ApiError) => e.param === 'speculative.policy');
    assert.throws(() => requestPolicy({ policy: 'confidence', k_max: 0 }, server), (e: ApiError) => e.param === 'speculative.k_max');
  });
});

describe('models that fail to load', () => {
  test('/health reports the error (503) and generation requests get 503, not a hang', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'specd-broken-'));
    const target = fileURLToPath(new URL('../../../models/specd-pair-target/', import.meta.url));
    for (const f of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json']) cpSync(join(target, f), join(dir, f));
    mkdirSync(join(dir, 'onnx'));
    writeFileSync(join(dir, 'onnx', 'model.onnx'), 'not an onnx graph');
    const broken = await buildApp({ workers: 1, pair: { target: dir, draft: null, head: null }, policy: { policy: 'none' } });
    try {
      await assert.rejects(broken.specd.engine.ready);
      const health = await broken.inject({ method: 'GET', url: '/health' });
      assert.equal(health.statusCode, 503);
      assert.equal(health.json().status, 'error');
      assert.match(health.json().message, /model\.onnx/);
      const res = await broken.inject({ method: 'POST', url: '/v1/completions', payload: { prompt: 'hi', max_tokens: 2 } });
      expectError(res, 503, null, 'engine_unavailable');
    } finally {
      await broken.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the main thread', () => {
  test("never loads onnxruntime-node: the server's import graph reaches it only through the worker module", () => {
    const seen = new Set<string>();
    const visit = (file: string, path: string[]): void => {
      if (seen.has(file)) return;
      seen.add(file);
      const source = readFileSync(file, 'utf8');
      for (const m of source.matchAll(/(?:^|\n)\s*(?:import|export)\s[^;]*?from\s*'([^']+)'|import\('([^']+)'\)/g)) {
        const spec = m[1] ?? m[2]!;
        assert.ok(!spec.startsWith('onnxruntime'), `${[...path, file].join(' -> ')} imports ${spec}`);
        if (spec.startsWith('.')) visit(resolve(dirname(file), spec), [...path, file]);
      }
    };
    const dist = (rel: string) => fileURLToPath(new URL(rel, import.meta.url));
    visit(dist('../../src/server/app.js'), []);
    visit(dist('../../src/cli/serve.js'), []);
    assert.ok(seen.size > 15, `walked ${seen.size} modules`);
    assert.ok(![...seen].some((f) => f.endsWith('/server/worker.js')), 'the worker module is loaded by piscina only');
  });
});

describe('worker defaults', () => {
  test('one worker with all cores on small machines and GPUs, else one per 4 cores; workers x threads <= cores', () => {
    assert.equal(defaultWorkers(2), 1);
    assert.equal(defaultWorkers(4), 1);
    assert.equal(defaultWorkers(16), 4);
    assert.equal(defaultWorkers(16, 'webgpu'), 1);
    for (const cores of [1, 2, 3, 4, 6, 8, 16, 64]) {
      const w = defaultWorkers(cores);
      assert.ok(w * threadsPerWorker(cores, w) <= cores, `${cores} cores`);
    }
    assert.equal(threadsPerWorker(2, 1), 2);
  });
});
