/**
 * POST /v1/responses (OpenAI's Responses API; see responses-api.ts), streamed or not, and
 * GET /v1/responses/:id, which finds nothing: responses are never stored.
 *
 * Streaming sends typed server-sent events (`event: TYPE` and `data: {type, sequence_number,
 * ...}`), in OpenAI's order: response.created, response.in_progress,
 * response.output_item.added, response.content_part.added, response.output_text.delta (one per
 * round with new text), response.output_text.done, response.content_part.done,
 * response.output_item.done, then response.completed (or response.incomplete when the output
 * reached max_output_tokens or the context). With tools, each call the output makes is a
 * `function_call` item after the message (the message only when there is text): its
 * response.output_item.added, response.function_call_arguments.delta (per round with more of
 * the arguments), response.function_call_arguments.done and response.output_item.done. As for chat, the headers wait for the engine to
 * take the request, so a refusal before that is an ordinary HTTP error; one after it is an
 * `error` event, which ends the stream.
 */
import type { FastifyInstance } from 'fastify';
import { ApiError, apiErrors } from '../errors.js';
import { abortedError, collectRun, GenerationRun, workerError } from '../generation-run.js';
import type { ApiFinishReason } from '../responses.js';
import {
  outputMessage,
  outputText,
  planResponse,
  reasoningItem,
  type ResponseEcho,
  responseIds,
  type ResponseLogprob,
  responseLogprobs,
  responseObject,
  type ResponsesBody,
  type ResponseState,
} from '../responses-api.js';
import { echoTools, functionCallItem, functionCallItemId } from '../responses-tools.js';
import { responsesBodySchema } from '../schemas.js';
import { parseToolCalls, type ToolCall, ToolCallParser } from '../tool-calls.js';
import { openEventStream } from '../streaming.js';
import { parseReasoning, ReasoningParser } from '../../text/reasoning-parser.js';

export async function responsesRoutes(app: FastifyInstance): Promise<void> {
  app.post<{ Body: ResponsesBody }>('/v1/responses', { schema: { body: responsesBodySchema } }, async (request, reply) => {
    const ctx = app.specd;
    const plan = planResponse(request.body, ctx);
    const run = new GenerationRun(ctx.engine, plan, request.arrivedAt);
    run.cancelOnDisconnect(reply.raw);
    const { id, itemId, reasoningId } = responseIds();
    const sampling = plan.requests[0]!.sampling;
    const echo: ResponseEcho = {
      id,
      itemId,
      createdAt: Math.floor(Date.now() / 1000),
      model: plan.model,
      body: { ...request.body, temperature: sampling.temperature, top_p: sampling.topP },
      tools: echoTools(plan.tools, { tools: request.body.tools }),
    };
    const parserName = ctx.reasoningParser;
    if (!plan.stream) {
      const [choice] = await collectRun(run, 'input');
      const status = finalStatus(choice!.finishReason);
      const split = parserName ? parseReasoning(parserName, choice!.text) : { reasoning: null, content: choice!.text };
      const reasoning = split.reasoning !== null ? { id: reasoningId, text: split.reasoning, status: 'completed' as const } : undefined;
      const logprobs = responseLogprobs(choice!.logprobs, ctx.texts);
      if (plan.tools) {
        const { content, toolCalls } = parseToolCalls(split.content, choice!.finishReason);
        // A cut (max_output_tokens) leaves only the last call incomplete.
        const calls = toolCalls.map((call, i) => ({ id: functionCallItemId(), call, status: i === toolCalls.length - 1 ? status : ('completed' as const) }));
        const message = content !== null || calls.length === 0 ? { text: content ?? '', logprobs: [], status } : undefined;
        return responseObject(echo, { status, usage: run.usage.toJSON(), calls, ...(message ? { message } : {}), ...(reasoning ? { reasoning } : {}) });
      }
      return responseObject(echo, { status, usage: run.usage.toJSON(), message: { text: split.content, logprobs, status }, ...(reasoning ? { reasoning } : {}) });
    }

    const res = reply.raw;
    let sequence = 0;
    const send = (type: string, data: object) => {
      if (!res.destroyed && !res.writableEnded) res.write(`event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: sequence++, ...data })}\n\n`);
    };
    // With a reasoning parser the reasoning item streams first (output_index 0), then the message.
    const parser = parserName ? new ReasoningParser(parserName) : undefined;
    let reasoning: { id: string; text: string; status: 'in_progress' | 'completed' } | undefined;
    const reasoningAt = { item_id: reasoningId, output_index: 0, content_index: 0 };
    const item = { item_id: itemId, output_index: 0, content_index: 0 };
    let text = '';
    const logprobs: ResponseLogprob[] = [];
    let opened = false;
    let messageOpened = false;
    // With tools: the output is read for calls; the message opens with its first text, each call is an item after it.
    const toolParser = plan.tools ? new ToolCallParser() : undefined;
    const calls: { id: string; call: ToolCall; status: 'in_progress' | 'completed' | 'incomplete' }[] = [];
    let nextIndex = 0;
    let failed = false;
    const reason = (delta: string) => {
      if (!delta) return;
      if (!reasoning) {
        reasoning = { id: reasoningId, text: '', status: 'in_progress' };
        send('response.output_item.added', { output_index: 0, item: reasoningItem(reasoning) });
        send('response.content_part.added', { ...reasoningAt, part: { type: 'reasoning_text', text: '' } });
      }
      reasoning.text += delta;
      send('response.reasoning_text.delta', { ...reasoningAt, delta });
    };
    const closeReasoning = () => {
      if (!reasoning || reasoning.status === 'completed') return;
      reasoning.status = 'completed';
      send('response.reasoning_text.done', { ...reasoningAt, text: reasoning.text });
      send('response.content_part.done', { ...reasoningAt, part: { type: 'reasoning_text', text: reasoning.text } });
      send('response.output_item.done', { output_index: 0, item: reasoningItem(reasoning) });
      nextIndex = Math.max(nextIndex, 1);
    };
    const openMessage = () => {
      if (messageOpened) return;
      messageOpened = true;
      closeReasoning();
      item.output_index = nextIndex++;
      send('response.output_item.added', { output_index: item.output_index, item: { ...outputMessage(echo, { text: '', logprobs: [], status: 'in_progress' }), content: [] } });
      send('response.content_part.added', { ...item, part: outputText('', []) });
    };
    const callIndex: number[] = [];
    const closeCall = (status: 'completed' | 'incomplete') => {
      const i = calls.length - 1;
      const last = calls[i];
      if (!last || last.status !== 'in_progress') return;
      last.status = status;
      send('response.function_call_arguments.done', { item_id: last.id, output_index: callIndex[i], arguments: last.call.function.arguments });
      send('response.output_item.done', { output_index: callIndex[i], item: functionCallItem(last.id, last.call, status) });
    };
    const toolEvents = (textDelta: string, finish?: string) => {
      const events = finish === undefined ? toolParser!.push(textDelta) : toolParser!.flush(finish);
      for (const e of events) {
        if (e.type === 'content') plainWrite(e.text, []);
        else if (e.type === 'call') {
          closeCall('completed');
          closeReasoning();
          const call: ToolCall = { id: e.id, type: 'function', function: { name: e.name, arguments: '' } };
          calls.push({ id: functionCallItemId(), call, status: 'in_progress' });
          callIndex.push(nextIndex++);
          send('response.output_item.added', { output_index: callIndex[calls.length - 1], item: functionCallItem(calls[calls.length - 1]!.id, call, 'in_progress') });
        } else {
          const last = calls[calls.length - 1]!;
          last.call.function.arguments += e.text;
          send('response.function_call_arguments.delta', { item_id: last.id, output_index: callIndex[calls.length - 1], delta: e.text });
        }
      }
    };
    const write = (delta: string, piece: ResponseLogprob[]) => {
      if (toolParser) toolEvents(delta);
      else plainWrite(delta, piece);
    };
    const plainWrite = (delta: string, piece: ResponseLogprob[]) => {
      if (!delta && !piece.length) return;
      openMessage();
      text += delta;
      logprobs.push(...piece);
      send('response.output_text.delta', { ...item, delta, logprobs: piece });
    };
    for await (const { message } of run) {
      if (message.type === 'start' || failed) continue;
      const aborted = message.type === 'done' && message.result.finish_reason === 'abort';
      if (message.type === 'error' || aborted) {
        run.cancel();
        const err: ApiError = message.type === 'error' ? workerError(message, 'input') : abortedError();
        if (!opened) throw err;
        send('error', { code: err.code, message: err.message, param: err.param });
        failed = true;
        continue;
      }
      if (!opened) {
        openEventStream(reply);
        opened = true;
        const state: ResponseState = { status: 'in_progress' };
        send('response.created', { response: responseObject(echo, state) });
        send('response.in_progress', { response: responseObject(echo, state) });
        if (!parser && !toolParser) openMessage();
      }
      if (message.type === 'tokens') {
        const piece = responseLogprobs(message.logprobs, ctx.texts);
        if (!parser) write(message.text, piece);
        else {
          const part = parser.push(message.text);
          reason(part.reasoning);
          write(part.content, part.reasoning && !part.content ? [] : piece);
        }
        continue;
      }
      if (parser) {
        const part = parser.flush();
        reason(part.reasoning);
        write(part.content, []);
      }
      const status = finalStatus(message.result.finish_reason as ApiFinishReason);
      if (toolParser) {
        toolEvents('', message.result.finish_reason);
        closeCall(status);
      }
      const withMessage = messageOpened || calls.length === 0;
      if (withMessage) {
        openMessage();
        send('response.output_text.done', { ...item, text, logprobs });
        send('response.content_part.done', { ...item, part: outputText(text, logprobs) });
        send('response.output_item.done', { output_index: item.output_index, item: outputMessage(echo, { text, logprobs, status }) });
      }
      const state: ResponseState = { status, usage: run.usage.toJSON(), calls, ...(withMessage ? { message: { text, logprobs, status } } : {}), ...(reasoning ? { reasoning } : {}) };
      send(`response.${status}`, { response: responseObject(echo, state) });
    }
    res.end();
    return reply;
  });

  app.get<{ Params: { id: string } }>('/v1/responses/:id', async (request) => {
    throw apiErrors.responseNotStored(request.params.id);
  });
}

/** `length` (max_output_tokens or the context) leaves a response incomplete. */
function finalStatus(reason: ApiFinishReason): 'completed' | 'incomplete' {
  return reason === 'length' ? 'incomplete' : 'completed';
}
