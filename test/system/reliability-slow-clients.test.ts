/**
 * Clients that hold the server's resources without using them, on a real port: a body sent a
 * byte at a time loses its socket after the body timeout; a request without the key gets its
 * 401 and the connection closes, whatever body it was still sending; connections beyond the cap
 * are closed; /tokenize refuses text far too long for the context before tokenizing it, and
 * tool definitions count towards a chat's size before its template is rendered.
 */
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/server/app.js';
import { promptCharLimit } from '../../src/server/model-facts.js';
import { jsonHeaders } from '../support/http-client.js';

const KEY = 'slow-key';
const BODY_TIMEOUT_MS = 800;

/** Opens a socket, writes `head`, and resolves with what came back once the server closed it (or rejects after `waitMs`). */
function rawExchange(port: number, head: string, waitMs: number): Promise<{ text: string; closedAfterMs: number }> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const socket: Socket = connect(port, '127.0.0.1', () => socket.write(head));
    let text = '';
    socket.on('data', (d) => (text += d.toString('latin1')));
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`the server kept the socket open ${waitMs} ms; got: ${text.slice(0, 200)}`));
    }, waitMs);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ text, closedAfterMs: performance.now() - started });
    });
    socket.on('error', () => {});
  });
}

describe('slow and keyless clients', () => {
  let app: FastifyInstance;
  let port: number;
  before(async () => {
    app = await buildApp({ workers: 1, apiKey: KEY, bodyTimeoutMs: BODY_TIMEOUT_MS, maxConnections: 8 });
    await app.specd.engine.ready;
    const url = await app.listen({ host: '127.0.0.1', port: 0 });
    port = Number(new URL(url).port);
  });
  after(() => app?.close());

  const head = (key: string) =>
    `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{`;

  test('a body that never completes: the socket is closed after the body timeout, with a 408', async () => {
    const { text, closedAfterMs } = await rawExchange(port, head(KEY), 20 * BODY_TIMEOUT_MS);
    assert.ok(closedAfterMs >= BODY_TIMEOUT_MS * 0.9, `closed after ${closedAfterMs} ms`);
    assert.match(text, /^HTTP\/1\.1 408/);
  });

  test('without the key: the 401 comes at once and the connection closes although the body is unfinished', async () => {
    const { text, closedAfterMs } = await rawExchange(port, head('wrong'), BODY_TIMEOUT_MS / 2);
    assert.match(text, /^HTTP\/1\.1 401/);
    assert.match(text, /connection: close/i);
    assert.ok(closedAfterMs < BODY_TIMEOUT_MS / 2);
  });

  test('connections beyond the cap are closed; the server serves again once they go', async () => {
    const sockets = await Promise.all(Array.from({ length: 8 }, () => new Promise<Socket>((resolve) => {
      const s = connect(port, '127.0.0.1', () => resolve(s));
      s.on('error', () => {});
    })));
    await new Promise((r) => setTimeout(r, 100));
    const extra = await rawExchange(port, 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n', 5000);
    assert.equal(extra.text, '', 'dropped without an answer');
    for (const s of sockets) s.destroy();
    await new Promise((r) => setTimeout(r, 100));
    assert.equal((await fetch(`http://127.0.0.1:${port}/health`)).status, 200);
  });

  test('/tokenize refuses a prompt far longer than the context before tokenizing it', async () => {
    const limit = promptCharLimit(app.specd.facts);
    const res = await fetch(`http://127.0.0.1:${port}/tokenize`, { method: 'POST', headers: jsonHeaders(KEY), body: JSON.stringify({ prompt: 'x'.repeat(limit + 1) }) });
    assert.equal(res.status, 400);
    const body = (await res.json()) as { error: { code: string; param: string } };
    assert.equal(body.error.code, 'context_length_exceeded');
    assert.equal(body.error.param, 'prompt');
  });

  test('tool definitions count towards the size of a chat before it is rendered', async () => {
    const limit = promptCharLimit(app.specd.facts);
    const tools = [{ type: 'function', function: { name: 'f', description: 'd'.repeat(limit), parameters: { type: 'object', properties: {} } } }];
    const started = performance.now();
    const res = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, { method: 'POST', headers: jsonHeaders(KEY), body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }], tools, max_tokens: 4 }) });
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'context_length_exceeded');
    assert.ok(performance.now() - started < 2000);
  });
});
