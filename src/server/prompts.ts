/**
 * Prompt rendering on the main thread: a chat through the model's chat template, or
 * /v1/completions' `prompt` (strings tokenized without special tokens, or token ids), as token
 * ids. Text far too long to fit the context is refused before it is tokenized
 * (model-facts.ts promptCharLimit).
 */
import { ChatTemplateError } from '../text/errors.js';
import type { ChatMessage } from '../text/tokenizer.js';
import { apiErrors } from './errors.js';
import { promptCharLimit } from './model-facts.js';
import type { PlanFacts } from './plan-context.js';
import type { CompletionBody } from './requests.js';

/**
 * A chat rendered with the chat template and tokenized.
 * @param param the request parameter holding the chat (`messages`, `input`), for errors
 * @param templateVars variables the template reads besides the messages (tool definitions); they count towards the length
 * @returns the prompt's token ids
 * @throws ApiError 400 naming `param`: no chat template, text beyond the context, a template error
 */
export function renderChat(messages: ChatMessage[], facts: PlanFacts, param: string, templateVars?: Record<string, unknown>): number[] {
  const { tokenizer } = facts;
  if (!tokenizer.hasChatTemplate) {
    throw apiErrors.invalidValue(param, 'The model has no chat template; use /v1/completions with a prompt instead.', 'no_chat_template');
  }
  const chars = messages.reduce((n, m) => n + m.content.length, 0) + (templateVars ? JSON.stringify(templateVars).length : 0);
  if (chars > promptCharLimit(facts)) throw apiErrors.promptTooLong(param, facts.contextLength);
  try {
    return tokenizer.encodeChat(messages, templateVars ? { templateVars } : {});
  } catch (err) {
    if (err instanceof ChatTemplateError) throw apiErrors.invalidValue(param, `Invalid '${param}': ${err.message}.`);
    throw err;
  }
}

/** How many prompts /v1/completions' `prompt` holds (a string or one id list: 1), counted before anything is tokenized. */
export function completionPromptCount(prompt: CompletionBody['prompt']): number {
  return typeof prompt === 'string' || typeof prompt[0] === 'number' ? 1 : prompt.length;
}

/**
 * /v1/completions' `prompt` as token id lists.
 * @throws ApiError 400 naming `prompt` or `prompt[i]`: empty, too long, a token id outside the vocabulary
 */
export function completionPrompts(prompt: CompletionBody['prompt'], facts: PlanFacts): number[][] {
  const list: (string | number[])[] = typeof prompt === 'string' ? [prompt] : typeof prompt[0] === 'number' ? [prompt as number[]] : (prompt as (string | number[])[]);
  return list.map((p, i) => {
    const param = list.length > 1 ? `prompt[${i}]` : 'prompt';
    if (typeof p === 'string' && p.length > promptCharLimit(facts)) throw apiErrors.promptTooLong(param, facts.contextLength);
    const ids = typeof p === 'string' ? facts.tokenizer.encode(p) : p;
    if (ids.length === 0) throw apiErrors.invalidValue(param, `Invalid '${param}': the prompt is empty.`);
    const bad = ids.find((id) => id < 0 || id >= facts.vocabSize);
    if (bad !== undefined) throw apiErrors.invalidValue(param, `Invalid '${param}': token id ${bad} is outside the vocabulary (${facts.vocabSize} tokens).`);
    return ids;
  });
}
