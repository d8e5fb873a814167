/** POST /v1/chat/completions. */
import type { FastifyInstance } from 'fastify';
import { collectRun, GenerationRun } from '../generation-run.js';
import { type ChatBody, planChat } from '../requests.js';
import { chatChunk, chatCompletion, chatLogprobs, chatUsageChunk, completionId, nowSeconds } from '../responses.js';
import { chatCompletionBodySchema } from '../schemas.js';
import { type StreamFormat, streamRun } from '../streaming.js';
import type { TokenTexts } from '../token-text.js';

export async function chatRoutes(app: FastifyInstance): Promise<void> {
  app.post<{ Body: ChatBody }>('/v1/chat/completions', { schema: { body: chatCompletionBodySchema } }, async (request, reply) => {
    const ctx = app.specd;
    const plan = planChat(request.body, ctx);
    const run = new GenerationRun(ctx.engine, plan);
    run.cancelOnDisconnect(reply.raw);
    const common = { id: completionId('chatcmpl'), created: nowSeconds(), model: plan.model };
    if (plan.stream) {
      await streamRun(reply, run, chatStreamFormat(common, ctx.texts), 'messages');
      return reply;
    }
    const choices = await collectRun(run, 'messages');
    return chatCompletion(common, choices, run.usage.toJSON(), ctx.texts);
  });
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
