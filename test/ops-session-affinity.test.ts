/**
 * The shipped HAProxy config (deploy/haproxy/haproxy.cfg, Debian's haproxy) sends a conversation
 * back to the replica holding its prefix cache: requests with the same session key (the
 * `x-session-id` header, else the body's `prompt_cache_key`, else its `user`) reach the same
 * replica, different keys spread over the replicas, requests without a key are balanced by
 * least connections, and when a replica goes down only its sessions move. The replicas here are
 * three small HTTP servers that answer /health and say who they are.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { requireTools, toolPath } from './support/debian-tools.js';
import { HAPROXY_CONFIG, haproxyConfig } from './replicas/rolling-restart.js';

interface Replica {
  name: string;
  server: http.Server;
  port: number;
  healthy: boolean;
}

async function replica(name: string): Promise<Replica> {
  const r = { name, healthy: true } as Replica;
  r.server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      if (req.url === '/health') {
        res.writeHead(r.healthy ? 200 : 503).end();
        return;
      }
      // A slow answer, so that requests without a key overlap and least connections spreads them.
      setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ replica: name })), 30);
    });
  });
  await new Promise<void>((resolve) => r.server.listen(0, '127.0.0.1', resolve));
  r.port = (r.server.address() as AddressInfo).port;
  return r;
}

async function freePort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

describe('HAProxy session affinity (deploy/haproxy/haproxy.cfg)', () => {
  let replicas: Replica[] = [];
  let haproxy: ChildProcess | undefined;
  let frontend = 0;
  const dir = mkdtempSync(join(tmpdir(), 'specd-affinity-'));

  before(async () => {
    const path = toolPath('haproxy');
    if (!path) return; // each test skips (or fails in CI) through requireTools
    replicas = await Promise.all(['specd1', 'specd2', 'specd3'].map(replica));
    frontend = await freePort();
    const { text } = haproxyConfig(readFileSync(HAPROXY_CONFIG, 'utf8'), frontend, replicas.map((r) => r.port));
    writeFileSync(join(dir, 'haproxy.cfg'), text);
    haproxy = spawn(path, ['-db', '-f', join(dir, 'haproxy.cfg')], { stdio: 'ignore' });
    // Up once every replica passed its health checks (rise 2, 1 s apart).
    const deadline = Date.now() + 20_000;
    for (;;) {
      const seen = new Set<string>();
      for (let i = 0; i < 12; i++) seen.add(await ask({}).catch(() => ''));
      if (seen.size === 3) break;
      if (Date.now() > deadline) throw new Error('HAProxy did not come up with three replicas');
      await new Promise((r) => setTimeout(r, 300));
    }
  });
  after(async () => {
    haproxy?.kill('SIGTERM');
    for (const r of replicas) r.server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** POST a chat body through HAProxy; the replica that answered. */
  function ask(body: object, headers: Record<string, string> = {}): Promise<string> {
    return new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: frontend, path: '/v1/chat/completions', method: 'POST', headers: { 'content-type': 'application/json', ...headers } }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => (res.statusCode === 200 ? resolve((JSON.parse(text) as { replica: string }).replica) : reject(new Error(`HTTP ${res.statusCode}`))));
      });
      req.on('error', reject);
      req.end(JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }], ...body }));
    });
  }

  test('the same key reaches the same replica (header, prompt_cache_key, user); 30 keys spread over all three', async (t) => {
    if (!requireTools(t, 'haproxy')) return;
    const where = new Map<string, string>();
    for (let k = 0; k < 30; k++) {
      const key = `conversation-${k}`;
      const byHeader = await Promise.all([1, 2, 3].map(() => ask({}, { 'x-session-id': key })));
      const byCacheKey = await Promise.all([1, 2, 3].map(() => ask({ prompt_cache_key: key })));
      const byUser = await Promise.all([1, 2, 3].map(() => ask({ user: key })));
      assert.equal(new Set([...byHeader, ...byCacheKey, ...byUser]).size, 1, `${key}: ${[...byHeader, ...byCacheKey, ...byUser].join(' ')}`);
      where.set(key, byHeader[0]!);
    }
    assert.equal(new Set(where.values()).size, 3, 'the keys spread over every replica');
    // The header wins over the body's fields.
    const [a, b] = [...where.entries()].filter(([, r], i, all) => all.findIndex(([, r2]) => r2 === r) === i);
    assert.equal(await ask({ prompt_cache_key: b![0] }, { 'x-session-id': a![0] }), a![1]);
  });

  test('without a key, concurrent requests are spread by least connections', async (t) => {
    if (!requireTools(t, 'haproxy')) return;
    const answers = await Promise.all(Array.from({ length: 9 }, () => ask({})));
    assert.equal(new Set(answers).size, 3, answers.join(' '));
  });

  test('a replica going down moves only its own sessions', async (t) => {
    if (!requireTools(t, 'haproxy')) return;
    const keys = Array.from({ length: 30 }, (_, k) => `moving-${k}`);
    const before = await Promise.all(keys.map((k) => ask({}, { 'x-session-id': k })));
    const down = replicas[0]!;
    down.healthy = false;
    try {
      // Down after two failed checks, 1 s apart.
      await new Promise((r) => setTimeout(r, 3500));
      const afterDown = await Promise.all(keys.map((k) => ask({}, { 'x-session-id': k })));
      keys.forEach((k, i) => {
        if (before[i] === down.name) assert.notEqual(afterDown[i], down.name, `${k} left the down replica`);
        else assert.equal(afterDown[i], before[i], `${k} stayed where it was`);
      });
      assert.ok(before.includes(down.name), 'some sessions were on the replica that went down');
    } finally {
      down.healthy = true;
    }
  });
});
