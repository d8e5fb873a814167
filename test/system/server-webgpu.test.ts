/**
 * `specd serve --device webgpu` end to end: the engine worker loads the target on the GPU (KV cache
 * in GPU buffers, fused graph) and the draft with its head on the CPU (--draft-device cpu); greedy
 * answers through the real `openai` client, streamed and not, equal the CPU server's.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';
import { startServe, type ServeProcess } from '../support/serve-process.js';
import { webgpuSkip } from '../support/webgpu.js';

describe('serving on the GPU (WebGPU)', { skip: webgpuSkip }, () => {
  const servers: ServeProcess[] = [];
  const clients: OpenAI[] = [];
  before(async () => {
    for (const args of [['--device', 'webgpu', '--draft-device', 'cpu'], ['--threads', '1']]) {
      const server = await startServe([...args, '--policy', 'specdec++']);
      servers.push(server);
      clients.push(new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 }));
    }
  });
  after(async () => {
    for (const s of servers) assert.equal(await s.stop(), 0);
  });

  test('greedy chat completions, streamed and not, equal the CPU server\'s', async () => {
    const [gpu, cpu] = clients as [OpenAI, OpenAI];
    const body = { model: 'specd-pair-target', messages: [{ role: 'user' as const, content: 'A shop sells 4 pens for $2. How much do 10 pens cost?' }], max_tokens: 40, temperature: 0 };
    const want = (await cpu.chat.completions.create(body)).choices[0]!.message.content;
    const got = await gpu.chat.completions.create(body);
    assert.equal(got.choices[0]!.message.content, want);
    assert.equal(got.usage?.completion_tokens, 40);
    let streamed = '';
    for await (const chunk of await gpu.chat.completions.create({ ...body, stream: true })) streamed += chunk.choices[0]?.delta.content ?? '';
    assert.equal(streamed, want);
  });
});
