/** The text layer: tokenizer and chat template, streaming detokenization, stop strings. */
export { ChatTemplateError, ModelLoadError } from './errors.js';
export { TextTokenizer, type ChatMessage, type ChatOptions, type DecodeOptions } from './tokenizer.js';
export { IncrementalDetokenizer, type DetokenizerOptions } from './detokenizer.js';
export { StopStringMatcher, type StopPushResult } from './stop-strings.js';
