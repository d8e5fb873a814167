/** POST /v1/completions. */
import type { FastifyInstance } from 'fastify';
import { collectRun, GenerationRun } from '../generation-run.js';
import { plan as planRequest } from '../plan.js';
import type { CompletionBody } from '../requests.js';
import { completionId, completionLogprobs, nowSeconds, textChunk, textCompletion, textUsageChunk } from '../responses.js';
import { completionBodySchema } from '../schemas.js';
import { type StreamFormat, streamRun } from '../streaming.js';
import type { TokenTexts } from '../token-text.js';

export async function completionRoutes(app: FastifyInstance): Promise<void> {
  app.post<{ Body: CompletionBody }>('/v1/completions', { schema: { body: completionBodySchema } }, async (request, reply) => {
    const ctx = app.specd;
    const plan = planRequest({ endpoint: 'completions', body: request.body }, ctx);
    const run = new GenerationRun(ctx.engine, plan, request.arrivedAt);
    run.cancelOnDisconnect(reply.raw);
    const common = { id: completionId('cmpl'), created: nowSeconds(), model: plan.model };
    if (plan.stream) {
      await streamRun(reply, run, textStreamFormat(common, ctx.texts), 'prompt');
      return reply;
    }
    const choices = await collectRun(run, 'prompt');
    return textCompletion(common, choices, run.usage.toJSON(), ctx.texts);
  });
}

/** Text deltas (logprobs' text offsets are offsets in the whole choice's text), then an empty text with the finish reason. */
function textStreamFormat(common: { id: string; created: number; model: string }, texts: TokenTexts): StreamFormat {
  return {
    open: () => [],
    delta: (index, { text, logprobs, textOffsets }) => {
      if (!text && !logprobs?.length) return undefined;
      return textChunk(common, index, text, { logprobs: logprobs ? completionLogprobs(logprobs, textOffsets, texts) : null });
    },
    finish: (index, reason) => textChunk(common, index, '', { finishReason: reason }),
    usage: (usage) => textUsageChunk(common, usage),
  };
}
