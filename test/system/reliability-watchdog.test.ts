/**
 * The watchdog (engine-pool.ts) against a worker that stalls on purpose (faults.ts `stall`: the
 * worker thread spins for ever after a generation's first tokens, as a stuck round would): the
 * stalled stream ends with a `worker_stalled` error event, /health says `stalled` until the
 * replacement has loaded, the metrics count the stall, and the request queued behind it is
 * served by the replacement. With shorter deadlines than the stall timeout: the stuck request
 * gets 408 `request_timeout` and a request waiting behind it 503 `queue_timeout` with
 * Retry-After, both through the official openai client.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import OpenAI, { APIError } from 'openai';
import { buildApp } from '../../src/server/app.js';
import { shutdown } from '../../src/server/shutdown.js';
import { isOpenAIError, jsonHeaders, metricValue, NO_EOS, sseData, until } from '../support/http-client.js';

const MODEL = 'specd-pair-target';
const STALL_TIMEOUT_MS = 1500;

const chatBody = (stream: boolean, maxTokens: number) => ({
  model: MODEL,
  messages: [{ role: 'user' as const, content: 'Tell me a story.' }],
  max_tokens: maxTokens,
  temperature: 0,
  logit_bias: NO_EOS,
  stream,
});

describe('a worker that stalls', () => {
  let app: FastifyInstance;
  let url: string;
  before(async () => {
    // Generation 2 stalls after its first tokens; one generation per worker, so the next one queues behind it.
    app = await buildApp({ workers: 1, maxQueue: 8, batching: { maxBatch: 1 }, pair: { head: null }, stallTimeoutMs: STALL_TIMEOUT_MS, faults: { kind: 'stall', at: [2] } });
    await app.specd.engine.ready;
    url = await app.listen({ host: '127.0.0.1', port: 0 });
  });
  after(() => app?.close());

  test('is replaced: its stream ends with worker_stalled, /health reports it, the queued request is served, the metric counts it', async () => {
    const first = await fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: jsonHeaders(), body: JSON.stringify(chatBody(false, 4)) });
    assert.equal(first.status, 200);
    assert.equal(await metricValue(url, 'specd_worker_stalls_total'), 0);

    const started = performance.now();
    const stalled = fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: jsonHeaders(), body: JSON.stringify(chatBody(true, 200)) }).then(async (r) => ({ status: r.status, body: await r.text() }));
    await until(() => app.specd.engine.running === 1);
    const queued = fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: jsonHeaders(), body: JSON.stringify(chatBody(false, 8)) }).then(async (r) => ({ status: r.status, body: await r.text() }));

    const res = await stalled;
    assert.ok(performance.now() - started >= STALL_TIMEOUT_MS, 'ended by the watchdog');
    assert.equal(res.status, 200);
    const data = sseData(res.body);
    assert.equal(data.at(-1), '[DONE]');
    const last = JSON.parse(data.at(-2)!) as unknown;
    assert.ok(isOpenAIError(last), data.at(-2));
    assert.equal(last.error.code, 'worker_stalled');
    assert.ok(data.slice(0, -2).some((d) => d.includes('"content":"')), 'tokens came before the stall');

    // Until the replacement has loaded, /health says so.
    const health = await fetch(`${url}/health`);
    const body = (await health.json()) as { status: string; worker_stalls: number };
    if (app.specd.engine.stalledWorkers > 0) {
      assert.equal(health.status, 503);
      assert.equal(body.status, 'stalled');
    }
    assert.equal(body.worker_stalls, 1);

    const served = await queued;
    assert.equal(served.status, 200, served.body);
    assert.equal(JSON.parse(served.body).choices[0].finish_reason, 'length');
    await until(() => app.specd.engine.stalledWorkers === 0);
    const healthy = await fetch(`${url}/health`);
    assert.equal(healthy.status, 200);
    assert.equal(await metricValue(url, 'specd_worker_stalls_total'), 1);
    const errors = await (await fetch(`${url}/metrics`)).text();
    assert.match(errors, /^specd_request_errors_total\{[^}]*code="worker_stalled"[^}]*\} 1$/m);
  });
});

describe('deadlines while a worker is stuck', () => {
  let app: FastifyInstance;
  let client: OpenAI;
  before(async () => {
    app = await buildApp({
      workers: 1,
      maxQueue: 8,
      batching: { maxBatch: 1 },
      pair: { head: null },
      requestTimeoutMs: 1000,
      queueTimeoutMs: 600,
      stallTimeoutMs: 4000,
      faults: { kind: 'stall', at: [1] },
    });
    await app.specd.engine.ready;
    const url = await app.listen({ host: '127.0.0.1', port: 0 });
    client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 30_000 });
  });
  after(() => app?.close());

  test('the stuck request gets 408 request_timeout, the one queued behind it 503 queue_timeout; after the stall timeout requests are served again', async () => {
    const stuck = client.chat.completions.create(chatBody(false, 200) as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming);
    await until(() => app.specd.engine.running === 1);
    const queued = client.chat.completions.create(chatBody(false, 8) as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming);
    await assert.rejects(queued, (err: APIError) => {
      assert.equal(err.status, 503);
      assert.equal(err.code, 'queue_timeout');
      assert.equal(err.headers?.get('retry-after'), '1');
      return true;
    });
    await assert.rejects(stuck, (err: APIError) => err.status === 408 && err.code === 'request_timeout' && /deadline/.test(err.message));
    await until(() => app.specd.engine.workerStalls === 1 && app.specd.engine.stalledWorkers === 0, 20_000, 'the stalled worker replaced');
    const res = await client.chat.completions.create(chatBody(false, 8) as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming);
    assert.equal(res.choices[0]!.finish_reason, 'length');
  });
});

describe('SIGTERM while a worker is stuck', () => {
  test('the drain answers the stuck request and the one queued behind it with 503 shutting_down, and the server stops', async () => {
    const app = await buildApp({ workers: 1, maxQueue: 8, batching: { maxBatch: 1 }, pair: { head: null }, stallTimeoutMs: 600_000, faults: { kind: 'stall', at: [1] } });
    await app.specd.engine.ready;
    const url = await app.listen({ host: '127.0.0.1', port: 0 });
    const send = (stream: boolean) =>
      fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: jsonHeaders(), body: JSON.stringify(chatBody(stream, 200)) }).then(async (r) => ({ status: r.status, body: await r.text() }));
    const stuck = send(true);
    await until(() => app.specd.engine.running === 1);
    const queued = send(false);
    await until(() => app.specd.engine.waiting === 1);
    await shutdown(app, 100);
    const [s, q] = await Promise.all([stuck, queued]);
    assert.equal(q.status, 503, q.body);
    assert.equal(JSON.parse(q.body).error.code, 'shutting_down');
    assert.equal(s.status, 200, 'the stream had started');
    const data = sseData(s.body);
    assert.equal(data.at(-1), '[DONE]');
    assert.equal(JSON.parse(data.at(-2)!).error.code, 'shutting_down');
  });
});
