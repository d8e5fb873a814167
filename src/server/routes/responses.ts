/**
 * POST /v1/responses (OpenAI's Responses API; see responses-api.ts), streamed or not, and
 * GET /v1/responses/:id, which finds nothing: responses are never stored.
 *
 * Streaming sends typed server-sent events (`event: TYPE` and `data: {type, sequence_number,
 * ...}`), in OpenAI's order: response.created, response.in_progress,
 * response.output_item.added, response.content_part.added, response.output_text.delta (one per
 * round with new text), response.output_text.done, response.content_part.done,
 * response.output_item.done, then response.completed (or response.incomplete when the output
 * reached max_output_tokens or the context). As for chat, the headers wait for the engine to
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
import { responsesBodySchema } from '../schemas.js';
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
    };
    const parserName = ctx.reasoningParser;
    if (!plan.stream) {
      const [choice] = await collectRun(run, 'input');
      const status = finalStatus(choice!.finishReason);
      const split = parserName ? parseReasoning(parserName, choice!.text) : { reasoning: null, content: choice!.text };
      const reasoning = split.reasoning !== null ? { id: reasoningId, text: split.reasoning, status: 'completed' as const } : undefined;
      return responseObject(echo, { status, usage: run.usage.toJSON(), message: { text: split.content, logprobs: responseLogprobs(choice!.logprobs, ctx.texts), status }, ...(reasoning ? { reasoning } : {}) });
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
    const openMessage = () => {
      if (messageOpened) return;
      messageOpened = true;
      if (reasoning) {
        reasoning.status = 'completed';
        send('response.reasoning_text.done', { ...reasoningAt, text: reasoning.text });
        send('response.content_part.done', { ...reasoningAt, part: { type: 'reasoning_text', text: reasoning.text } });
        send('response.output_item.done', { output_index: 0, item: reasoningItem(reasoning) });
        item.output_index = 1;
      }
      send('response.output_item.added', { output_index: item.output_index, item: { ...outputMessage(echo, { text: '', logprobs: [], status: 'in_progress' }), content: [] } });
      send('response.content_part.added', { ...item, part: outputText('', []) });
    };
    const write = (delta: string, piece: ResponseLogprob[]) => {
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
        if (!parser) openMessage();
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
      openMessage();
      const status = finalStatus(message.result.finish_reason as ApiFinishReason);
      send('response.output_text.done', { ...item, text, logprobs });
      send('response.content_part.done', { ...item, part: outputText(text, logprobs) });
      send('response.output_item.done', { output_index: item.output_index, item: outputMessage(echo, { text, logprobs, status }) });
      send(`response.${status}`, { response: responseObject(echo, { status, usage: run.usage.toJSON(), message: { text, logprobs, status }, ...(reasoning ? { reasoning } : {}) }) });
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
