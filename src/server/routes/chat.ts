/** POST /v1/chat/completions. */
import type { FastifyInstance } from 'fastify';
import { collectRun, GenerationRun } from '../generation-run.js';
import { type ChatBody, planChat } from '../requests.js';
import { type ChoiceOutput, chatChunk, chatCompletion, chatLogprobs, chatUsageChunk, completionId, nowSeconds } from '../responses.js';
import { chatCompletionBodySchema } from '../schemas.js';
import { type StreamFormat, streamRun } from '../streaming.js';
import type { TokenTexts } from '../token-text.js';
import { parseToolCalls, ToolCallParser, type ToolCallEvent } from '../tool-calls.js';

export async function chatRoutes(app: FastifyInstance): Promise<void> {
  app.post<{ Body: ChatBody }>('/v1/chat/completions', { schema: { body: chatCompletionBodySchema } }, async (request, reply) => {
    const ctx = app.specd;
    const plan = planChat(request.body, ctx);
    const run = new GenerationRun(ctx.engine, plan, request.arrivedAt);
    run.cancelOnDisconnect(reply.raw);
    const common = { id: completionId('chatcmpl'), created: nowSeconds(), model: plan.model };
    if (plan.stream) {
      await streamRun(reply, run, plan.tools ? toolCallStreamFormat(common, plan.requests.length) : chatStreamFormat(common, ctx.texts), 'messages');
      return reply;
    }
    const choices = await collectRun(run, 'messages');
    return chatCompletion(common, plan.tools ? choices.map(withToolCalls) : choices, run.usage.toJSON(), ctx.texts);
  });
}

/** A choice's output read for tool calls: content and calls; `tool_calls` finishes a choice that called. */
function withToolCalls(choice: ChoiceOutput): ChoiceOutput {
  const { content, toolCalls } = parseToolCalls(choice.text, choice.finishReason);
  if (toolCalls.length === 0) return { ...choice, text: content ?? '' };
  return { ...choice, text: content ?? '', toolCalls, finishReason: choice.finishReason === 'stop' ? 'tool_calls' : choice.finishReason };
}

/**
 * Streaming with tools, as OpenAI streams calls: content deltas; per call a first chunk with its
 * index, id, type and name (and empty arguments), then chunks with more of its arguments.
 * Logprobs are not sent with tools.
 */
function toolCallStreamFormat(common: { id: string; created: number; model: string }, choices: number): StreamFormat {
  const parsers = Array.from({ length: choices }, () => new ToolCallParser());
  const called = new Array<boolean>(choices).fill(false);
  const chunks = (index: number, events: ToolCallEvent[]) =>
    events.map((e) => {
      if (e.type === 'content') return chatChunk(common, index, { content: e.text });
      called[index] = true;
      if (e.type === 'call') return chatChunk(common, index, { tool_calls: [{ index: e.index, id: e.id, type: 'function', function: { name: e.name, arguments: '' } }] });
      return chatChunk(common, index, { tool_calls: [{ index: e.index, function: { arguments: e.text } }] });
    });
  return {
    open: (index) => [chatChunk(common, index, { role: 'assistant', content: '' })],
    delta: (index, { text }) => chunks(index, parsers[index]!.push(text)),
    finish: (index, reason) => {
      const rest = chunks(index, parsers[index]!.flush(reason));
      return [...rest, chatChunk(common, index, {}, { finishReason: called[index] && reason === 'stop' ? 'tool_calls' : reason })];
    },
    usage: (usage) => chatUsageChunk(common, usage),
  };
}

/** The role first, then content deltas, then an empty delta with the finish reason. */
function chatStreamFormat(common: { id: string; created: number; model: string }, texts: TokenTexts): StreamFormat {
  return {
    open: (index) => [chatChunk(common, index, { role: 'assistant', content: '' })],
    delta: (index, { text, logprobs }) =>
      text || logprobs?.length ? chatChunk(common, index, { content: text }, { logprobs: logprobs ? chatLogprobs(logprobs, texts) : null }) : undefined,
    finish: (index, reason) => chatChunk(common, index, {}, { finishReason: reason }),
    usage: (usage) => chatUsageChunk(common, usage),
  };
}
