/**
 * Tool calls in a response: the model's output (in its format: Hermes, grammar/hermes-format.ts,
 * or Llama 3.1's JSON, grammar/llama3-json-format.ts) as `message.tool_calls`, each call with an
 * OpenAI-style id. Streamed, the routes push the text through `toolCallParser(format)`; whole,
 * `parseToolCalls` gives the same content and calls.
 */
import { randomBytes } from 'node:crypto';
import { HermesParser } from '../grammar/hermes-format.js';
import { Llama3JsonParser } from '../grammar/llama3-json-format.js';
import type { ToolCallEvent, ToolCallFormat, ToolCallParser } from '../grammar/tool-call-common.js';

/** A call in a response (`message.tool_calls[i]`). */
export interface ToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

/** A streamed parser of `format`'s calls, giving them OpenAI-style ids. */
export function toolCallParser(format: ToolCallFormat = 'hermes'): ToolCallParser {
  return format === 'llama3_json' ? new Llama3JsonParser(toolCallId) : new HermesParser(toolCallId);
}

/** A whole choice's text as content and calls. */
export function parseToolCalls(text: string, finishReason?: string, format: ToolCallFormat = 'hermes'): ParsedToolCalls {
  const parser = toolCallParser(format);
  return assembleToolCalls([...parser.push(text), ...parser.flush(finishReason)]);
}

/** Content and calls of a whole output; `contentAfterCalls`: calls written before the content's first text (0 without content). */
export interface ParsedToolCalls {
  content: string | null;
  toolCalls: ToolCall[];
  contentAfterCalls: number;
}

/** The content and calls a parser's events (all of them, flush included) add up to. */
export function assembleToolCalls(events: readonly ToolCallEvent[]): ParsedToolCalls {
  let content = '';
  const toolCalls: ToolCall[] = [];
  let contentAfterCalls = 0;
  for (const e of events) {
    if (e.type === 'content') {
      if (content.length === 0 && e.text.length > 0) contentAfterCalls = toolCalls.length;
      content += e.text;
    } else if (e.type === 'call') toolCalls[e.index] = { id: e.id, type: 'function', function: { name: e.name, arguments: '' } };
    else toolCalls[e.index]!.function.arguments += e.text;
  }
  return { content: content.length > 0 ? content : null, toolCalls, contentAfterCalls };
}

/** OpenAI-style call ids: `call_` and 24 random characters. */
export function toolCallId(): string {
  return `call_${randomBytes(18).toString('base64url').slice(0, 24)}`;
}
