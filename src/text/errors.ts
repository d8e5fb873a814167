/** Errors raised by the text layer. */
export { ModelLoadError } from '../errors.js';

/**
 * A chat cannot be rendered or tokenized: no chat template, the template raised an error
 * (e.g. via `raise_exception`), or the template rewrites message contents in a way that
 * would let content text become special tokens.
 */
export class ChatTemplateError extends Error {
  override name = 'ChatTemplateError';
}
