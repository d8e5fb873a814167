/**
 * Load: more streams than the queue holds are refused with 429 and Retry-After (and a draining
 * server answers 503 with Retry-After) while the admitted ones finish; 500 clients that drop
 * their streams mid-way (fetch aborted after the first chunk, or the socket destroyed) leave no
 * generation running or waiting, the next request succeeds and the server's memory stays flat.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/server/app.js';
import { isOpenAIError, jsonHeaders, metricValue, NO_EOS, rawRequest, streamChat, until } from '../support/http-client.js';
import { residentBytes, type ServeProcess, startServe } from '../support/serve-process.js';

const story = (maxTokens: number) => ({ messages: [{ role: 'user', content: 'Tell me a story.' }], max_tokens: maxTokens, temperature: 0, logit_bias: NO_EOS });

describe('overload', () => {
  let app: FastifyInstance;
  let url: string;
  before(async () => {
    app = await buildApp({ workers: 1, maxQueue: 2, batching: { maxBatch: 2 }, pair: { head: null } });
    await app.specd.engine.ready;
    url = await app.listen({ host: '127.0.0.1', port: 0 });
  });
  after(() => app?.close());

  test('beyond workers x max-batch + max-queue, streams get 429 rate_limit_error with Retry-After; the admitted ones finish', async () => {
    const outcomes = await Promise.all(Array.from({ length: 12 }, () => streamChat(url, story(40))));
    const ok = outcomes.filter((o) => o.status === 200);
    const refused = outcomes.filter((o) => o.status === 429);
    assert.equal(ok.length + refused.length, outcomes.length, JSON.stringify(outcomes.map((o) => o.status)));
    assert.ok(ok.length >= 3 && refused.length >= 1, `${ok.length} admitted, ${refused.length} refused`);
    for (const o of ok) assert.ok(o.body.endsWith('data: [DONE]\n\n') && !o.body.includes('"error"'));
    for (const o of refused) {
      assert.equal(o.retryAfter, '1');
      const body = JSON.parse(o.body) as unknown;
      assert.ok(isOpenAIError(body));
      assert.equal(body.error.type, 'rate_limit_error');
      assert.equal(body.error.code, 'queue_full');
    }
    assert.equal((await streamChat(url, story(4))).status, 200, 'capacity comes back');
  });

  test('a draining server answers 503 with Retry-After', async () => {
    app.specd.engine.drain();
    const res = await rawRequest(url, { path: '/v1/completions', headers: jsonHeaders(), body: JSON.stringify({ prompt: 'hi', max_tokens: 1 }) });
    assert.equal(res.status, 503);
    assert.equal(res.headers['retry-after'], '1');
    assert.equal(JSON.parse(res.body).error.code, 'shutting_down');
  });
});

describe('disconnects', () => {
  const CLIENTS = 500;
  const CONCURRENCY = 16;
  let server: ServeProcess;
  before(async () => {
    server = await startServe(['--workers', '2', '--threads', '1', '--max-queue', '64', '--no-head']);
  });
  after(async () => {
    assert.equal(await server.stop(), 0);
  });

  /** A streamed chat whose socket is destroyed at its first chunk. */
  const destroyAtFirstChunk = () =>
    new Promise<void>((resolve, reject) => {
      const { hostname, port } = new URL(server.url);
      const body = JSON.stringify({ ...story(400), stream: true });
      const req = request({ host: hostname, port, method: 'POST', path: '/v1/chat/completions', headers: jsonHeaders() }, (res) => {
        assert.equal(res.statusCode, 200);
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', (err) => ((err as NodeJS.ErrnoException).code === 'ECONNRESET' ? resolve() : reject(err)));
      req.end(body);
    });

  const dropOne = async (i: number) => {
    if (i % 2 === 0) {
      const outcome = await streamChat(server.url, story(400), { abortAfterFirst: true });
      assert.equal(outcome.status, 200, outcome.body);
      assert.ok(outcome.ttftMs !== undefined);
    } else {
      await destroyAtFirstChunk();
    }
  };

  async function dropMany(from: number, to: number): Promise<void> {
    let next = from;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < to) await dropOne(next++);
      }),
    );
  }

  const idle = async () => (await metricValue(server.url, 'specd_num_requests_running')) === 0 && (await metricValue(server.url, 'specd_num_requests_waiting')) === 0;

  test(`${CLIENTS} clients dropping mid-stream leave nothing running, and memory flat`, async () => {
    const pid = server.child.pid!;
    await dropMany(0, 50); // warm-up
    await until(idle, 10_000, 'no generation running or waiting');
    const warm = residentBytes(pid);
    // The allocators settle over the first few hundred requests (tens of MB on this pair, with or
    // without prefix caching); a leak keeps growing, so the second half is held to a fixed bound.
    await dropMany(50, CLIENTS / 2);
    await until(idle, 10_000, 'no generation running or waiting');
    const mid = residentBytes(pid);
    await dropMany(CLIENTS / 2, CLIENTS);
    await until(idle, 10_000, 'no generation running or waiting');
    const end = residentBytes(pid);

    const aborted = await fetch(`${server.url}/metrics`).then((r) => r.text());
    const abortCount = Number(/^specd_request_success_total\{finished_reason="abort"[^}]*\} (\S+)$/m.exec(aborted)?.[1] ?? 0);
    assert.ok(abortCount >= CLIENTS * 0.9, `${abortCount} generations ended as cancelled`);

    const res = await rawRequest(server.url, { path: '/v1/chat/completions', headers: jsonHeaders(), body: JSON.stringify(story(8)) });
    assert.equal(res.status, 200, res.body);
    assert.equal(JSON.parse(res.body).choices[0].finish_reason, 'length');
    const mb = (b: number) => (b / 2 ** 20).toFixed(1);
    const rss = `RSS ${mb(warm)} MB after warm-up, ${mb(mid)} MB after ${CLIENTS / 2} disconnects, ${mb(end)} MB after ${CLIENTS}`;
    assert.ok(end <= mid + 32 * 2 ** 20, `the second ${CLIENTS / 2} disconnects grew memory (over 140 KB a request): ${rss}`);
    assert.ok(end <= warm * 1.3 + 16 * 2 ** 20, rss);
  });
});
