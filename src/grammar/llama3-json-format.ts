/**
 * Llama 3.1's JSON tool-call format (vLLM's `llama3_json` tool parser): the model answers with
 * one JSON object per call, optionally after the `<|python_tag|>` marker, calls separated by `;`:
 *
 *   {"name": "get_weather", "parameters": {"city": "Paris"}}
 *
 * Llama 3.1's chat template asks for `parameters`; `arguments` is accepted in its place, as vLLM
 * does. An output is read as calls only when it starts (after whitespace) with `{` or the marker
 * and every object in it is a call; otherwise it is content, whole.
 *
 * Constants for grammar-forced calls in this format (a structural tag per function, as
 * hermes-format.ts does for Hermes) are `llama3JsonCallHead`, `LLAMA3_JSON_CALL_TAIL` and
 * `LLAMA3_JSON_SEPARATOR`.
 */
import { jsonValueEnd, structuralTagFor, type ToolCallEvent, type ToolCallMode, type ToolGrammarFunction } from './tool-call-common.js';

/** The marker Llama 3.1 may write before a call (its chat template writes it for built-in tools). */
export const LLAMA3_PYTHON_TAG = '<|python_tag|>';
/** Between two calls (vLLM's parser splits on `;`). */
export const LLAMA3_JSON_SEPARATOR = '; ';

/** The text of a call up to its arguments. */
export function llama3JsonCallHead(name: string): string {
  return `{"name": ${JSON.stringify(name)}, "parameters": `;
}

/** The text after a call's arguments. */
export const LLAMA3_JSON_CALL_TAIL = '}';

/**
 * The structural tag (xgrammar's JSON format) for calls in this format.
 * @param parallel whether several calls may follow each other (`parallel_tool_calls`)
 */
export function llama3JsonStructuralTag(functions: readonly ToolGrammarFunction[], mode: ToolCallMode, parallel: boolean): object {
  return structuralTagFor({ head: llama3JsonCallHead, tail: LLAMA3_JSON_CALL_TAIL, separator: LLAMA3_JSON_SEPARATOR, trigger: '{"name": ' }, functions, mode, parallel);
}

/** A call read from the output: the function's name and its arguments as JSON text. */
export interface Llama3JsonCall {
  name: string;
  arguments: string;
}

/**
 * Reads a whole output in this format.
 * @returns the calls, or undefined when the output is content (not calls, or not all of it parses)
 */
export function parseLlama3JsonCalls(text: string): Llama3JsonCall[] | undefined {
  let rest = text.trimStart();
  if (rest.startsWith(LLAMA3_PYTHON_TAG)) rest = rest.slice(LLAMA3_PYTHON_TAG.length).trimStart();
  if (!rest.startsWith('{')) return undefined;
  const calls: Llama3JsonCall[] = [];
  while (rest.length > 0) {
    const end = jsonValueEnd(rest);
    if (end < 0) return undefined;
    let call: unknown;
    try {
      call = JSON.parse(rest.slice(0, end));
    } catch {
      return undefined;
    }
    const c = call as { name?: unknown; parameters?: unknown; arguments?: unknown };
    const args = c.parameters ?? c.arguments;
    if (typeof c.name !== 'string' || !args || typeof args !== 'object' || Array.isArray(args)) return undefined;
    calls.push({ name: c.name, arguments: JSON.stringify(args) });
    rest = rest.slice(end).trimStart();
    if (rest.startsWith(';')) rest = rest.slice(1).trimStart();
    else if (rest.length > 0) return undefined;
  }
  return calls;
}

/**
 * Whether an output that begins with `text` may still turn out to be calls in this format (it is
 * empty, whitespace, or starts with `{` or with the marker or a prefix of it).
 */
export function mayBeLlama3JsonCalls(text: string): boolean {
  const t = text.trimStart();
  return t.length === 0 || t.startsWith('{') || LLAMA3_PYTHON_TAG.startsWith(t) || t.startsWith(LLAMA3_PYTHON_TAG);
}

/** What the streamed output holds: the events every format's parser gives (tool-call-common.ts). */
export type Llama3JsonEvent = ToolCallEvent;

/**
 * Splits a streamed output in this format into content and calls. Content streams as it comes
 * once the output cannot be calls; an output that may be calls is held until its end and then
 * read whole (parseLlama3JsonCalls), so pushing the text in pieces or whole gives the same events.
 * Cut by `length`, an output that started as a call (the marker or `{"name"`) and does not parse
 * gives neither content nor calls: no partial markup reaches the content.
 */
export class Llama3JsonParser {
  private held = '';
  private content = false;
  private calls = 0;

  /** @param callId a fresh call id per call (OpenAI's `call_...`) */
  constructor(private readonly callId: () => string) {}

  push(text: string): Llama3JsonEvent[] {
    if (this.content) return text ? [{ type: 'content', text }] : [];
    this.held += text;
    if (mayBeLlama3JsonCalls(this.held)) return [];
    this.content = true;
    const out = this.held;
    this.held = '';
    return [{ type: 'content', text: out }];
  }

  /** @param finishReason why the output ended; `length`: it was cut */
  flush(finishReason?: string): Llama3JsonEvent[] {
    const held = this.held;
    this.held = '';
    if (this.content || held.length === 0) return [];
    const calls = parseLlama3JsonCalls(held);
    if (!calls) {
      const start = held.trimStart();
      const startedCall = start.startsWith(LLAMA3_PYTHON_TAG) || /^\{\s*"name"/.test(start) || LLAMA3_PYTHON_TAG.startsWith(start);
      return finishReason === 'length' && startedCall ? [] : [{ type: 'content', text: held }];
    }
    const events: Llama3JsonEvent[] = [];
    for (const call of calls) {
      const index = this.calls++;
      events.push({ type: 'call', index, id: this.callId(), name: call.name }, { type: 'arguments', index, text: call.arguments });
    }
    return events;
  }
}


/**
 * Whether a model writes tool calls in this format: its chat template asks for it (Llama 3.1's
 * writes `<|python_tag|>` and asks for `{"name": ..., "parameters": ...}`), or, for a template
 * that says nothing of tool calls, its vocabulary has the `<|python_tag|>` token (Llama 3.1 and
 * later). A template with Hermes' `<tool_call>` is not this format.
 * @param hasToken whether the tokenizer has a token of exactly this text
 */
export function usesLlama3Json(template: string | undefined, hasToken: (text: string) => boolean): boolean {
  if (template?.includes('<tool_call>')) return false;
  if (template !== undefined && (template.includes(LLAMA3_PYTHON_TAG) || /"name":\s*function name,\s*"parameters"/.test(template))) return true;
  return hasToken(LLAMA3_PYTHON_TAG);
}
