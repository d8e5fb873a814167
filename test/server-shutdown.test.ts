/**
 * `specd serve` as a process: it prints the URL it listens on; on SIGTERM / SIGINT it stops
 * accepting connections, lets in-flight streams finish (or cancels them after the grace
 * period) and exits 0.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../../bin/specd.js', import.meta.url));
const NO_EOS = { '256': -100, '258': -100 };

interface Server {
  child: ChildProcess;
  url: string;
  exit: Promise<number | null>;
  stderr: () => string;
}

async function startServer(args: string[]): Promise<Server> {
  const child = spawn(process.execPath, [BIN, 'serve', '--port', '0', '--workers', '1', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exit = once(child, 'exit').then(([code]) => code as number | null);
  let stdout = '';
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      stdout += d.toString();
      const m = /specd: listening on (http:\/\/\S+)/.exec(stdout);
      if (m) resolve(m[1]!);
    });
    exit.then((code) => reject(new Error(`server exited (${code}) before listening: ${stderr}`)));
  });
  // Listening comes first; /health turns 200 once the worker has loaded the models.
  for (;;) {
    const res = await fetch(`${url}/health`);
    if (res.status === 200) break;
    assert.equal(res.status, 503);
    await new Promise((r) => setTimeout(r, 20));
  }
  return { child, url, exit, stderr: () => stderr };
}

/** Starts a streamed chat; resolves `started` at the first content chunk and `done` with the whole body. */
function streamChat(url: string, maxTokens: number): { started: Promise<void>; done: Promise<string> } {
  let onStart!: () => void;
  const started = new Promise<void>((r) => (onStart = r));
  const done = (async () => {
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'Tell me a story.' }], max_tokens: maxTokens, temperature: 0, logit_bias: NO_EOS, stream: true }),
    });
    assert.equal(res.status, 200);
    let body = '';
    const decoder = new TextDecoder();
    for await (const part of res.body!) {
      body += decoder.decode(part as Uint8Array, { stream: true });
      if (body.includes('"content":"')) onStart();
    }
    return body;
  })();
  return { started, done };
}

const events = (body: string) =>
  body
    .split('\n\n')
    .filter((e) => e.startsWith('data: '))
    .map((e) => e.slice('data: '.length));

describe('specd serve shutdown', () => {
  test('SIGTERM: in-flight streams finish, new connections are refused, exit 0', async () => {
    const server = await startServer(['--grace', '30']);
    const stream = streamChat(server.url, 200);
    await stream.started;
    server.child.kill('SIGTERM');
    const body = await stream.done;
    const data = events(body);
    assert.equal(data.at(-1), '[DONE]');
    assert.equal(JSON.parse(data.at(-2)!).choices[0].finish_reason, 'length', 'the stream ran to its end');
    await assert.rejects(fetch(`${server.url}/health`), 'no new connections');
    assert.equal(await server.exit, 0, server.stderr());
  });

  test('after the grace period in-flight generations are cancelled, then exit 0', async () => {
    const server = await startServer(['--grace', '0.3']);
    const stream = streamChat(server.url, 900);
    await stream.started;
    const t0 = Date.now();
    server.child.kill('SIGTERM');
    const data = events(await stream.done);
    assert.equal(data.at(-1), '[DONE]');
    assert.equal(JSON.parse(data.at(-2)!).error.code, 'shutting_down');
    assert.equal(await server.exit, 0, server.stderr());
    assert.ok(Date.now() - t0 < 5000, `exited ${Date.now() - t0} ms after SIGTERM`);
  });

  test('SIGINT on an idle server exits 0', async () => {
    const server = await startServer([]);
    server.child.kill('SIGINT');
    assert.equal(await server.exit, 0, server.stderr());
  });
});
