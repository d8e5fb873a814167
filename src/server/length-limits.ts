/**
 * Output length against the context: `max_completion_tokens` / `max_tokens` /
 * `max_output_tokens` when given (refused when prompt + it exceed the context), else what the
 * context leaves (chat, responses) or 16 (text completions, OpenAI's default).
 */
import { apiErrors } from './errors.js';
import { MAX_TOKENS_WITHOUT_CONTEXT } from './model-facts.js';

/** OpenAI's default `max_tokens` for /v1/completions. */
export const COMPLETIONS_DEFAULT_MAX_TOKENS = 16;

export interface Length {
  /** The parameter holding the prompt (`messages`, `prompt` or `input`). */
  param: string;
  /** The parameter that set the output length. */
  maxParam: string;
  requested: number | undefined;
  /** Output length when none is requested (bounded by the context). */
  fallback: number;
}

/**
 * Most new tokens for each prompt.
 * @param promptLengths tokens per prompt
 * @param context the model's context, tokens (Infinity: unbounded, then MAX_TOKENS_WITHOUT_CONTEXT caps the fallback)
 * @throws ApiError 400 context_length_exceeded naming `length.param` when a prompt fills the context or prompt + requested exceeds it
 */
export function maxTokensFor(promptLengths: number[], length: Length, context: number): number[] {
  return promptLengths.map((n) => {
    if (n >= context) throw apiErrors.contextLength(length.param, context, n, undefined);
    if (length.requested !== undefined) {
      if (n + length.requested > context) throw apiErrors.contextLength(length.param, context, n, length.requested);
      return length.requested;
    }
    const room = Number.isFinite(context) ? context - n : MAX_TOKENS_WITHOUT_CONTEXT;
    return Math.min(length.fallback, room);
  });
}
