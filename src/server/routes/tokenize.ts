/**
 * POST /tokenize and POST /detokenize, in vLLM's shapes, with the tokenizer the server uses:
 *
 *   /tokenize   {prompt}                    text as /v1/completions tokenizes it
 *               {messages, add_generation_prompt}   a chat as /v1/chat/completions renders it
 *               -> {count, max_model_len, tokens, token_strs}
 *   /detokenize {tokens} -> {prompt}
 *
 * `return_token_strs` adds each token's text (as logprobs show it: `bytes:\x..` for part of a
 * character). `add_special_tokens` is accepted: specd adds no BOS/EOS to plain text, in
 * /v1/completions either, so the count is the one generation will use.
 */
import type { FastifyInstance } from 'fastify';
import { ChatTemplateError } from '../../text/errors.js';
import { apiErrors } from '../errors.js';
import { promptCharLimit } from '../model-facts.js';
import { chatMessages } from '../chat-messages.js';
import type { MessageBody } from '../requests.js';
import { detokenizeBodySchema, tokenizeBodySchema } from '../schemas.js';

interface TokenizeBody {
  model?: string | null;
  prompt?: string;
  messages?: MessageBody[];
  add_generation_prompt?: boolean | null;
  add_special_tokens?: boolean | null;
  return_token_strs?: boolean | null;
}

export async function tokenizeRoutes(app: FastifyInstance): Promise<void> {
  app.post<{ Body: TokenizeBody }>('/tokenize', { schema: { body: tokenizeBodySchema } }, async (request) => {
    const { facts, texts } = app.specd;
    const body = request.body;
    if (body.model && body.model !== facts.name) throw apiErrors.modelNotFound(body.model);
    // Tokenizing runs on the main thread: text far too long for the context is refused before it, as on the generation routes.
    const chars = typeof body.prompt === 'string' ? body.prompt.length : (body.messages ?? []).reduce((n, m) => n + JSON.stringify(m.content ?? '').length, 0);
    if (chars > promptCharLimit(facts)) throw apiErrors.promptTooLong(body.messages !== undefined ? 'messages' : 'prompt', facts.contextLength);
    let tokens: number[];
    if (body.messages !== undefined) {
      if (!facts.tokenizer.hasChatTemplate) throw apiErrors.invalidValue('messages', 'The model has no chat template; tokenize a prompt instead.', 'no_chat_template');
      try {
        tokens = facts.tokenizer.encodeChat(chatMessages(body.messages), { addGenerationPrompt: body.add_generation_prompt ?? true });
      } catch (err) {
        if (err instanceof ChatTemplateError) throw apiErrors.invalidValue('messages', `Invalid 'messages': ${err.message}.`);
        throw err;
      }
    } else if (typeof body.prompt === 'string') {
      tokens = facts.tokenizer.encode(body.prompt);
    } else {
      throw apiErrors.missing('prompt');
    }
    return {
      count: tokens.length,
      max_model_len: Number.isFinite(facts.contextLength) ? facts.contextLength : null,
      tokens,
      token_strs: body.return_token_strs ? tokens.map((id) => texts.of(id).token) : null,
    };
  });

  app.post<{ Body: { model?: string | null; tokens: number[] } }>('/detokenize', { schema: { body: detokenizeBodySchema } }, async (request) => {
    const { facts } = app.specd;
    const { model, tokens } = request.body;
    if (model && model !== facts.name) throw apiErrors.modelNotFound(model);
    const bad = tokens.findIndex((id) => id < 0 || id >= facts.vocabSize);
    if (bad !== -1) throw apiErrors.invalidValue(`tokens[${bad}]`, `Invalid 'tokens[${bad}]': token id ${tokens[bad]} is outside the vocabulary (${facts.vocabSize} tokens).`);
    return { prompt: facts.tokenizer.decode(tokens) };
  });
}
