/**
 * `--reasoning-parser` through the real `openai` client on a real port: chat's
 * `reasoning_content` (whole and streamed as deltas), reasoning output items in /v1/responses
 * (whole and streamed as reasoning_text events before the message), qwen3's "no <think>, all
 * content", and `chat_template_kwargs` reaching the chat template.
 *
 * The bundled pair's text is noise, so its output is steered with a json_schema whose string
 * pattern holds a `</think>`: the output is then `"<reasoning></think><answer>"`, which the
 * deepseek_r1 parser must split at the tag. The target is a copy of the bundled one whose chat
 * template reads `enable_thinking` as Qwen3's does (an empty think block closed in the prompt).
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import OpenAI, { APIError } from 'openai';
import { BUNDLED_DRAFT, BUNDLED_TARGET } from '../../src/paths.js';
import { buildApp } from '../../src/server/app.js';
import type { ReasoningParserName } from '../../src/text/reasoning-parser.js';

const MODEL = 'thinking-target';
const PATTERN = '^[a-z ]{3,12}</think>[a-z ]{3,12}$';
const steered = { type: 'json_schema', json_schema: { name: 'steer', schema: { type: 'string', pattern: PATTERN } } } as const;
const messages = [{ role: 'user' as const, content: 'Think, then answer: what is 2+2?' }];

let root: string;
const servers: FastifyInstance[] = [];

/** The bundled target with a chat template that closes an empty think block when enable_thinking is false. */
function thinkingTarget(): string {
  const dir = join(root, MODEL);
  mkdirSync(dir);
  for (const file of ['config.json', 'generation_config.json', 'tokenizer.json']) copyFileSync(join(BUNDLED_TARGET, file), join(dir, file));
  symlinkSync(join(BUNDLED_TARGET, 'onnx'), join(dir, 'onnx'));
  const config = JSON.parse(readFileSync(join(BUNDLED_TARGET, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  config.chat_template = `${config.chat_template as string}{% if add_generation_prompt and enable_thinking is defined and enable_thinking is false %}{{ '<think>\n\n</think>\n\n' }}{% endif %}`;
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(config));
  return dir;
}

async function serve(target: string, reasoningParser?: ReasoningParserName): Promise<OpenAI> {
  const app = await buildApp({ workers: 1, pair: { target, draft: BUNDLED_DRAFT, head: null }, ...(reasoningParser ? { reasoningParser } : {}) });
  servers.push(app);
  await app.specd.engine.ready;
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  return new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 });
}

let plain: OpenAI;
let r1: OpenAI;
let qwen3: OpenAI;
let target: string;

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'specd-reasoning-'));
  target = thinkingTarget();
  plain = await serve(target);
  r1 = await serve(target, 'deepseek_r1');
  qwen3 = await serve(target, 'qwen3');
});
after(async () => {
  for (const app of servers) await app.close();
  rmSync(root, { recursive: true, force: true });
});

type ChatParams = OpenAI.Chat.ChatCompletionCreateParamsNonStreaming & { chat_template_kwargs?: Record<string, unknown> };
const chatParams = (extra: Partial<ChatParams> = {}): ChatParams => ({ model: MODEL, messages, max_tokens: 60, temperature: 0, response_format: steered, ...extra });
type ReasoningMessage = { content: string | null; reasoning_content?: string | null };

describe('--reasoning-parser deepseek_r1', () => {
  test('chat: reasoning_content is the text before </think>, content the rest; streamed deltas add up to it', async () => {
    const raw = (await plain.chat.completions.create(chatParams())).choices[0]!.message.content!;
    const at = raw.indexOf('</think>');
    assert.ok(at > 0, `the steered output holds the tag: ${raw}`);
    const res = await r1.chat.completions.create(chatParams());
    const message = res.choices[0]!.message as unknown as ReasoningMessage;
    assert.equal(message.reasoning_content, raw.slice(0, at));
    assert.equal(message.content, raw.slice(at + '</think>'.length));
    assert.equal(res.choices[0]!.finish_reason, 'stop');

    const stream = await r1.chat.completions.create({ ...chatParams(), stream: true });
    let reasoning = '';
    let content = '';
    let reasoningChunks = 0;
    let sawContentBeforeReasoningEnded = false;
    for await (const chunk of stream) {
      const delta = chunk.choices[0]?.delta as (ReasoningMessage & { content?: string }) | undefined;
      if (delta?.reasoning_content) {
        reasoningChunks++;
        if (content) sawContentBeforeReasoningEnded = true;
        reasoning += delta.reasoning_content;
      }
      if (delta?.content) content += delta.content;
      assert.ok(!(delta?.content ?? '').includes('</think>') && !(delta?.reasoning_content ?? '').includes('<'), 'no part of a tag in any delta');
    }
    assert.equal(reasoning, message.reasoning_content);
    assert.equal(content, message.content);
    assert.ok(reasoningChunks >= 1);
    assert.ok(!sawContentBeforeReasoningEnded);
  });

  test('responses: a reasoning item before the message, whole and streamed', async () => {
    const body = { model: MODEL, input: messages[0]!.content, max_output_tokens: 60, temperature: 0, text: { format: { type: 'json_schema', name: 'steer', schema: { type: 'string', pattern: PATTERN } } } } as OpenAI.Responses.ResponseCreateParamsNonStreaming;
    const raw = (await plain.responses.create(body)).output_text;
    const at = raw.indexOf('</think>');
    assert.ok(at > 0, raw);
    const res = await r1.responses.create(body);
    assert.deepEqual(res.output.map((o) => o.type), ['reasoning', 'message']);
    const item = res.output[0] as OpenAI.Responses.ResponseReasoningItem;
    assert.match(item.id, /^rs_/);
    assert.deepEqual(item.content, [{ type: 'reasoning_text', text: raw.slice(0, at) }]);
    assert.equal(res.output_text, raw.slice(at + '</think>'.length));

    const events: OpenAI.Responses.ResponseStreamEvent[] = [];
    for await (const e of await r1.responses.create({ ...body, stream: true })) events.push(e);
    const types = events.map((e) => e.type);
    const deltas = events.filter((e) => e.type === 'response.reasoning_text.delta') as { delta: string; output_index: number }[];
    assert.equal(deltas.map((d) => d.delta).join(''), raw.slice(0, at));
    assert.ok(deltas.every((d) => d.output_index === 0));
    const texts = events.filter((e) => e.type === 'response.output_text.delta') as { delta: string; output_index: number }[];
    assert.equal(texts.map((d) => d.delta).join(''), res.output_text);
    assert.ok(texts.every((d) => d.output_index === 1));
    assert.ok(types.indexOf('response.reasoning_text.done') < types.indexOf('response.output_text.delta'), 'the reasoning item closes before the message streams');
    const completed = events.at(-1) as OpenAI.Responses.ResponseCompletedEvent;
    assert.equal(completed.type, 'response.completed');
    assert.deepEqual(completed.response.output.map((o) => o.type), ['reasoning', 'message']);
    assert.equal(events.map((e) => e.sequence_number).join(), events.map((_, i) => i).join());
  });
});

describe('--reasoning-parser qwen3 and chat_template_kwargs', () => {
  test('an output that does not open <think> is all content, with reasoning_content null', async () => {
    const raw = (await plain.chat.completions.create(chatParams())).choices[0]!.message.content!;
    const message = (await qwen3.chat.completions.create(chatParams())).choices[0]!.message as unknown as ReasoningMessage;
    assert.equal(message.reasoning_content, null);
    assert.equal(message.content, raw);
  });

  test('enable_thinking reaches the chat template (the prompt gains the closed think block)', async () => {
    const usage = async (kwargs?: Record<string, unknown>) =>
      (await plain.chat.completions.create({ model: MODEL, messages, max_tokens: 1, temperature: 0, ...(kwargs ? { chat_template_kwargs: kwargs } : {}) } as ChatParams)).usage!.prompt_tokens;
    const base = await usage();
    assert.equal(await usage({ enable_thinking: true }), base);
    assert.equal(await usage({ enable_thinking: false }), base + '<think>\n\n</think>\n\n'.length, 'byte-level tokens: one per byte');
  });

  test('a chat_template_kwargs that is not an object is refused naming the field', async () => {
    await assert.rejects(plain.chat.completions.create({ ...chatParams(), chat_template_kwargs: 'nope' } as unknown as ChatParams), (err: APIError) => {
      assert.equal(err.status, 400);
      assert.match(err.message, /chat_template_kwargs/);
      return true;
    });
  });
});
