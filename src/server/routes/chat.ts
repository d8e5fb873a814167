/** POST /v1/chat/completions. */
import type { FastifyInstance } from 'fastify';
import { collectRun, GenerationRun } from '../generation-run.js';
import { plan as planRequest } from '../plan.js';
import type { ChatBody } from '../requests.js';
import { type ChoiceOutput, chatChunk, chatCompletion, chatLogprobs, chatUsageChunk, completionId, nowSeconds } from '../responses.js';
import { chatCompletionBodySchema } from '../schemas.js';
import { type OutputPiece, type StreamFormat, streamRun } from '../streaming.js';
import type { TokenTexts } from '../token-text.js';
import type { ToolCallEvent, ToolCallFormat } from '../../grammar/tool-call-common.js';
import { parseToolCalls, toolCallParser } from '../tool-output.js';
import { parseReasoning, ReasoningParser, type ReasoningDelta, type ReasoningParserName } from '../../text/reasoning-parser.js';

export async function chatRoutes(app: FastifyInstance): Promise<void> {
  app.post<{ Body: ChatBody }>('/v1/chat/completions', { schema: { body: chatCompletionBodySchema } }, async (request, reply) => {
    const ctx = app.specd;
    const plan = planRequest({ endpoint: 'chat.completions', body: request.body }, ctx);
    const run = new GenerationRun(ctx.engine, plan, request.arrivedAt);
    run.cancelOnDisconnect(reply.raw);
    const common = { id: completionId('chatcmpl'), created: nowSeconds(), model: plan.model };
    const reasoning = ctx.reasoningParser;
    if (plan.stream) {
      const format = plan.tools ? toolCallStreamFormat(common, plan.requests.length, plan.tools.format) : chatStreamFormat(common, ctx.texts);
      await streamRun(reply, run, reasoning ? withReasoningStream(format, common, reasoning, plan.requests.length) : format, 'messages');
      return reply;
    }
    let choices = await collectRun(run, 'messages');
    if (reasoning) choices = choices.map((choice) => withReasoning(choice, reasoning));
    const tools = plan.tools;
    return chatCompletion(common, tools ? choices.map((c) => withToolCalls(c, tools.format)) : choices, run.usage.toJSON(), ctx.texts);
  });
}

/** A choice's output split into reasoning and content (the content is then read for tool calls). */
function withReasoning(choice: ChoiceOutput, name: ReasoningParserName): ChoiceOutput {
  const { reasoning, content } = parseReasoning(name, choice.text);
  return { ...choice, text: content, reasoning };
}

/**
 * A stream format behind a reasoning parser: the reasoning goes out as `reasoning_content`
 * deltas (vLLM's field), the content on to `format` (plain or tool calls). Logprobs go with the
 * content's chunks (a round whose text is all reasoning sends none).
 */
function withReasoningStream(format: StreamFormat, common: { id: string; created: number; model: string }, name: ReasoningParserName, choices: number): StreamFormat {
  const parsers = Array.from({ length: choices }, () => new ReasoningParser(name));
  const split = (index: number, part: ReasoningDelta, piece: OutputPiece) => {
    const out: object[] = [];
    if (part.reasoning) out.push(chatChunk(common, index, { reasoning_content: part.reasoning }));
    if (part.content || (!part.reasoning && piece.logprobs?.length)) out.push(...asList(format.delta(index, { ...piece, text: part.content })));
    return out;
  };
  return {
    ...format,
    delta: (index, piece) => split(index, parsers[index]!.push(piece.text), piece),
    finish: (index, reason) => [...split(index, parsers[index]!.flush(), { text: '', textOffsets: [] }), ...asList(format.finish(index, reason))],
  };
}

function asList(chunks: object | object[] | undefined): object[] {
  return chunks === undefined ? [] : Array.isArray(chunks) ? chunks : [chunks];
}

/** A choice's output read for tool calls: content and calls; `tool_calls` finishes a choice that called. */
function withToolCalls(choice: ChoiceOutput, format: ToolCallFormat): ChoiceOutput {
  const { content, toolCalls } = parseToolCalls(choice.text, choice.finishReason, format);
  if (toolCalls.length === 0) return { ...choice, text: content ?? '' };
  return { ...choice, text: content ?? '', toolCalls, finishReason: choice.finishReason === 'stop' ? 'tool_calls' : choice.finishReason };
}

/**
 * Streaming with tools, as OpenAI streams calls: content deltas; per call a first chunk with its
 * index, id, type and name (and empty arguments), then chunks with more of its arguments.
 * Logprobs are not sent with tools.
 */
function toolCallStreamFormat(common: { id: string; created: number; model: string }, choices: number, toolFormat: ToolCallFormat): StreamFormat {
  const parsers = Array.from({ length: choices }, () => toolCallParser(toolFormat));
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
