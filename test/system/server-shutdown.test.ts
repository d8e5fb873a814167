/**
 * `specd serve` as a process: it prints the URL it listens on; on SIGTERM / SIGINT it stops
 * accepting connections, lets in-flight streams finish (or cancels them after the grace
 * period) and exits 0. Streams running and queued at the signal all finish; nothing is
 * accepted after it; a client's spare connection does not hold the exit.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { describe, test } from 'node:test';
import { jsonHeaders, NO_EOS, rawRequest, sseData } from '../support/http-client.js';
import { startServe as startServer, waitForStderr } from '../support/serve-process.js';

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

const events = sseData;

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

  test('SIGTERM with streams running and queued: every one finishes, nothing new is accepted, exit 0', async () => {
    const server = await startServer(['--grace', '30', '--max-queue', '8']);
    const streams = [streamChat(server.url, 60), streamChat(server.url, 60), streamChat(server.url, 60)];
    await streams[0]!.started;
    server.child.kill('SIGTERM');
    // The signal arrives asynchronously: wait until the server has acted on it.
    await waitForStderr(server, 'SIGTERM: shutting down');
    // A request after the signal is refused: no connection, or a 503 with Retry-After.
    const late = await rawRequest(server.url, { path: '/v1/completions', headers: jsonHeaders(), body: JSON.stringify({ prompt: 'hi', max_tokens: 1 }) }).catch((err: Error) => err);
    if (!(late instanceof Error)) {
      assert.equal(late.status, 503, late.body);
      assert.equal(late.headers['retry-after'], '1');
    }
    for (const stream of streams) {
      const data = events(await stream.done);
      assert.equal(data.at(-1), '[DONE]');
      assert.equal(JSON.parse(data.at(-2)!).choices[0].finish_reason, 'length');
    }
    assert.equal(await server.exit, 0, server.stderr());
  });

  test('a connection on which no request was sent does not hold the exit', async () => {
    const server = await startServer([]);
    const { hostname, port } = new URL(server.url);
    const spare = connect(Number(port), hostname);
    await new Promise((resolve) => spare.once('connect', resolve));
    const t0 = Date.now();
    server.child.kill('SIGTERM');
    assert.equal(await server.exit, 0, server.stderr());
    assert.ok(Date.now() - t0 < 5000, `exited ${Date.now() - t0} ms after SIGTERM`);
    spare.destroy();
  });
});
