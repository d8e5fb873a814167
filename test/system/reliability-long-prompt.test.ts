/**
 * A long prompt does not hold back a short request (the real `openai` client on a real port, a
 * real-vocabulary pair: Qwen3's tokenizer, V = 151,936). The long prompt's prefill goes in
 * pieces; a request that arrives while it is being fed gets its own prompt in beside it and
 * finishes before the long one's first token, with the same greedy text as alone. One piece per
 * scheduler iteration (`maxBatchTokens` = PREFILL_CHUNK) makes the long prefill 24 iterations
 * and the short request one piece and four rounds; fed oldest first, the short one could only
 * start once the long prompt was in.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import OpenAI from 'openai';
import { PREFILL_CHUNK } from '../../src/engine/sequence.js';
import { TextTokenizer } from '../../src/text/tokenizer.js';
import { serveTinyQwen3, TINY_QWEN3_MODEL, type RealVocabServer } from '../support/real-vocab-server.js';

const MODEL = TINY_QWEN3_MODEL;
/** Prompt pieces of the long request: its prefill spans this many scheduler iterations. */
const LONG_PIECES = 24;
let app: FastifyInstance;
let client: OpenAI;
let tokenizer: TextTokenizer;
let server: RealVocabServer;

before(async () => {
  server = await serveTinyQwen3('specd-long-prompt-', { policy: { policy: 'none' }, batching: { maxBatchTokens: PREFILL_CHUNK } });
  ({ app, client, tokenizer } = server);
});
after(async () => {
  await server?.close();
});

test('a short request sent during a long prefill finishes before the long one starts answering', async () => {
  const short: OpenAI.Chat.ChatCompletionCreateParamsNonStreaming = { model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, temperature: 0, ignore_eos: true } as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming;
  const alone = (await client.chat.completions.create(short)).choices[0]!.message.content;

  const words = ' alpha beta gamma delta'.repeat((LONG_PIECES * PREFILL_CHUNK) / 4);
  const longText = `${Date.now()}${words}`; // no prefix shared with an earlier prompt
  assert.ok(tokenizer.encode(longText).length >= LONG_PIECES * PREFILL_CHUNK);
  let firstTokenAt = Infinity;
  const long = (async () => {
    const stream = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: longText }], max_tokens: 2, temperature: 0, logprobs: true, stream: true });
    for await (const chunk of stream) {
      if ((chunk.choices[0]?.logprobs?.content?.length ?? 0) > 0) firstTokenAt = Math.min(firstTokenAt, performance.now());
    }
  })();
  // The long request is in the worker's batch (its prompt being fed) before the short one arrives.
  while (app.specd.engine.running === 0) await sleep(5);
  await sleep(50);
  const res = await client.chat.completions.create(short);
  const shortDoneAt = performance.now();
  await long;
  assert.equal(res.choices[0]!.message.content, alone, 'the same greedy text as alone');
  assert.ok(Number.isFinite(firstTokenAt), 'the long request answered');
  assert.ok(shortDoneAt < firstTokenAt, `the short request ended ${(shortDoneAt - firstTokenAt).toFixed(0)} ms after the long one's first token`);
});
