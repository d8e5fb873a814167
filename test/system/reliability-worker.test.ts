/**
 * Engine workers that fail mid-generation (faults injected through buildApp's test-only
 * `faults` option): a generation that throws, an uncaught exception that kills the worker
 * thread, a worker that calls process.exit. The request in flight ends with an error event in
 * its stream, or an OpenAI-shaped 500 when not streaming; a request queued behind it is served
 * by the replacement worker; the pool is whole again afterwards (/health, the gauges) and the
 * next requests succeed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/server/app.js';
import type { FaultKind } from '../../src/server/faults.js';
import { isOpenAIError, jsonHeaders, NO_EOS, sseData, until } from '../support/http-client.js';

const chatBody = (stream: boolean, maxTokens = 24) => ({
  messages: [{ role: 'user', content: 'Tell me a story.' }],
  max_tokens: maxTokens,
  temperature: 0,
  logit_bias: NO_EOS,
  stream,
});

async function chat(url: string, stream: boolean, maxTokens?: number): Promise<{ status: number; body: string }> {
  const res = await fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: jsonHeaders(), body: JSON.stringify(chatBody(stream, maxTokens)) });
  return { status: res.status, body: await res.text() };
}

async function expectSuccess(url: string, stream: boolean): Promise<void> {
  const res = await chat(url, stream, 8);
  assert.equal(res.status, 200, res.body);
  if (stream) assert.ok(!res.body.includes('"error"'), res.body);
  else assert.equal(JSON.parse(res.body).choices[0].finish_reason, 'length');
}

function faultSuite(kind: FaultKind, workerDies: boolean): void {
  describe(`a worker fault of kind "${kind}"`, () => {
    let app: FastifyInstance;
    let url: string;
    let lost = 0;
    before(async () => {
      // Generations 2 (streamed) and 4 (not streamed) fail after their first tokens.
      // One generation at a time: a worker that dies takes its whole batch with it, and these tests follow the one behind it.
      app = await buildApp({ workers: 1, maxQueue: 8, batching: { maxBatch: 1 }, pair: { head: null }, faults: { kind, at: [2, 4] } });
      await app.specd.engine.ready;
      url = await app.listen({ host: '127.0.0.1', port: 0 });
      app.specd.engine.options.onWorkerLost = () => lost++;
    });
    after(() => app?.close());

    test('a stream in flight ends with an error event and [DONE]; the request queued behind it succeeds', async () => {
      await expectSuccess(url, true); // generation 1
      const failing = chat(url, true, 200); // generation 2
      // In flight, or already failed: an exit right after the first tokens can come and go between two polls.
      let settled = false;
      void failing.then(() => (settled = true));
      await until(() => app.specd.engine.running === 1 || settled);
      const queued = chat(url, false, 8); // generation 3, waits for the worker
      const res = await failing;
      assert.equal(res.status, 200);
      const data = sseData(res.body);
      assert.equal(data.at(-1), '[DONE]');
      const last = JSON.parse(data.at(-2)!) as unknown;
      assert.ok(isOpenAIError(last), data.at(-2));
      assert.equal(last.error.type, 'server_error');
      assert.equal(last.error.code, 'internal_error');
      assert.ok(data.slice(0, -2).some((d) => d.includes('"content":"')), 'tokens came before the error');
      const after = await queued;
      assert.equal(after.status, 200, after.body);
    });

    test('not streaming: an OpenAI-shaped 500; the next requests succeed', async () => {
      const res = await chat(url, false, 200); // generation 4
      assert.equal(res.status, 500, res.body);
      const body = JSON.parse(res.body) as unknown;
      assert.ok(isOpenAIError(body), res.body);
      assert.equal(body.error.code, 'internal_error');
      await expectSuccess(url, true);
      await expectSuccess(url, false);
    });

    test(`the pool is whole again: /health 200, one worker ready, nothing running or waiting${workerDies ? ', the dead workers were replaced' : ''}`, async () => {
      const { engine } = app.specd;
      await until(() => engine.loadedWorkers === 1);
      const health = await fetch(`${url}/health`);
      assert.equal(health.status, 200);
      assert.deepEqual(await health.json(), { status: 'ok', workers: 1, workers_ready: 1, workers_stalled: 0, worker_stalls: 0 });
      assert.equal(engine.running + engine.waiting, 0);
      assert.equal(engine.state, 'ready');
      assert.equal(lost, workerDies ? 2 : 0);
    });
  });
}

faultSuite('throw', false);
faultSuite('uncaught', true);
faultSuite('exit', true);
