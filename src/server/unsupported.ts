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

/** /v1/chat/completions. */
export const CHAT_UNSUPPORTED: Unsupported[] = [
  ...VLLM_STRUCTURED_OUTPUTS,
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
