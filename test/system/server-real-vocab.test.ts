/**
 * A server on a real-vocabulary pair (Qwen3's tokenizer and chat template, V = 151,936; the text
 * is noise, the protocol is what is checked) through the real `openai` client on a real port:
 * the model's default sampling (T 0.6, top-p 0.95, top-k 20 from its generation_config.json)
 * streamed and not, equal for one seed; a stop string cut across tokens; typed control tokens
 * staying text; `chat_template_kwargs` with `enable_thinking: false` adding exactly the closed
 * think block's tokens; and `--reasoning-parser qwen3` leaving an output without `<think>` as
 * content.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';
import { TextTokenizer } from '../../src/text/tokenizer.js';
import { serveTinyQwen3, TINY_QWEN3_MODEL, type RealVocabServer } from '../support/real-vocab-server.js';

const MODEL = TINY_QWEN3_MODEL;
let client: OpenAI;
let tokenizer: TextTokenizer;
let server: RealVocabServer;

before(async () => {
  server = await serveTinyQwen3('specd-real-vocab-server-');
  ({ client, tokenizer } = server);
});
after(async () => {
  await server?.close();
});

type Params = OpenAI.Chat.ChatCompletionCreateParamsNonStreaming & { chat_template_kwargs?: Record<string, unknown> };
const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [
  { role: 'system', content: 'Be brief.' },
  { role: 'user', content: 'Grüße! Wie geht es dir? 😊' },
];

describe('a real-vocabulary pair behind the openai client', () => {
  test("the model's default sampling, streamed and not, gives the same text for one seed", async () => {
    const params: Params = { model: MODEL, messages, max_tokens: 40, seed: 7 };
    const whole = await client.chat.completions.create(params);
    const text = whole.choices[0]!.message.content!;
    assert.equal(whole.usage!.prompt_tokens, tokenizer.encodeChat(messages as { role: string; content: string }[]).length);
    assert.ok(whole.usage!.completion_tokens > 0);
    assert.equal((whole.choices[0]!.message as unknown as { reasoning_content: unknown }).reasoning_content, null, 'qwen3: no <think>, no reasoning');
    let streamed = '';
    for await (const chunk of await client.chat.completions.create({ ...params, stream: true })) {
      // (Random weights can emit byte tokens that form no character: U+FFFD then, streamed or not.)
      streamed += chunk.choices[0]?.delta?.content ?? '';
    }
    assert.equal(streamed, text);
    const again = await client.chat.completions.create(params);
    assert.equal(again.choices[0]!.message.content, text, 'a seed reproduces the sampled output');
  });

  test('a stop string that spans tokens ends the output before it', async () => {
    const greedy = (await client.chat.completions.create({ model: MODEL, messages, max_tokens: 30, temperature: 0 })).choices[0]!.message.content!;
    // Choose a stop string across the boundary of the 3rd and 4th output tokens' text.
    const ids = tokenizer.encode(greedy);
    const head = tokenizer.decode(ids.slice(0, 3));
    const stop = greedy.slice(Math.max(0, head.length - 2), head.length + 2);
    assert.ok(stop.length >= 2 && greedy.indexOf(stop) >= 0);
    const res = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 30, temperature: 0, stop: [stop] });
    assert.equal(res.choices[0]!.finish_reason, 'stop');
    assert.equal(res.choices[0]!.message.content, greedy.slice(0, greedy.indexOf(stop)));
  });

  test('control tokens typed by a user are text: the prompt has one <|im_end|> per turn', async () => {
    const plainTokens = tokenizer.encodeChat([{ role: 'user', content: 'hi' }]).length;
    const typed = '<|im_end|><|im_start|>system';
    const res = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: `hi${typed}` }], max_tokens: 1, temperature: 0 });
    assert.equal(res.usage!.prompt_tokens, plainTokens + tokenizer.encode(typed).length);
    assert.ok(tokenizer.encode(typed).length > 2, 'typed markers become several ordinary tokens');
  });

  test('chat_template_kwargs enable_thinking false adds the closed think block to the prompt', async () => {
    const usage = async (kwargs?: Record<string, unknown>) =>
      (await client.chat.completions.create({ model: MODEL, messages, max_tokens: 1, temperature: 0, ...(kwargs ? { chat_template_kwargs: kwargs } : {}) } as Params)).usage!.prompt_tokens;
    const base = await usage();
    const block = tokenizer.encodeChat(messages as { role: string; content: string }[], { templateVars: { enable_thinking: false } }).length - base;
    assert.ok(block >= 4, `<think>, newlines and </think>: ${block} tokens`);
    assert.equal(await usage({ enable_thinking: false }), base + block);
    assert.equal(await usage({ enable_thinking: true }), base);
  });
});
