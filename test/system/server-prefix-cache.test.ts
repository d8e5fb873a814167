/**
 * Prefix caching through the API, with the real `openai` client on real ports: a conversation's
 * later turns report `usage.prompt_tokens_details.cached_tokens` (chat, completions) and
 * `usage.input_tokens_details.cached_tokens` (responses), streamed and not; the text equals a
 * server started with prefix caching off (which reports 0); /metrics counts the queried and
 * the hit tokens as the responses reported them. A response continued with `previous_response_id`
 * finds its conversation's prefix cached and writes what the whole conversation sent explicitly does.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import OpenAI from 'openai';
import { PREFIX_BLOCK_SIZE } from '../../src/engine/prefix-cache.js';
import { buildApp } from '../../src/server/app.js';

const MODEL = 'specd-pair-target';
const SYSTEM = 'You are a terse assistant for a railway company. Answer with numbers where you can.';
const QUESTIONS = ['How long is a day?', 'And a week?', 'How many weeks are in a year?'];

let cachedApp: FastifyInstance;
let plainApp: FastifyInstance;
let cached: OpenAI;
let plain: OpenAI;
/** What the cached server's responses reported: [prompt tokens, cached tokens] summed. */
const reported = { prompt: 0, cached: 0 };

async function start(prefixCaching: boolean): Promise<[FastifyInstance, OpenAI]> {
  const app = await buildApp({ workers: 1, pair: { prefixCaching } });
  await app.specd.engine.ready;
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  return [app, new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0 })];
}

before(async () => {
  [cachedApp, cached] = await start(true);
  [plainApp, plain] = await start(false);
});
after(async () => {
  await cachedApp?.close();
  await plainApp?.close();
});

type Usage = { prompt_tokens: number; prompt_tokens_details?: { cached_tokens?: number } };
const cachedOf = (usage: Usage | undefined | null) => usage?.prompt_tokens_details?.cached_tokens;

function tally(client: OpenAI, promptTokens: number, cachedTokens: number): void {
  if (client !== cached) return;
  reported.prompt += promptTokens;
  reported.cached += cachedTokens;
}

/** A chat conversation, each turn sending the whole conversation; streamed turns read the usage chunk. */
async function chat(client: OpenAI, stream: boolean): Promise<{ texts: string[]; usages: Usage[] }> {
  const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [{ role: 'system', content: `${stream ? 'Streamed.' : 'Whole.'} ${SYSTEM}` }];
  const texts: string[] = [];
  const usages: Usage[] = [];
  for (const q of QUESTIONS) {
    messages.push({ role: 'user', content: q });
    let text = '';
    let usage: Usage | undefined;
    if (stream) {
      const chunks = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 24, temperature: 0, stream: true, stream_options: { include_usage: true } });
      for await (const chunk of chunks) {
        text += chunk.choices[0]?.delta.content ?? '';
        if (chunk.usage) usage = chunk.usage as Usage;
      }
    } else {
      const res = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 24, temperature: 0 });
      text = res.choices[0]!.message.content ?? '';
      usage = res.usage as Usage;
    }
    assert.ok(usage, 'usage reported');
    tally(client, usage.prompt_tokens, cachedOf(usage)!);
    messages.push({ role: 'assistant', content: text });
    texts.push(text);
    usages.push(usage);
  }
  return { texts, usages };
}

describe('prefix caching through the API', () => {
  for (const stream of [false, true]) {
    test(`chat completions${stream ? ', streamed' : ''}: later turns report cached tokens; the text equals a server without the cache`, async () => {
      const withCache = await chat(cached, stream);
      const without = await chat(plain, stream);
      assert.deepEqual(withCache.texts, without.texts);
      assert.deepEqual(without.usages.map(cachedOf), [0, 0, 0], 'no cache: 0 cached tokens');
      const [first, ...later] = withCache.usages;
      // A new system prompt: at most the chat template's opening, which every chat shares, is cached.
      assert.ok(cachedOf(first)! < 2 * PREFIX_BLOCK_SIZE, `${cachedOf(first)} cached of a new conversation`);
      later.forEach((usage, t) => {
        const previous = withCache.usages[t]!.prompt_tokens;
        assert.ok(cachedOf(usage)! >= previous && cachedOf(usage)! < usage.prompt_tokens, `turn ${t + 2}: ${cachedOf(usage)} cached of ${usage.prompt_tokens}, the previous prompt had ${previous}`);
      });
    });
  }

  test('completions: the same prompt again has all but its last token cached, streamed and not', async () => {
    const prompt = 'The timetable for the morning trains from the central station lists';
    const first = await cached.completions.create({ model: MODEL, prompt, max_tokens: 8, temperature: 0 });
    tally(cached, first.usage!.prompt_tokens, cachedOf(first.usage)!);
    assert.equal(cachedOf(first.usage), 0);
    const again = await cached.completions.create({ model: MODEL, prompt, max_tokens: 8, temperature: 0 });
    tally(cached, again.usage!.prompt_tokens, cachedOf(again.usage)!);
    assert.equal(cachedOf(again.usage), again.usage!.prompt_tokens - 1);
    assert.equal(again.choices[0]!.text, first.choices[0]!.text);
    const chunks = await cached.completions.create({ model: MODEL, prompt, max_tokens: 8, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let usage: Usage | undefined;
    for await (const chunk of chunks) if (chunk.usage) usage = chunk.usage as Usage;
    tally(cached, usage!.prompt_tokens, cachedOf(usage)!);
    assert.equal(cachedOf(usage), usage!.prompt_tokens - 1);
  });

  test('responses: input_tokens_details.cached_tokens, streamed and not', async () => {
    const input = 'List three stations on the coastal line.';
    const instructions = 'Answer in one line.';
    const first = await cached.responses.create({ model: MODEL, input, instructions, max_output_tokens: 12, temperature: 0 });
    tally(cached, first.usage!.input_tokens, first.usage!.input_tokens_details.cached_tokens);
    assert.equal(first.usage!.input_tokens_details.cached_tokens, 0);
    const again = await cached.responses.create({ model: MODEL, input, instructions, max_output_tokens: 12, temperature: 0 });
    tally(cached, again.usage!.input_tokens, again.usage!.input_tokens_details.cached_tokens);
    assert.equal(again.usage!.input_tokens_details.cached_tokens, again.usage!.input_tokens - 1);
    const stream = await cached.responses.create({ model: MODEL, input, instructions, max_output_tokens: 12, temperature: 0, stream: true });
    let completed: OpenAI.Responses.Response | undefined;
    // max_output_tokens ends it as incomplete.
    for await (const event of stream) if (event.type === 'response.completed' || event.type === 'response.incomplete') completed = event.response;
    tally(cached, completed!.usage!.input_tokens, completed!.usage!.input_tokens_details.cached_tokens);
    assert.equal(completed!.usage!.input_tokens_details.cached_tokens, completed!.usage!.input_tokens - 1);
    assert.equal(completed!.output_text ?? again.output_text, again.output_text);
  });

  test('responses: previous_response_id continues a stored response from the cache; the text equals the whole conversation sent explicitly', async () => {
    const instructions = 'Answer in one line.';
    const questions = ['Which trains stop at the harbour?', 'And at the airport?', 'Which one is faster?'];
    const turns: OpenAI.Responses.Response[] = [];
    const explicit: OpenAI.Responses.ResponseInputItem[] = [];
    for (const [t, question] of questions.entries()) {
      const previous = turns.at(-1);
      const params = { model: MODEL, input: question, instructions, max_output_tokens: 16, temperature: 0, ...(previous ? { previous_response_id: previous.id } : {}) };
      let res: OpenAI.Responses.Response;
      if (t === 2) {
        // The last turn streamed: its final event's object (which has no output_text helper: read the message).
        let last: OpenAI.Responses.Response | undefined;
        for await (const event of await cached.responses.create({ ...params, stream: true })) {
          if (event.type === 'response.completed' || event.type === 'response.incomplete') last = event.response;
        }
        const message = last!.output.find((item) => item.type === 'message') as OpenAI.Responses.ResponseOutputMessage;
        res = { ...last!, output_text: (message.content[0] as OpenAI.Responses.ResponseOutputText).text };
      } else {
        res = await cached.responses.create(params);
      }
      tally(cached, res.usage!.input_tokens, res.usage!.input_tokens_details.cached_tokens);
      assert.equal(res.previous_response_id, previous?.id ?? null);
      // The same conversation, every turn sent explicitly, to the server without the cache.
      explicit.push({ role: 'user', content: question });
      const whole = await plain.responses.create({ model: MODEL, input: explicit, instructions, max_output_tokens: 16, temperature: 0, store: false });
      explicit.push({ role: 'assistant', content: whole.output_text });
      assert.equal(res.output_text, whole.output_text, `turn ${t + 1}`);
      assert.equal(res.usage!.input_tokens, whole.usage!.input_tokens, `turn ${t + 1}: the continued prompt is the explicit one`);
      if (previous) {
        const cachedTokens = res.usage!.input_tokens_details.cached_tokens;
        assert.ok(cachedTokens >= previous.usage!.input_tokens && cachedTokens < res.usage!.input_tokens, `turn ${t + 1}: ${cachedTokens} cached of ${res.usage!.input_tokens}, the previous prompt had ${previous.usage!.input_tokens}`);
      }
      turns.push(res);
    }
  });

  test('/metrics: specd_prefix_cache_queries_total and _hits_total count the tokens the responses reported', async () => {
    const text = await (await fetch(`${cachedApp.listeningOrigin}/metrics`)).text();
    const value = (name: string) => Number(new RegExp(`^${name}\\{[^}]*\\} (\\S+)$`, 'm').exec(text)?.[1]);
    assert.equal(value('specd_prefix_cache_queries_total'), reported.prompt);
    assert.equal(value('specd_prefix_cache_hits_total'), reported.cached);
    assert.ok(reported.cached > 0);
    const plainText = await (await fetch(`${plainApp.listeningOrigin}/metrics`)).text();
    assert.match(plainText, /^specd_prefix_cache_hits_total\{[^}]*\} 0$/m);
  });
});
