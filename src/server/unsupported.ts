/**
 * Request fields specd cannot honour, refused by name (a 400 `unsupported_parameter` whose
 * message says why) rather than ignored: each endpoint's table of
 * [field, whether a value asks for something specd cannot do, why].
 */
import { apiErrors } from './errors.js';

/** [field, whether a value asks for something specd cannot do, why]. */
export type Unsupported = [string, (v: unknown) => boolean, string];

/** Whether a field is present (null counts as absent, as in OpenAI's specification). */
export const given = (v: unknown) => v !== undefined && v !== null;

/**
 * vLLM's extra fields for constrained decoding (its `guided_*` fields and their successor
 * `structured_outputs`): refused, so that a client relying on one is told instead of getting
 * unconstrained output; `response_format` and `tools` are how specd constrains an output.
 */
export const VLLM_STRUCTURED_OUTPUTS: Unsupported[] = [
  'guided_json',
  'guided_regex',
  'guided_choice',
  'guided_grammar',
  'guided_decoding_backend',
  'guided_whitespace_pattern',
  'structured_outputs',
].map((field): Unsupported => [field, given, "vLLM's structured-output fields are not; use 'response_format' ({\"type\": \"json_schema\"}) or 'tools'."]);

const nonEmpty = (v: unknown) => (Array.isArray(v) ? v.length > 0 : given(v));

/**
 * vLLM's extra sampling fields that specd does not implement, refused when their value would
 * change the output (a neutral value, such as `min_p: 0` or `repetition_penalty: 1`, is
 * accepted): a client sending one would otherwise get output sampled without it, unaware.
 */
export const VLLM_SAMPLING_EXTRAS: Unsupported[] = [
  ['min_p', (v) => given(v) && v !== 0, "use 'top_p' or 'top_k'."],
  ['repetition_penalty', (v) => given(v) && v !== 1, "use 'presence_penalty' or 'frequency_penalty' (OpenAI's additive penalties)."],
  ['min_tokens', (v) => given(v) && v !== 0, "use 'ignore_eos' to generate 'max_tokens' tokens."],
  ['stop_token_ids', nonEmpty, "use 'stop' strings."],
  ['include_stop_str_in_output', (v) => v === true, 'the stop string is never part of the output.'],
  ['allowed_token_ids', nonEmpty, "use 'logit_bias' or 'response_format'."],
  ['bad_words', nonEmpty, "use 'logit_bias' with -100 for their tokens."],
  ['use_beam_search', (v) => v === true, 'specd samples or decodes greedily; it has no beam search.'],
  ['length_penalty', (v) => given(v) && v !== 1, 'it applies to beam search, which specd does not have.'],
  ['prompt_logprobs', (v) => given(v) && v !== 0, "specd returns the output's logprobs only."],
  ['truncate_prompt_tokens', given, 'prompts are never truncated; a prompt beyond the context is refused.'],
  ['logits_processors', nonEmpty, 'specd runs no client logits processors.'],
];

/** /v1/chat/completions. */
export const CHAT_UNSUPPORTED: Unsupported[] = [
  ...VLLM_STRUCTURED_OUTPUTS,
  ...VLLM_SAMPLING_EXTRAS,
  ['functions', (v) => (Array.isArray(v) ? v.length > 0 : given(v)), "the deprecated function calling fields are not; use 'tools'."],
  ['function_call', (v) => given(v) && v !== 'none' && v !== 'auto', "the deprecated function calling fields are not; use 'tool_choice'."],
  ['audio', given, 'specd generates text only.'],
  ['modalities', (v) => given(v) && !(Array.isArray(v) && v.every((m) => m === 'text')), 'specd generates text only.'],
  // Predicted outputs (OpenAI's) only speed a response up: the output is the model's with or
  // without one, so a well-formed prediction is accepted and changes nothing.
  ['prediction', (v) => given(v) && !isPrediction(v), 'a prediction is {"type": "content", "content": a string or text parts}.'],
  ['web_search_options', given, 'specd has no web search.'],
  ['reasoning_effort', (v) => given(v) && v !== 'none', 'the served model has no reasoning mode (only "none" applies).'],
  ['store', (v) => v === true, 'specd does not store completions.'],
];

/** /v1/completions. */
export const COMPLETION_UNSUPPORTED: Unsupported[] = [
  ...VLLM_STRUCTURED_OUTPUTS,
  ...VLLM_SAMPLING_EXTRAS,
  ['echo', (v) => v === true, 'the prompt is not echoed; prepend it yourself.'],
  ['suffix', (v) => given(v) && v !== '', 'specd has no fill-in-the-middle mode.'],
  ['best_of', (v) => given(v) && v !== 1, 'use n for several choices.'],
];

/** OpenAI's `prediction`: `{type: "content", content: string | [{type: "text", text: string}]}`. */
function isPrediction(v: unknown): boolean {
  const p = v as { type?: unknown; content?: unknown };
  if (typeof p !== 'object' || p === null || p.type !== 'content') return false;
  if (typeof p.content === 'string') return true;
  return Array.isArray(p.content) && p.content.every((c) => typeof c === 'object' && c !== null && (c as { type?: unknown }).type === 'text' && typeof (c as { text?: unknown }).text === 'string');
}

/** @throws ApiError 400 unsupported_parameter naming the first field of `table` that `body` uses */
export function checkUnsupported(body: Record<string, unknown>, table: Unsupported[]): void {
  for (const [field, used, why] of table) if (used(body[field])) throw apiErrors.unsupported(field, why);
}
