/**
 * Continuous batching as a client sees it, through the official `openai` client on a real port:
 * concurrent requests run in one worker's batches (the metrics show passes over several
 * sequences) and each answer equals the same request run alone; a client that goes away leaves
 * the batch while the others finish; and admission against the KV-cache budget: a request that
 * does not fit beside the running ones waits (counted as waiting, kv_cache_usage_perc > 0 while
 * it runs), and one that could never fit is refused with an error naming the budget.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import OpenAI from 'openai';
import { kvBytesPerPosition } from '../../src/engine/kv-budget.js';
import { readModelDir } from '../../src/engine/model-dir.js';
import { BUNDLED_DRAFT, BUNDLED_TARGET } from '../../src/paths.js';
import { buildApp } from '../../src/server/app.js';
import { metricValue, NO_EOS, streamChat, until } from '../support/http-client.js';

const MODEL = 'specd-pair-target';
const QUESTIONS = [
  'Natalia sold 48 clips in April and half as many in May. How many clips did she sell altogether?',
  'Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?',
  'Betty is saving money for a new wallet which costs $100. How much more money does Betty need?',
  'James writes a 3-page letter to 2 different friends twice a week. How many pages does he write a year?',
  'Tell me a story about a fox.',
  'Write a haiku about the sea.',
];

/** One metric sample with labels: `name{model_name="...",kind="verify"}`. */
async function labelled(base: string, name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const m = new RegExp(`^${name}\\{model_name="[^"]*",${labels}\\} (\\S+)$`, 'm').exec(text);
  if (!m) throw new Error(`no sample ${name}{${labels}} in /metrics`);
  return Number(m[1]);
}

describe('continuous batching through the openai client', () => {
  let app: FastifyInstance;
  let url: string;
  let client: OpenAI;
  before(async () => {
    app = await buildApp({ workers: 1, maxQueue: 16, batching: { maxBatch: 8 } });
    await app.specd.engine.ready;
    url = await app.listen({ host: '127.0.0.1', port: 0 });
    client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 });
  });
  after(() => app?.close());

  const ask = (content: string, policy?: string) =>
    client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content }],
      max_tokens: 40,
      temperature: 0,
      ...(policy ? { speculative: { policy } } : {}),
    } as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming);

  test('concurrent requests share passes and each answer equals the request alone (mixed policies)', async () => {
    const policies = ['specdec++', 'none', 'fixed', undefined, 'confidence', 'specdec++'];
    const alone: string[] = [];
    for (let i = 0; i < QUESTIONS.length; i++) alone.push((await ask(QUESTIONS[i]!, policies[i])).choices[0]!.message.content!);
    const verifyBefore = await labelled(url, 'specd_batch_size_sum', 'kind="verify"');
    const countBefore = await labelled(url, 'specd_batch_size_count', 'kind="verify"');
    const together = await Promise.all(QUESTIONS.map((q, i) => ask(q, policies[i])));
    together.forEach((r, i) => assert.equal(r.choices[0]!.message.content, alone[i], `request ${i} (${policies[i] ?? 'default'})`));
    const sequences = (await labelled(url, 'specd_batch_size_sum', 'kind="verify"')) - verifyBefore;
    const passes = (await labelled(url, 'specd_batch_size_count', 'kind="verify"')) - countBefore;
    assert.ok(sequences / passes > 2, `verify passes averaged ${(sequences / passes).toFixed(2)} sequences`);
    assert.ok((await labelled(url, 'specd_iteration_tokens_count', 'kind="prefill"')) >= QUESTIONS.length);
  });

  test('a client that goes away leaves the batch; the others finish', async () => {
    const long = { messages: [{ role: 'user', content: QUESTIONS[4] }], max_tokens: 400, temperature: 0, logit_bias: NO_EOS };
    const staying = Promise.all([0, 1, 2].map(() => streamChat(url, { ...long, max_tokens: 60 })));
    const leaving = await streamChat(url, long, { abortAfterFirst: true });
    assert.equal(leaving.status, 200);
    const outcomes = await staying;
    for (const o of outcomes) assert.ok(o.status === 200 && o.body.endsWith('data: [DONE]\n\n') && !o.body.includes('"error"'), o.body.slice(-200));
    await until(() => app.specd.engine.running === 0, 20_000, 'the abandoned generation to leave the batch');
  });
});

describe('admission against the KV-cache budget', () => {
  const MAX_TOKENS = 64;
  /** A short prompt (the bundled tokenizer is byte-level: ~1 token per character). */
  const SHORT = 'Once upon a time';
  let app: FastifyInstance;
  let url: string;
  let client: OpenAI;
  let promptTokens: number;

  before(async () => {
    const [target, draft] = [BUNDLED_TARGET, BUNDLED_DRAFT].map((d) => readModelDir(d).config);
    const perPosition = [target!, draft!].reduce((n, c) => n + kvBytesPerPosition({ layers: c.layers!, kvHeads: c.kvHeads!, headDim: c.headDim!, dtype: 'float32' }), 0);
    // Room for one request of ~30 prompt tokens + MAX_TOKENS at a time, not two.
    const budget = Math.floor(perPosition * (30 + MAX_TOKENS) * 1.5);
    app = await buildApp({ workers: 1, maxQueue: 16, batching: { maxBatch: 8, kvCacheMemoryBytes: budget }, pair: { head: null } });
    await app.specd.engine.ready;
    url = await app.listen({ host: '127.0.0.1', port: 0 });
    client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 });
    promptTokens = (await client.completions.create({ model: MODEL, prompt: SHORT, max_tokens: 1 })).usage!.prompt_tokens;
    assert.ok(promptTokens < 30);
  });
  after(() => app?.close());

  test('a request that does not fit beside the running one waits for it, then runs', async () => {
    const run = () => client.completions.create({ model: MODEL, prompt: SHORT, max_tokens: MAX_TOKENS, temperature: 0, logit_bias: NO_EOS });
    const first = run();
    await until(() => app.specd.engine.running === 1, 20_000, 'the first request to start');
    const second = run();
    await until(() => app.specd.engine.waiting === 1, 20_000, 'the second request to wait for room');
    assert.equal(app.specd.engine.running, 1, 'the second request does not run beside the first');
    await until(async () => (await metricValue(url, 'specd_kv_cache_usage_perc')) > 0.5, 20_000, 'kv_cache_usage_perc to show the reservation');
    assert.equal(await metricValue(url, 'specd_num_requests_waiting'), 1);
    const [a, b] = await Promise.all([first, second]);
    assert.equal(a.choices[0]!.text, b.choices[0]!.text);
    assert.equal(b.usage!.completion_tokens, MAX_TOKENS);
    await until(async () => (await metricValue(url, 'specd_kv_cache_usage_perc')) === 0, 20_000, 'the reservations to be given back');
  });

  test('a request that could never fit is refused with a 400 naming the budget and max_tokens (the engine\'s KvBudgetError, its param as data); the server stays up', async () => {
    await assert.rejects(
      client.completions.create({ model: MODEL, prompt: SHORT, max_tokens: 500 }),
      (err: unknown) => err instanceof OpenAI.BadRequestError && err.param === 'max_tokens' && /KV cache/.test(err.message) && /--kv-cache-memory-bytes/.test(err.message),
    );
    const ok = await client.completions.create({ model: MODEL, prompt: SHORT, max_tokens: 4 });
    assert.equal(ok.choices.length, 1);
  });
});
