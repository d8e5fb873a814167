/**
 * The API's output is decided token by token (engine/output-decider.ts), through the real
 * `openai` client on a real port: the finish reason when a stop string and max_tokens end on
 * the same token, usage and logprobs after a stop string spanning rounds, `text_offset` over
 * multi-byte characters and across stream chunks, /metrics' finished_reason, and greedy chat
 * and text completions (content, finish reason, usage, logprobs, offsets) identical under every
 * policy, streamed or not, for stop strings hit by the first token, completed by the
 * max_tokens-th token, spanning rounds and starting with a multi-byte character (bundled pair).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import OpenAI from 'openai';
import { buildApp } from '../../src/server/app.js';

const MODEL = 'specd-pair-target';
const POLICIES: Record<string, unknown>[] = [
  { policy: 'none' },
  { policy: 'fixed', k: 1 },
  { policy: 'fixed', k: 2 },
  { policy: 'fixed', k: 4 },
  { policy: 'fixed', k: 8 },
  { policy: 'confidence', p_min: 0.5 },
  { policy: 'specdec++' },
];

let app: FastifyInstance;
let url: string;
let client: OpenAI;

before(async () => {
  app = await buildApp({ workers: 1 });
  await app.specd.engine.ready;
  url = await app.listen({ host: '127.0.0.1', port: 0 });
  client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 });
});
after(() => app?.close());

type CompletionParams = Omit<OpenAI.CompletionCreateParamsNonStreaming, 'model'> & { speculative?: Record<string, unknown> };

const complete = (params: CompletionParams) => client.completions.create({ model: MODEL, temperature: 0, ...params } as OpenAI.CompletionCreateParamsNonStreaming);

/** A streamed completion put back together: text, finish reason, usage and logprobs of every chunk. */
async function completeStreamed(params: CompletionParams) {
  const stream = await client.completions.create({ model: MODEL, temperature: 0, ...params, stream: true, stream_options: { include_usage: true } } as OpenAI.CompletionCreateParamsStreaming);
  const out = { text: '', finish: null as string | null, usage: undefined as OpenAI.CompletionUsage | undefined, tokens: [] as string[], token_logprobs: [] as number[], text_offset: [] as number[] };
  for await (const chunk of stream) {
    const choice = chunk.choices[0];
    if (chunk.usage) out.usage = chunk.usage;
    if (!choice) continue;
    out.text += choice.text;
    if (choice.finish_reason) out.finish = choice.finish_reason;
    if (choice.logprobs) {
      out.tokens.push(...choice.logprobs.tokens!);
      out.token_logprobs.push(...choice.logprobs.token_logprobs!);
      out.text_offset.push(...choice.logprobs.text_offset!);
    }
  }
  return out;
}

async function finishedCount(reason: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  // Every specd series also carries model_name: match the finish reason among the labels.
  const line = text.split('\n').find((l) => l.startsWith('specd_request_success_total{') && l.includes(`finished_reason="${reason}"`));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

describe('stop strings, max_tokens and finish_reason', () => {
  test('a stop string matched by the only token allowed: empty content, finish_reason stop, counted as stop in /metrics', async () => {
    const before = await finishedCount('stop');
    const res = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Hi' }], temperature: 0, max_tokens: 1, stop: ['H'] });
    assert.equal(res.choices[0]!.message.content, '');
    assert.equal(res.choices[0]!.finish_reason, 'stop');
    assert.equal(res.usage!.completion_tokens, 1);
    assert.equal(await finishedCount('stop'), before + 1);
  });

  for (const speculative of POLICIES) {
    test(`completions with a stop string, ${JSON.stringify(speculative)}: the same text, usage and logprobs`, async () => {
      // The stop string is completed by the 14th token: stop, not length.
      const at14 = await complete({ prompt: 'The quick brown fox', max_tokens: 14, stop: ['are'], speculative });
      assert.deepEqual([at14.choices[0]!.text, at14.choices[0]!.finish_reason, at14.usage!.completion_tokens], [' is 20 squ', 'stop', 11]);
      const at40 = await complete({ prompt: 'The quick brown fox', max_tokens: 40, stop: ['are'], speculative });
      assert.deepEqual([at40.choices[0]!.text, at40.choices[0]!.finish_reason, at40.usage!.completion_tokens], [' is 20 squ', 'stop', 11]);
      // Tokens and logprobs end at the token holding the stop string's first character.
      const fee = await complete({ prompt: 'The quick brown fox', max_tokens: 40, stop: ['e fee'], logprobs: 1, speculative });
      const choice = fee.choices[0]!;
      assert.deepEqual([choice.text, choice.finish_reason, fee.usage!.completion_tokens], [' is 20 squar', 'stop', 13]);
      assert.equal(choice.logprobs!.tokens!.join(''), ' is 20 square');
      assert.deepEqual(choice.logprobs!.text_offset, [...Array(13).keys()]);
      const streamed = await completeStreamed({ prompt: 'The quick brown fox', max_tokens: 40, stop: ['e fee'], logprobs: 1, speculative });
      assert.deepEqual([streamed.text, streamed.finish, streamed.usage!.completion_tokens], [' is 20 squar', 'stop', 13]);
      assert.deepEqual(streamed.text_offset, choice.logprobs!.text_offset, 'streamed offsets never go backwards');
      assert.deepEqual(streamed.tokens, choice.logprobs!.tokens);
    });
  }
});

describe('text_offset over multi-byte characters', () => {
  test('each byte token starts where its character starts, streamed or not, under every policy', async () => {
    const prompt = app.specd.facts.tokenizer.encodeChat([{ role: 'user', content: 'Write the word café and naïve.' }]);
    let reference: { text: string; tokens: string[]; offsets: number[] } | undefined;
    for (const speculative of POLICIES) {
      const res = await complete({ prompt, max_tokens: 40, logprobs: 1, speculative });
      const { text } = res.choices[0]!;
      const offsets = res.choices[0]!.logprobs!.text_offset!;
      const tokens = res.choices[0]!.logprobs!.tokens!;
      assert.ok([...text].some((ch) => Buffer.byteLength(ch) > 1), `a multi-byte character in ${JSON.stringify(text)}`);
      // Offsets from the text itself: a character of b bytes gives b tokens at its offset.
      const expected: number[] = [];
      let offset = 0;
      for (const ch of text) {
        for (let b = 0; b < Buffer.byteLength(ch); b++) expected.push(offset);
        offset += ch.length;
      }
      assert.deepEqual(offsets, expected.slice(0, offsets.length), JSON.stringify(speculative));
      assert.equal(offsets.length, res.usage!.completion_tokens);
      const streamed = await completeStreamed({ prompt, max_tokens: 40, logprobs: 1, speculative });
      assert.deepEqual([streamed.text, streamed.text_offset, streamed.tokens], [text, offsets, tokens], `${JSON.stringify(speculative)}: streamed`);
      reference ??= { text, tokens, offsets };
      assert.deepEqual({ text, tokens, offsets }, reference, `${JSON.stringify(speculative)}: same as policy none`);
    }
  });
});

describe('greedy chat: identical under every policy, streamed or not', () => {
  type ChatOutcome = { content: string; finish: string | null; completionTokens: number; tokens: string[] };

  async function chatOnce(messages: OpenAI.Chat.ChatCompletionMessageParam[], params: { max_tokens: number; stop: string[]; speculative: Record<string, unknown> }): Promise<ChatOutcome> {
    const res = await client.chat.completions.create({ model: MODEL, messages, temperature: 0, logprobs: true, ...params } as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming);
    const choice = res.choices[0]!;
    return { content: choice.message.content!, finish: choice.finish_reason, completionTokens: res.usage!.completion_tokens, tokens: choice.logprobs!.content!.map((l) => l.token) };
  }

  async function chatStreamed(messages: OpenAI.Chat.ChatCompletionMessageParam[], params: { max_tokens: number; stop: string[]; speculative: Record<string, unknown> }): Promise<ChatOutcome> {
    const stream = await client.chat.completions.create({ model: MODEL, messages, temperature: 0, logprobs: true, ...params, stream: true, stream_options: { include_usage: true } } as OpenAI.Chat.ChatCompletionCreateParamsStreaming);
    const out: ChatOutcome = { content: '', finish: null, completionTokens: -1, tokens: [] };
    for await (const chunk of stream) {
      if (chunk.usage) out.completionTokens = chunk.usage.completion_tokens;
      const choice = chunk.choices[0];
      if (!choice) continue;
      out.content += choice.delta.content ?? '';
      if (choice.finish_reason) out.finish = choice.finish_reason;
      out.tokens.push(...(choice.logprobs?.content ?? []).map((l) => l.token));
    }
    return out;
  }

  test('stop strings from the greedy text of a prompt with multi-byte characters', async () => {
    const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [{ role: 'user', content: 'Write the word café and naïve.' }];
    const reference = await chatOnce(messages, { max_tokens: 48, stop: [], speculative: { policy: 'none' } });
    const text = reference.content;
    const wide = [...text].findIndex((ch) => Buffer.byteLength(ch) > 1);
    assert.ok(wide > 0, `a multi-byte character in ${JSON.stringify(text)}`);
    const wideAt = [...text].slice(0, wide).join('').length;
    // A stop string completed by the m-th token (the model's tokens are bytes), with max_tokens m.
    const bytes = Buffer.from(text, 'utf8');
    let atMax: { name: string; max_tokens: number; stop: string[] } | undefined;
    for (let m = 20; m < bytes.length && !atMax; m++) {
      const upTo = bytes.subarray(0, m).toString('utf8');
      const stop = upTo.slice(-3);
      if (/^[!-~]{3}$/.test(stop) && upTo.indexOf(stop) === upTo.length - 3) atMax = { name: `at max_tokens ${m}`, max_tokens: m, stop: [stop] };
    }
    assert.ok(atMax, `a stop string for max_tokens in ${JSON.stringify(text)}`);
    const cases = [
      { name: 'first token', max_tokens: 48, stop: [text[0]!] },
      { name: 'spanning rounds', max_tokens: 48, stop: [text.slice(6, 18)] },
      { name: 'multi-byte start', max_tokens: 48, stop: [text.slice(wideAt, wideAt + 3)] },
      atMax,
    ];
    for (const c of cases) {
      let expected: ChatOutcome | undefined;
      for (const speculative of POLICIES) {
        const label = `${c.name} ${JSON.stringify(c.stop)} ${JSON.stringify(speculative)}`;
        const once = await chatOnce(messages, { max_tokens: c.max_tokens, stop: c.stop, speculative });
        const streamed = await chatStreamed(messages, { max_tokens: c.max_tokens, stop: c.stop, speculative });
        assert.equal(once.finish, 'stop', label);
        assert.ok(!once.content.includes(c.stop[0]!), label);
        assert.equal(once.completionTokens, once.tokens.length, label);
        assert.deepEqual(streamed, once, `${label}: streamed`);
        expected ??= once;
        assert.deepEqual(once, expected, `${label}: same as policy none`);
      }
    }
  });
});
