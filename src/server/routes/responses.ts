/**
 * POST /v1/responses (OpenAI's Responses API; see responses-api.ts), streamed or not, and
 * GET and DELETE /v1/responses/:id on the stored responses (response-store.ts). A response is
 * stored when it ends (completed or incomplete) unless the request says `store: false`; a
 * `previous_response_id` puts the stored conversation before the request's `input`.
 *
 * Streaming sends typed server-sent events (`event: TYPE` and `data: {type, sequence_number,
 * ...}`), in OpenAI's order: response.created, response.in_progress,
 * response.output_item.added, response.content_part.added, response.output_text.delta (one per
 * round with new text), response.output_text.done, response.content_part.done,
 * response.output_item.done, then response.completed (or response.incomplete when the output
 * reached max_output_tokens or the context). With tools, each call the output makes is a
 * `function_call` item (the message only when there is text; items in the order the model
 * wrote them, in the events and in the final object: responses-stream.ts): its
 * response.output_item.added, response.function_call_arguments.delta (per round with more of
 * the arguments), response.function_call_arguments.done and response.output_item.done. As for chat, the headers wait for the engine to
 * take the request, so a refusal before that is an ordinary HTTP error; one after it is an
 * `error` event, which ends the stream.
 */
import type { FastifyInstance } from 'fastify';
import type { ApiError } from '../errors.js';
import { abortedError, collectRun, GenerationRun, workerError } from '../generation-run.js';
import type { ApiFinishReason } from '../responses.js';
import { planResponse, type ResponseEcho, responseIds, responseLogprobs, type ResponsesBody } from '../responses-api.js';
import { ResponseEventStream, responseFromText } from '../responses-stream.js';
import { echoTools } from '../responses-tools.js';
import { responseNotFound, type StorableResponse } from '../response-store.js';
import { responsesBodySchema } from '../schemas.js';
import { openEventStream } from '../streaming.js';

export async function responsesRoutes(app: FastifyInstance): Promise<void> {
  app.post<{ Body: ResponsesBody }>('/v1/responses', { schema: { body: responsesBodySchema } }, async (request, reply) => {
    const ctx = app.specd;
    const store = ctx.responseStore;
    // The request as planned: with a previous response, its conversation first.
    const body = store.continued(request.body);
    const plan = planResponse(body, ctx);
    const keep = (response: StorableResponse) => {
      if (request.body.store !== false) store.put(body, response);
      return response;
    };
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
    const reading = { ...(ctx.reasoningParser ? { reasoningParser: ctx.reasoningParser } : {}), tools: plan.tools !== undefined, ...(plan.tools ? { toolFormat: plan.tools.format } : {}) };
    if (!plan.stream) {
      const [choice] = await collectRun(run, 'input');
      return keep(responseFromText(echo, reasoningId, reading, choice!.text, choice!.finishReason, run.usage.toJSON(), responseLogprobs(choice!.logprobs, ctx.texts)));
    }

    const res = reply.raw;
    let sequence = 0;
    const send = (type: string, data: object) => {
      if (!res.destroyed && !res.writableEnded) res.write(`event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: sequence++, ...data })}\n\n`);
    };
    const events = new ResponseEventStream(echo, reasoningId, reading, send);
    let opened = false;
    let failed = false;
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
        events.start();
      }
      if (message.type === 'tokens') events.tokens(message.text, responseLogprobs(message.logprobs, ctx.texts));
      else keep(events.finish(message.result.finish_reason as ApiFinishReason, run.usage.toJSON()));
    }
    res.end();
    return reply;
  });

  app.get<{ Params: { id: string } }>('/v1/responses/:id', async (request) => {
    const { responseStore } = app.specd;
    const response = responseStore.get(request.params.id);
    if (!response) throw responseNotFound(request.params.id, null, responseStore.options);
    return response;
  });

  // OpenAI's answer to a deletion: the id, the object type and `deleted: true`.
  app.delete<{ Params: { id: string } }>('/v1/responses/:id', async (request) => {
    const { responseStore } = app.specd;
    const { id } = request.params;
    if (!responseStore.delete(id)) throw responseNotFound(id, null, responseStore.options);
    return { id, object: 'response', deleted: true };
  });
}
