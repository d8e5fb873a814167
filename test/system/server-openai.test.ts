/**
 * The server through the official `openai` client against a real listening socket: chat and
 * text completions, streamed and not, include_usage with `usage.speculative`, stop strings,
 * seeds and `n`, logprobs, per-request speculation, 8 parallel streams equal to the same
 * requests run alone, /metrics counters moving, and a client disconnect freeing its worker.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import OpenAI from 'openai';
import { buildApp } from '../../src/server/app.js';

const MODEL = 'specd-pair-target';
const QUESTION = 'Natalia sold 48 clips in April and half as many in May. How many clips did she sell altogether?';
/** Keeps generations running to max_tokens: the bundled pair's EOS ids biased away. */
const NO_EOS = { '256': -100, '258': -100 };

let app: FastifyInstance;
let url: string;
let client: OpenAI;

before(async () => {
  app = await buildApp({ workers: 2, maxQueue: 32 });
  await app.specd.engine.ready;
  url = await app.listen({ host: '127.0.0.1', port: 0 });
  client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 });
});
after(() => app?.close());

/** Request fields the openai client's types do not know (specd's extensions, vLLM's top_k). */
type Extra = { speculative?: Record<string, unknown>; top_k?: number; ignore_eos?: boolean };
type ChatParams = Omit<OpenAI.Chat.ChatCompletionCreateParamsNonStreaming, 'model' | 'messages'> & Extra;
type SpeculativeUsage = { policy: string; rounds: number; draft_tokens: number; accepted_tokens: number; acceptance_rate: number; mean_accepted_per_round: number };
type UsageWithSpec = OpenAI.CompletionUsage & { speculative: SpeculativeUsage };

const messages = (content = QUESTION): OpenAI.Chat.ChatCompletionMessageParam[] => [{ role: 'user', content }];

/**
 * Two requests' logprobs: the same tokens, the same logprobs to 1e-4. Across requests a position
 * can be scored in a verify pass of another width (the threshold follows measured pass costs) or
 * after a cached prefix, and float32 matrix products of other shapes round differently in the last
 * bits (differences from 1e-9 to 1e-6 seen); the tokens never differ. A logprob of the wrong
 * position or distribution is off by far more.
 */
function assertSameLogprobs(actual: { token: string; logprob: number }[], expected: { token: string; logprob: number }[]): void {
  assert.deepEqual(actual.map((t) => t.token), expected.map((t) => t.token));
  actual.forEach((t, i) => assert.ok(Math.abs(t.logprob - expected[i]!.logprob) < 1e-4, `token ${i} (${JSON.stringify(t.token)}): logprob ${t.logprob}, expected ${expected[i]!.logprob}`));
}

async function chat(params: ChatParams = {}, content = QUESTION): Promise<OpenAI.Chat.ChatCompletion> {
  return client.chat.completions.create({ model: MODEL, messages: messages(content), max_tokens: 32, ...params } as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming);
}

interface Streamed {
  text: string;
  chunks: OpenAI.Chat.ChatCompletionChunk[];
  finish: string | null;
  usage?: UsageWithSpec;
}

async function chatStream(params: ChatParams & { stream_options?: OpenAI.Chat.ChatCompletionStreamOptions } = {}, content = QUESTION): Promise<Streamed> {
  const stream = await client.chat.completions.create({ model: MODEL, messages: messages(content), max_tokens: 32, ...params, stream: true } as OpenAI.Chat.ChatCompletionCreateParamsStreaming);
  const out: Streamed = { text: '', chunks: [], finish: null };
  for await (const chunk of stream) {
    out.chunks.push(chunk);
    const choice = chunk.choices[0];
    if (choice?.delta.content) out.text += choice.delta.content;
    if (choice?.finish_reason) out.finish = choice.finish_reason;
    if (chunk.usage) out.usage = chunk.usage as UsageWithSpec;
  }
  return out;
}

const speculativeUsage = (u: OpenAI.CompletionUsage | undefined) => (u as UsageWithSpec).speculative;

describe('chat completions', () => {
  test('non-streaming: text, finish reason and usage with usage.speculative', async () => {
    const res = await chat({ temperature: 0 });
    assert.equal(res.object, 'chat.completion');
    assert.equal(res.model, MODEL);
    assert.equal(res.choices.length, 1);
    assert.equal(res.choices[0]!.message.role, 'assistant');
    assert.ok(res.choices[0]!.message.content!.length > 0);
    assert.ok(['stop', 'length'].includes(res.choices[0]!.finish_reason));
    const usage = res.usage!;
    assert.ok(usage.prompt_tokens > 20 && usage.completion_tokens > 0 && usage.completion_tokens <= 32);
    assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
    const spec = speculativeUsage(usage);
    assert.equal(spec.policy, 'specdec++', 'the default with an acceptance head loaded');
    assert.ok(spec.rounds > 0 && spec.draft_tokens > 0 && spec.accepted_tokens <= spec.draft_tokens);
    assert.equal(spec.acceptance_rate, spec.accepted_tokens / spec.draft_tokens);
    assert.equal(spec.mean_accepted_per_round, spec.accepted_tokens / spec.rounds);
  });

  test('streaming: role first, content, finish reason, a usage chunk last; same text as non-streamed', async () => {
    const params = { temperature: 0.8, seed: 5, max_tokens: 40, logit_bias: NO_EOS };
    const plain = await chat(params);
    const s = await chatStream({ ...params, stream_options: { include_usage: true } });
    assert.equal(s.chunks[0]!.choices[0]!.delta.role, 'assistant');
    assert.ok(s.chunks.every((c) => c.object === 'chat.completion.chunk' && c.id === s.chunks[0]!.id));
    assert.ok(s.chunks.slice(0, -1).every((c) => c.usage === null), 'usage is null on content chunks');
    const last = s.chunks.at(-1)!;
    assert.deepEqual(last.choices, []);
    assert.equal(s.finish, 'length');
    assert.equal(s.text, plain.choices[0]!.message.content);
    assert.ok(!s.text.includes('\uFFFD'));
    assert.equal(s.usage!.completion_tokens, 40);
    assert.deepEqual(s.usage!.speculative, speculativeUsage(plain.usage), 'same speculation, streamed or not');
  });

  test('streaming with continuous_usage_stats: usage so far on every chunk', async () => {
    const s = await chatStream({ temperature: 0, max_tokens: 24, logit_bias: NO_EOS, stream_options: { include_usage: true, continuous_usage_stats: true } as OpenAI.Chat.ChatCompletionStreamOptions });
    const rounds = s.chunks.map((c) => (c.usage as UsageWithSpec).speculative.rounds);
    assert.ok(rounds.every((r, i) => i === 0 || r >= rounds[i - 1]!), 'non-decreasing');
    assert.equal(rounds.at(-1), s.usage!.speculative.rounds);
  });

  test('stop strings end the text before the first match, never emitting part of one, streamed or not', async () => {
    const ref = (await chat({ temperature: 0, max_tokens: 48, logit_bias: NO_EOS })).choices[0]!.message.content!;
    // A 3-character stop string from the middle of the reference: it spans 3 byte-level tokens.
    const stop = ref.slice(20, 23);
    const expected = ref.slice(0, ref.indexOf(stop));
    const res = await chat({ temperature: 0, max_tokens: 48, logit_bias: NO_EOS, stop: [stop, 'never-appears'] });
    assert.equal(res.choices[0]!.message.content, expected);
    assert.equal(res.choices[0]!.finish_reason, 'stop');
    const s = await chatStream({ temperature: 0, max_tokens: 48, logit_bias: NO_EOS, stop });
    assert.equal(s.text, expected);
    assert.equal(s.finish, 'stop');
    assert.ok(s.chunks.every((c) => !(c.choices[0]?.delta.content ?? '').includes(stop)));
  });

  test('with a stop string, usage and logprobs cover the tokens up to the one where the stop string starts', async () => {
    const base = { temperature: 0, max_tokens: 48, logit_bias: NO_EOS, logprobs: true };
    const ref = await chat(base);
    const refText = ref.choices[0]!.message.content!;
    const refTokens = ref.choices[0]!.logprobs!.content!;
    // Three characters from the middle of the reference: three byte-level tokens, so the round
    // that completes the stop string has generated tokens past its start.
    const stop = refText.slice(20, 23);
    const at = refText.indexOf(stop);
    // The token holding the stop string's first character, and every token before it.
    let chars = 0;
    const kept = refTokens.findIndex((t) => (chars += t.token.length) > at) + 1;
    const expected = refTokens.slice(0, kept);

    const res = await chat({ ...base, stop });
    assert.equal(res.choices[0]!.message.content, refText.slice(0, at));
    assert.equal(res.usage!.completion_tokens, kept);
    assertSameLogprobs(res.choices[0]!.logprobs!.content!, expected);

    const s = await chatStream({ ...base, stop, stream_options: { include_usage: true } });
    assert.equal(s.text, refText.slice(0, at));
    assert.equal(s.usage!.completion_tokens, kept);
    assertSameLogprobs(s.chunks.flatMap((c) => c.choices[0]?.logprobs?.content ?? []), expected);

    const text = await client.completions.create({ model: MODEL, prompt: 'Once upon a time', temperature: 0, max_tokens: 32, logit_bias: NO_EOS, logprobs: 0 });
    const textStop = text.choices[0]!.text.slice(10, 13);
    const cut = await client.completions.create({ model: MODEL, prompt: 'Once upon a time', temperature: 0, max_tokens: 32, logit_bias: NO_EOS, logprobs: 0, stop: textStop });
    const textAt = text.choices[0]!.text.indexOf(textStop);
    assert.equal(cut.choices[0]!.text, text.choices[0]!.text.slice(0, textAt));
    assert.equal(cut.usage!.completion_tokens, textAt + 1, 'one byte-level token per character');
    assert.deepEqual(cut.choices[0]!.logprobs!.tokens, text.choices[0]!.logprobs!.tokens!.slice(0, textAt + 1));
  });

  test('ignore_eos: EOS tokens stay in the output and generation runs to max_tokens', async () => {
    const ref = await chat({ temperature: 0, max_tokens: 64 }, 'Hi');
    const n = ref.usage!.completion_tokens;
    assert.equal(ref.choices[0]!.finish_reason, 'stop', 'greedy decoding of this prompt ends with EOS');
    assert.ok(n < 64);
    const res = await chat({ temperature: 0, max_tokens: 64, ignore_eos: true, logprobs: true }, 'Hi');
    assert.equal(res.choices[0]!.finish_reason, 'length');
    assert.equal(res.usage!.completion_tokens, 64);
    const content = res.choices[0]!.logprobs!.content!;
    assert.equal(content.length, 64);
    assert.equal(content[n]!.token, '<|im_end|>', 'the EOS token is part of the output');
    // Its text is skipped, as a special token's is; the text before it is the same.
    assert.ok(res.choices[0]!.message.content!.startsWith(ref.choices[0]!.message.content!));
    assert.ok(!res.choices[0]!.message.content!.includes('<|im_end|>'));
    const s = await chatStream({ temperature: 0, max_tokens: 64, ignore_eos: true, stream_options: { include_usage: true } }, 'Hi');
    assert.equal(s.text, res.choices[0]!.message.content);
    assert.equal(s.usage!.completion_tokens, 64);
    // /v1/completions, with the chat prompt as token ids.
    const prompt = app.specd.facts.tokenizer.encodeChat([{ role: 'user', content: 'Hi' }]);
    const params = { model: MODEL, prompt, temperature: 0, max_tokens: 64 };
    assert.equal((await client.completions.create(params)).usage!.completion_tokens, n);
    const text = await client.completions.create({ ...params, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming);
    assert.equal(text.choices[0]!.finish_reason, 'length');
    assert.equal(text.usage!.completion_tokens, 64);
  });

  test('a seed reproduces a sampled generation; n choices use seed, seed + 1, ...', async () => {
    const params = { temperature: 1, seed: 1234, max_tokens: 32, logit_bias: NO_EOS };
    const a = await chat(params);
    const b = await chat(params);
    assert.equal(a.choices[0]!.message.content, b.choices[0]!.message.content);
    const two = await chat({ ...params, n: 2 });
    assert.equal(two.choices.length, 2);
    assert.deepEqual(two.choices.map((c) => c.index), [0, 1]);
    assert.equal(two.choices[0]!.message.content, a.choices[0]!.message.content);
    const next = await chat({ ...params, seed: 1235 });
    assert.equal(two.choices[1]!.message.content, next.choices[0]!.message.content);
    assert.notEqual(next.choices[0]!.message.content, a.choices[0]!.message.content);
    assert.equal(two.usage!.completion_tokens, 64);
    assert.equal(two.usage!.prompt_tokens, a.usage!.prompt_tokens, 'the prompt counts once');
    // Streamed, the choices' chunks interleave, each tagged with its index.
    const stream = await client.chat.completions.create({ model: MODEL, messages: messages(), ...params, n: 2, stream: true } as OpenAI.Chat.ChatCompletionCreateParamsStreaming);
    const texts = ['', ''];
    for await (const chunk of stream) for (const c of chunk.choices) texts[c.index] += c.delta.content ?? '';
    assert.deepEqual(texts, two.choices.map((c) => c.message.content));
  });

  test("logprobs: one entry per token, from the target's distribution, with top alternatives", async () => {
    const res = await chat({ temperature: 0, max_tokens: 16, logit_bias: NO_EOS, logprobs: true, top_logprobs: 3 });
    const content = res.choices[0]!.logprobs!.content!;
    assert.equal(content.length, res.usage!.completion_tokens);
    assert.equal(content.map((t) => t.token).join(''), res.choices[0]!.message.content);
    for (const t of content) {
      assert.ok(t.logprob <= 0);
      assert.equal(t.top_logprobs.length, 3);
      assert.equal(t.top_logprobs[0]!.token, t.token, 'greedy emits the most likely token');
      assert.deepEqual(t.bytes, [...Buffer.from(t.token)]);
    }
    const s = await chatStream({ temperature: 0, max_tokens: 16, logit_bias: NO_EOS, logprobs: true, top_logprobs: 3 });
    const streamed = s.chunks.flatMap((c) => c.choices[0]?.logprobs?.content ?? []);
    assertSameLogprobs(streamed, content);
  });

  test('speculative: a per-request policy; greedy output is the same under every policy', async () => {
    const base = { temperature: 0, max_tokens: 32, logit_bias: NO_EOS };
    const none = await chat({ ...base, speculative: { policy: 'none' } });
    assert.deepEqual(speculativeUsage(none.usage), { policy: 'none', rounds: 32, draft_tokens: 0, accepted_tokens: 0, acceptance_rate: 0, mean_accepted_per_round: 0, methods: {} });
    for (const speculative of [{ policy: 'fixed', k: 2 }, { policy: 'confidence', p_min: 0.3, k_max: 8 }, { threshold: 0.5 }]) {
      const res = await chat({ ...base, speculative });
      assert.equal(res.choices[0]!.message.content, none.choices[0]!.message.content, JSON.stringify(speculative));
      assert.ok(speculativeUsage(res.usage).draft_tokens > 0);
    }
    // A knob alone keeps the server's policy (specdec++ here) with another value.
    assert.match(speculativeUsage((await chat({ ...base, speculative: { threshold: 0.5 } })).usage).policy, /^specdec\+\+:0\.5/);
  });

  test('speculative: specdec++ with the acceptance head gives the same greedy output', async (t) => {
    if (!app.specd.hasHead) return t.skip('no acceptance head is bundled');
    const base = { temperature: 0, max_tokens: 32, logit_bias: NO_EOS };
    const none = await chat({ ...base, speculative: { policy: 'none' } });
    const res = await chat({ ...base, speculative: { policy: 'specdec++', k_max: 12 } });
    assert.equal(res.choices[0]!.message.content, none.choices[0]!.message.content);
    const spec = speculativeUsage(res.usage);
    assert.match(spec.policy, /^specdec\+\+/);
    assert.ok(spec.draft_tokens > 0);
  });

  test('errors reach the client as OpenAI errors', async () => {
    await assert.rejects(chat({ temperature: 9 }), (e: InstanceType<typeof OpenAI.APIError>) => e.status === 400 && (e.error as { param: string }).param === 'temperature');
    await assert.rejects(client.chat.completions.create({ model: 'other', messages: messages() }), (e: InstanceType<typeof OpenAI.APIError>) => e.status === 404 && e.code === 'model_not_found');
  });
});

describe('text completions', () => {
  test('a string prompt and its token ids give the same completion, streamed or not', async () => {
    const prompt = 'The three primary colours are';
    const ids = app.specd.facts.tokenizer.encode(prompt);
    const params = { model: MODEL, max_tokens: 24, temperature: 0.7, seed: 9, logit_bias: NO_EOS };
    const a = await client.completions.create({ ...params, prompt });
    const b = await client.completions.create({ ...params, prompt: ids });
    assert.equal(a.object, 'text_completion');
    assert.equal(a.choices[0]!.text, b.choices[0]!.text);
    assert.equal(a.usage!.prompt_tokens, ids.length);
    let streamed = '';
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of await client.completions.create({ ...params, prompt, stream: true, stream_options: { include_usage: true } })) {
      streamed += chunk.choices[0]?.text ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(streamed, a.choices[0]!.text);
    assert.equal(usage!.completion_tokens, 24);
    // A batch of prompts: one choice per prompt, in order (choice i seeded with seed + i).
    const other = 'Two plus two is';
    const batch = await client.completions.create({ ...params, prompt: [prompt, other] });
    assert.deepEqual(batch.choices.map((c) => c.index), [0, 1]);
    assert.equal(batch.choices[0]!.text, a.choices[0]!.text);
    assert.equal(batch.choices[1]!.text, (await client.completions.create({ ...params, prompt: other, seed: 10 })).choices[0]!.text);
  });

  test('default max_tokens is 16; logprobs N lists the chosen token and N alternatives', async () => {
    const res = await client.completions.create({ model: MODEL, prompt: 'Once upon a time', temperature: 0, logprobs: 2, logit_bias: NO_EOS });
    const lp = res.choices[0]!.logprobs!;
    assert.equal(res.usage!.completion_tokens, 16);
    assert.equal(lp.tokens!.length, 16);
    assert.equal(lp.tokens!.join(''), res.choices[0]!.text);
    assert.deepEqual(lp.text_offset!.slice(0, 3), [0, 1, 2]);
    lp.top_logprobs!.forEach((top, i) => assert.equal(top[lp.tokens![i]!], lp.token_logprobs![i]));
  });
});

describe('UTF-8', () => {
  test('a character whose bytes come in different rounds is never split across chunks', async () => {
    // One token per round (policy none) and the bytes of "é" (C3 A9) pushed up: each "é" spans two rounds.
    const params = { model: MODEL, prompt: 'café', max_tokens: 24, temperature: 0, logit_bias: { '195': 100, '169': 100 }, speculative: { policy: 'none' } };
    const whole = (await client.completions.create(params as OpenAI.CompletionCreateParamsNonStreaming)).choices[0]!.text;
    assert.ok(whole.includes('é'), JSON.stringify(whole));
    const chunks: string[] = [];
    for await (const chunk of await client.completions.create({ ...params, stream: true } as OpenAI.CompletionCreateParamsStreaming)) chunks.push(chunk.choices[0]?.text ?? '');
    assert.equal(chunks.join(''), whole);
    assert.ok(chunks.some((c) => c.includes('é')), 'the character arrives whole');
  });
});

describe('concurrency', () => {
  test('8 parallel streams all complete, each equal to the same request run alone', async () => {
    const params = (i: number) => ({ temperature: 0.9, top_k: 40, seed: 100 + i, max_tokens: 32, logit_bias: NO_EOS });
    const alone: string[] = [];
    for (let i = 0; i < 8; i++) alone.push((await chat(params(i))).choices[0]!.message.content!);
    const parallel = await Promise.all(Array.from({ length: 8 }, (_, i) => chatStream(params(i))));
    parallel.forEach((s, i) => {
      assert.equal(s.finish, 'length', `stream ${i}`);
      assert.equal(s.text, alone[i], `stream ${i}`);
    });
    assert.ok(new Set(alone).size > 1, 'different seeds, different texts');
  });
});

describe('metrics', () => {
  test('/metrics is Prometheus text, and the counters move with a request', async () => {
    const before = await metrics();
    const res = await chat({ temperature: 0, max_tokens: 20, logit_bias: NO_EOS });
    const after = await metrics();
    const delta = (name: string) => (after.get(name) ?? 0) - (before.get(name) ?? 0);
    const spec = speculativeUsage(res.usage);
    assert.equal(spec.policy, 'specdec++', 'the default policy with an acceptance head loaded');
    assert.equal(delta('specd_generation_tokens_total'), 20);
    assert.equal(delta('specd_prompt_tokens_total'), res.usage!.prompt_tokens);
    assert.equal(delta('specd_spec_decode_num_draft_tokens_total'), spec.draft_tokens);
    assert.equal(delta('specd_spec_decode_num_accepted_tokens_total'), spec.accepted_tokens);
    assert.equal(delta('specd_spec_decode_candidate_length_sum{policy="specdec++"}'), spec.draft_tokens);
    assert.equal(delta('specd_spec_decode_accepted_length_count{policy="specdec++"}'), spec.rounds);
    assert.equal(delta('specd_request_success_total{finished_reason="length"}'), 1);
    for (const h of ['time_to_first_token_seconds', 'e2e_request_latency_seconds', 'request_queue_time_seconds']) assert.equal(delta(`specd_${h}_count`), 1, h);
    assert.ok(delta('specd_inter_token_latency_seconds_count') >= 1);
    assert.ok(delta('specd_spec_decode_draft_seconds_total{policy="specdec++"}') > 0);
    assert.ok(delta('specd_spec_decode_verify_seconds_total{policy="specdec++"}') > 0);
    assert.ok(delta('specd_spec_decode_num_accepted_tokens_per_pos_total{position="0"}') >= 0);
    assert.equal(after.get('specd_num_requests_running'), 0);
    assert.ok(after.has('process_cpu_user_seconds_total'), 'default process metrics');
    assert.ok(after.has('specd_time_to_first_token_seconds_bucket{le="0.001"}'), 'buckets fit GPU latencies');
    assert.ok(after.has('specd_time_to_first_token_seconds_bucket{le="80"}'), 'and slow CPU prompts');
  });

  test("specdec++ requests feed the acceptance head's live calibration", async (t) => {
    if (!app.specd.hasHead) return t.skip('no acceptance head is bundled');
    const before = await metrics();
    const res = await chat({ temperature: 0, max_tokens: 48, logit_bias: NO_EOS, speculative: { policy: 'specdec++' } });
    const after = await metrics();
    const spec = speculativeUsage(res.usage);
    const total = (prefix: string, m: Map<string, number>) => [...m].filter(([k]) => k.startsWith(prefix)).reduce((a, [, v]) => a + v, 0);
    const delta = (prefix: string) => total(prefix, after) - total(prefix, before);
    const predictions = delta('specd_head_calibration_predictions_total');
    const rounds = delta('specd_spec_decode_num_drafts_total');
    assert.ok(spec.draft_tokens > 0 && rounds > 0);
    assert.ok(predictions > 0, "the worker forwards the head's predictions");
    assert.equal(delta('specd_head_calibration_accepted_total'), spec.accepted_tokens, 'every accepted candidate is a realised 1');
    // Judged candidates: the accepted ones plus at most one rejection per round.
    assert.ok(predictions >= spec.accepted_tokens && predictions <= Math.min(spec.draft_tokens, spec.accepted_tokens + rounds), `${predictions} predictions`);
    const predictedSum = delta('specd_head_calibration_predicted_probability_total');
    assert.ok(predictedSum > 0 && predictedSum <= predictions);
    assert.ok(delta('specd_head_calibration_squared_error_total') >= 0);
  });
});

describe('cancellation', () => {
  test("the client's disconnect cancels the generation and frees the worker", async () => {
    const before = await metrics();
    const stream = await client.chat.completions.create({ model: MODEL, messages: messages(), max_tokens: 900, temperature: 0, logit_bias: NO_EOS, stream: true });
    let received = 0;
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta.content && ++received === 3) break; // leaving the loop aborts the request
    }
    const t0 = Date.now();
    let m = await metrics();
    while (m.get('specd_num_requests_running') !== 0 || m.get('specd_request_success_total{finished_reason="abort"}') === before.get('specd_request_success_total{finished_reason="abort"}')) {
      assert.ok(Date.now() - t0 < 3000, 'the worker was not freed');
      await new Promise((r) => setTimeout(r, 10));
      m = await metrics();
    }
    const generated = m.get('specd_generation_tokens_total')! - before.get('specd_generation_tokens_total')!;
    assert.ok(generated < 200, `cancelled after ${generated} of 900 tokens`);
    // The freed worker serves the next request.
    assert.equal((await chat({ temperature: 0, max_tokens: 4 })).choices[0]!.finish_reason, 'length');
  });
});

/**
 * GET /metrics parsed as Prometheus text exposition: `name{labels}` -> value. Fails on a malformed
 * line, and on a specd series without `model_name="MODEL"` (left out of the keys).
 */
async function metrics(): Promise<Map<string, number>> {
  const res = await fetch(`${url}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return parsePrometheus(await res.text());
}

/** A sample line; values as Go's ParseFloat reads them (NaN and Inf in any case). */
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (-?(?:[0-9.]+(?:e[+-]?[0-9]+)?|nan|[+-]?inf))$/i;

function parsePrometheus(text: string): Map<string, number> {
  const out = new Map<string, number>();
  const typed = new Set<string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (meta) {
      if (meta[1] === 'TYPE') {
        assert.match(meta[3]!, /^(counter|gauge|histogram|summary|untyped)$/, line);
        typed.add(meta[2]!);
      }
      continue;
    }
    const m = SAMPLE.exec(line);
    assert.ok(m, `not a Prometheus sample line: ${line}`);
    const base = m[1]!.replace(/_(bucket|sum|count)$/, '');
    assert.ok(typed.has(m[1]!) || typed.has(base), `sample before its # TYPE: ${line}`);
    let labels = m[2] ?? '';
    if (m[1]!.startsWith('specd_')) {
      assert.ok(labels.includes(`model_name="${MODEL}"`), `no model_name label: ${line}`);
      labels = labels.replace(/,?model_name="[^"]*"/, '').replace('{,', '{').replace('{}', '');
    }
    const v = m[3]!.toLowerCase();
    out.set(m[1]! + labels, v === 'nan' ? NaN : v.endsWith('inf') ? (v.startsWith('-') ? -Infinity : Infinity) : Number(v));
  }
  return out;
}
