/**
 * The API key: every route but /health (and /metrics unless --metrics-auth) needs it, whatever
 * the method and however the path is spelled (doubled slashes, case, percent-encoding, query
 * strings, dot segments), unknown paths included; and the key never reaches the logs, even at
 * the most verbose log level.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/server/app.js';
import { isOpenAIError, rawRequest } from '../support/http-client.js';
import { startServe } from '../support/serve-process.js';

const KEY = 'sk-reliability-6f1c2a9e';
const bearer = (key: string) => ({ authorization: `Bearer ${key}` });

let app: FastifyInstance;
let url: string;

before(async () => {
  app = await buildApp({ workers: 1, apiKey: KEY, pair: { head: null } });
  url = await app.listen({ host: '127.0.0.1', port: 0 });
  await app.specd.engine.ready;
});
after(() => app?.close());

const KEYED_PATHS = [
  '/v1/chat/completions',
  '/v1/completions',
  '/v1/models',
  '/v1/models/specd-pair-target',
  '/v1/nothing',
  '/v1//chat/completions',
  '//v1/models',
  '/V1/models',
  '/v1/MODELS',
  '/v1/chat/completions?x',
  '/v1/models?api_key=x',
  '/%761/models',
  '/%76%31/models',
  '/v1/%6dodels',
  '/v1/models/..%2F..%2Fhealth',
  '/health/../v1/models',
  '/./v1/models',
  '/v1/models#frag',
  '/metrics/../v1/models',
  '/healthz',
  '/health/',
  '/',
  '/favicon.ico',
];
const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD'];

describe('keyed routes', () => {
  test('without the key, or with a wrong one, every path and method but the open ones is 401', async () => {
    const failures: string[] = [];
    for (const path of KEYED_PATHS) {
      for (const method of METHODS) {
        for (const headers of [{}, bearer(`${KEY}x`), bearer(KEY.slice(0, -1)), { authorization: KEY }, { authorization: `Basic ${KEY}` }]) {
          const res = await rawRequest(url, { method, path, headers: { ...headers, 'content-type': 'application/json' }, body: method === 'GET' || method === 'HEAD' ? undefined : '{}' });
          if (res.status !== 401) failures.push(`${method} ${path} ${JSON.stringify(headers)}: ${res.status}`);
          else if (method !== 'HEAD' && !isOpenAIError(JSON.parse(res.body))) failures.push(`${method} ${path}: not an OpenAI error`);
        }
      }
    }
    assert.deepEqual(failures, []);
  });

  test('with the key the same requests get past authentication', async () => {
    for (const path of KEYED_PATHS) {
      const res = await rawRequest(url, { method: 'GET', path, headers: bearer(KEY) });
      assert.notEqual(res.status, 401, `GET ${path}`);
    }
    const models = await rawRequest(url, { method: 'GET', path: '/v1/models', headers: { authorization: `bearer   ${KEY}  ` } });
    assert.equal(models.status, 200, 'the scheme is case-insensitive and spaces around the key are ignored');
  });

  test('/health and /metrics stay open by default', async () => {
    for (const path of ['/health', '/health?probe=1', '/metrics', '/metrics?x']) {
      assert.equal((await rawRequest(url, { method: 'GET', path })).status, 200, path);
    }
    assert.equal((await rawRequest(url, { method: 'HEAD', path: '/health' })).status, 200);
  });

  test('with metricsAuth, /metrics needs the key and /health does not', async () => {
    const keyed = await buildApp({ workers: 1, apiKey: KEY, metricsAuth: true, pair: { head: null } });
    try {
      await keyed.specd.engine.ready;
      assert.equal((await keyed.inject({ method: 'GET', url: '/metrics' })).statusCode, 401);
      assert.equal((await keyed.inject({ method: 'GET', url: '/metrics', headers: bearer('nope') })).statusCode, 401);
      assert.equal((await keyed.inject({ method: 'GET', url: '/metrics', headers: bearer(KEY) })).statusCode, 200);
      assert.equal((await keyed.inject({ method: 'GET', url: '/health' })).statusCode, 200);
    } finally {
      await keyed.close();
    }
  });
});

describe('logs', () => {
  test('at log level trace, the key (given by flag or by $SPECD_API_KEY) never appears in the output', async () => {
    for (const [args, env] of [
      [['--api-key', KEY], process.env],
      [[], { ...process.env, SPECD_API_KEY: KEY }],
    ] as const) {
      const server = await startServe(['--log-level', 'trace', '--no-head', '--metrics-auth', ...args], { env });
      try {
        const post = (headers: Record<string, string>, body: object) =>
          rawRequest(server.url, { path: '/v1/chat/completions', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
        const ok = await post(bearer(KEY), { messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 });
        assert.equal(ok.status, 200, ok.body);
        assert.equal((await post(bearer(`${KEY}-wrong`), { messages: [] })).status, 401);
        assert.equal((await post(bearer(KEY), { messages: [] })).status, 400);
        assert.equal((await post({ authorization: KEY }, {})).status, 401);
        assert.equal((await rawRequest(server.url, { method: 'GET', path: '/metrics', headers: bearer(KEY) })).status, 200);
        assert.equal((await rawRequest(server.url, { method: 'GET', path: '/v1/nothing', headers: bearer(KEY) })).status, 404);
      } finally {
        assert.equal(await server.stop(), 0);
      }
      const output = server.stderr() + server.stdout();
      assert.match(output, /incoming request/, 'requests were logged');
      assert.ok(!output.includes(KEY), 'the key is not in the logs');
      assert.ok(!output.includes(KEY.slice(3)), 'nor any long part of it');
    }
  });
});
