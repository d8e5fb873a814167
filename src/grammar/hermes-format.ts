/**
 * The Hermes tool-call format, the one Qwen2.5/Qwen3 chat templates use and the one specd's
 * output is written and read in: one JSON object per call between tags, arguments last:
 *
 *   <tool_call>
 *   {"name": "get_weather", "arguments": {"city": "Paris"}}
 *   </tool_call>
 *
 * Several calls follow each other separated by a newline. This module holds the format whole:
 * its constants, the grammar that enforces it and the parser that reads it. The grammar is an
 * xgrammar structural tag (https://xgrammar.mlc.ai/docs/tutorials/structural_tag.html): each
 * function is a tag whose begin is the call up to its arguments, whose content is the
 * arguments' JSON schema and whose end closes the object and the tag.
 */
import { jsonValueEnd, structuralTagFor, type ToolCallEvent, type ToolCallMode, type ToolGrammarFunction } from './tool-call-common.js';

export const TOOL_CALL_OPEN = '<tool_call>';
export const TOOL_CALL_CLOSE = '</tool_call>';
/** Between two calls. */
export const TOOL_CALL_SEPARATOR = '\n';

/** The text of a call up to its arguments. */
export function toolCallHead(name: string): string {
  return `${TOOL_CALL_OPEN}\n{"name": ${JSON.stringify(name)}, "arguments": `;
}

/** The text after a call's arguments. */
export const TOOL_CALL_TAIL = `}\n${TOOL_CALL_CLOSE}`;

/**
 * The structural tag (xgrammar's JSON format) for tool calls.
 * @param parallel whether several calls may follow each other (`parallel_tool_calls`)
 */
export function toolCallsStructuralTag(functions: readonly ToolGrammarFunction[], mode: ToolCallMode, parallel: boolean): object {
  return structuralTagFor({ head: toolCallHead, tail: TOOL_CALL_TAIL, separator: TOOL_CALL_SEPARATOR, trigger: TOOL_CALL_OPEN }, functions, mode, parallel);
}

/** The head of a call up to its arguments, as the grammar writes it (whitespace tolerated). */
const CALL_HEAD = /^\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*(?=\S)/;

/**
 * Splits a choice's text, as it streams, into content and tool calls. Text that may be the
 * start of a call tag, and the closing brace and tag after arguments, are held back until the
 * text after them decides; whitespace before a call is dropped, as is whitespace at the end of
 * an output that called. Pushing the text in pieces or whole gives the same events (streamed
 * and non-streamed answers are equal).
 *
 * Cut by `length` (`flush('length')`), no markup reaches the content: a partial `<tool_call>`
 * tag or a call cut before its arguments began is dropped, and a call's arguments are what was
 * generated of them, up to the end of the arguments' JSON value when it was complete: a prefix
 * of the arguments the complete call would have had.
 */
export class HermesParser {
  private buffer = '';
  private state: 'text' | 'head' | 'arguments' = 'text';
  private calls = 0;
  /** Whitespace held back from the end of the content so far. */
  private space = '';
  /** The arguments of the current call sent so far. */
  private args = '';

  /** @param callId a fresh call id per call (OpenAI's `call_...`) */
  constructor(private readonly callId: () => string) {}

  push(text: string): ToolCallEvent[] {
    this.buffer += text;
    const events: ToolCallEvent[] = [];
    for (;;) {
      if (this.state === 'text') {
        const at = this.buffer.indexOf(TOOL_CALL_OPEN);
        if (at < 0) {
          const keep = partialSuffix(this.buffer, TOOL_CALL_OPEN);
          this.content(this.buffer.slice(0, this.buffer.length - keep), events);
          this.buffer = this.buffer.slice(this.buffer.length - keep);
          return events;
        }
        this.content(this.buffer.slice(0, at), events);
        this.space = '';
        this.buffer = this.buffer.slice(at + TOOL_CALL_OPEN.length);
        this.state = 'head';
      } else if (this.state === 'head') {
        const m = CALL_HEAD.exec(this.buffer);
        if (!m) {
          const close = this.buffer.indexOf(TOOL_CALL_CLOSE);
          if (close < 0) return events;
          // Not a call in the expected shape: try it as a JSON object, else keep it as text.
          this.malformed(this.buffer.slice(0, close), events);
          this.buffer = this.buffer.slice(close + TOOL_CALL_CLOSE.length);
          this.state = 'text';
          continue;
        }
        events.push({ type: 'call', index: this.calls, id: this.callId(), name: JSON.parse(m[1]!) as string });
        this.buffer = this.buffer.slice(m[0].length);
        this.args = '';
        this.state = 'arguments';
      } else {
        const close = this.buffer.indexOf(TOOL_CALL_CLOSE);
        if (close < 0) {
          const keep = argumentsTail(this.buffer);
          if (keep < this.buffer.length) this.arguments(this.buffer.slice(0, this.buffer.length - keep), events);
          this.buffer = this.buffer.slice(this.buffer.length - keep);
          return events;
        }
        const rest = this.buffer.slice(0, close).replace(/\s*\}\s*$/, '');
        if (rest) this.arguments(rest, events);
        this.calls++;
        this.buffer = this.buffer.slice(close + TOOL_CALL_CLOSE.length);
        this.state = 'text';
      }
    }
  }

  /**
   * The end of the text: what was held back.
   * @param finishReason why the output ended; `length`: it was cut, and partial markup is dropped
   */
  flush(finishReason?: string): ToolCallEvent[] {
    const events: ToolCallEvent[] = [];
    const cut = finishReason === 'length';
    if (this.state === 'text') {
      if (!cut || partialSuffix(this.buffer, TOOL_CALL_OPEN) < this.buffer.length) this.content(this.buffer, events);
      // Whitespace at the end stays when the output made no call.
      if (this.calls === 0 && this.space) events.push({ type: 'content', text: this.space });
    } else if (this.state === 'arguments') {
      const all = this.args + this.buffer;
      const end = jsonValueEnd(all);
      const args = cut && end > 0 ? all.slice(0, end) : all;
      if (args.length > this.args.length) this.arguments(args.slice(this.args.length), events);
    } else if (!cut) this.content(TOOL_CALL_OPEN + this.buffer, events);
    this.buffer = '';
    this.space = '';
    return events;
  }

  private arguments(text: string, events: ToolCallEvent[]): void {
    this.args += text;
    events.push({ type: 'arguments', index: this.calls, text });
  }

  /** Content, with whitespace at its end held until more content follows (none is sent before a call or at the end). */
  private content(text: string, events: ToolCallEvent[]): void {
    const body = text.trimEnd();
    if (body) {
      events.push({ type: 'content', text: this.space + body });
      this.space = '';
    }
    this.space += text.slice(body.length);
  }

  private malformed(body: string, events: ToolCallEvent[]): void {
    try {
      const call = JSON.parse(body) as { name?: unknown; arguments?: unknown };
      if (typeof call.name === 'string' && call.arguments !== undefined) {
        events.push({ type: 'call', index: this.calls, id: this.callId(), name: call.name });
        events.push({ type: 'arguments', index: this.calls, text: typeof call.arguments === 'string' ? call.arguments : JSON.stringify(call.arguments) });
        this.calls++;
        return;
      }
    } catch {
      // not JSON: text
    }
    this.content(`${TOOL_CALL_OPEN}${body}${TOOL_CALL_CLOSE}`, events);
  }
}

/** Length of the longest suffix of `text` that is a proper prefix of `tag`. */
function partialSuffix(text: string, tag: string): number {
  for (let n = Math.min(tag.length - 1, text.length); n > 0; n--) if (tag.startsWith(text.slice(text.length - n))) return n;
  return 0;
}

/** Length of the suffix of argument text that may be the call's closing `}`, whitespace and the start of the close tag. */
function argumentsTail(text: string): number {
  const i = text.lastIndexOf('}'); // only the last brace can close the call
  if (i < 0) return 0;
  const after = text.slice(i + 1).replace(/^\s*/, '');
  return TOOL_CALL_CLOSE.startsWith(after) ? text.length - i : 0;
}
