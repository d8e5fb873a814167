/**
 * Tool calling on chat completions: `tools`, `tool_choice`, `parallel_tool_calls`, assistant
 * messages with `tool_calls` and `tool` messages in the conversation, and the calls in the
 * model's output as `message.tool_calls` (streamed as argument deltas).
 *
 * The model writes calls in the Hermes format (grammar/tool-call-format.ts). `required` and a
 * named function are enforced by a grammar (the output is one or more calls and nothing else);
 * `auto` lets the model write text or calls, and the grammar only takes over inside a call, so
 * every call it starts has valid arguments; `none` generates text. A chat template that uses
 * `tools` gets them as the template variable `tools` and the messages as OpenAI sends them
 * (arguments parsed to objects); for other templates the conversation is rewritten in the
 * fallback format below.
 */
import { randomBytes } from 'node:crypto';
import { jsonValueEnd, TOOL_CALL_CLOSE, TOOL_CALL_OPEN, TOOL_CALL_SEPARATOR, toolCallHead, type ToolCallMode } from '../grammar/tool-call-format.js';
import type { ChatMessage } from '../text/tokenizer.js';
import { apiErrors } from './errors.js';
import { grammarSchema } from '../grammar/schema-check.js';
import { checkSchema, type RequestGrammar } from './response-format.js';

export interface FunctionTool {
  name: string;
  description?: string;
  /** JSON schema of the arguments object. */
  parameters: object | boolean;
}

export interface ToolPlan {
  tools: FunctionTool[];
  /** `none`: text only; otherwise outputs are parsed for calls. */
  mode: ToolCallMode | 'none';
  parallel: boolean;
  grammar?: RequestGrammar;
}

/** A call in a response (`message.tool_calls[i]`). */
export interface ToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

/** OpenAI's rule for function names. */
const FUNCTION_NAME = /^[a-zA-Z0-9_-]{1,64}$/;
/** Arguments schema of a function declared without one: no arguments, `{}` (OpenAI: omitting `parameters` defines an empty parameter list). */
const NO_ARGUMENTS = { type: 'object', properties: {}, additionalProperties: false };

/**
 * The tools of a request and how they may be called; undefined without tools.
 * @throws ApiError (400) naming the field at fault
 */
export function planTools(body: { tools?: unknown; tool_choice?: unknown; parallel_tool_calls?: unknown }): ToolPlan | undefined {
  const { tools, tool_choice: choice } = body;
  if (tools === undefined || tools === null || (Array.isArray(tools) && tools.length === 0)) {
    // OpenAI's reference accepts "none" and "auto" without tools (nothing to call either way).
    if (choice !== undefined && choice !== null && choice !== 'none' && choice !== 'auto') {
      throw apiErrors.invalidValue('tool_choice', "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.");
    }
    return undefined;
  }
  if (!Array.isArray(tools)) throw apiErrors.invalidType('tools', 'an array');
  const functions = tools.map(functionTool);
  const names = new Set<string>();
  functions.forEach((f, i) => {
    if (names.has(f.name)) throw apiErrors.invalidValue(`tools[${i}].function.name`, `Invalid 'tools': the function name '${f.name}' is declared twice.`);
    names.add(f.name);
  });
  const parallel = body.parallel_tool_calls !== false;
  let mode: ToolPlan['mode'];
  let called = functions;
  if (choice === undefined || choice === null || choice === 'auto') mode = 'auto';
  else if (choice === 'none' || choice === 'required') mode = choice;
  else if (typeof choice === 'object' && (choice as { type?: unknown }).type === 'function') {
    const name = (choice as { function?: { name?: unknown } }).function?.name;
    if (typeof name !== 'string') throw apiErrors.missing('tool_choice.function.name');
    const named = functions.find((f) => f.name === name);
    if (!named) throw apiErrors.invalidValue('tool_choice.function.name', `Invalid 'tool_choice': no function named '${name}' is in 'tools'.`);
    mode = 'named';
    called = [named];
  } else {
    throw apiErrors.invalidValue('tool_choice', `Invalid value for 'tool_choice': ${JSON.stringify(choice)}. Supported values are: 'none', 'auto', 'required' and {"type": "function", "function": {"name": ...}}.`);
  }
  const plan: ToolPlan = { tools: functions, mode, parallel };
  if (mode !== 'none') {
    plan.grammar = {
      spec: { type: 'tool_calls', functions: called.map((f) => ({ name: f.name, parameters: JSON.stringify(grammarSchema(f.parameters)) })), mode, parallel },
      param: 'tools',
    };
  }
  return plan;
}

function functionTool(tool: unknown, i: number): FunctionTool {
  const param = `tools[${i}]`;
  if (!tool || typeof tool !== 'object') throw apiErrors.invalidType(param, 'an object');
  const t = tool as { type?: unknown; function?: { name?: unknown; description?: unknown; parameters?: unknown } };
  if (t.type !== 'function') {
    throw t.type === undefined ? apiErrors.missing(`${param}.type`) : apiErrors.unsupported(`${param}.type`, `tools of type ${JSON.stringify(t.type)}; only 'function' tools are.`);
  }
  const f = t.function;
  if (!f || typeof f !== 'object') throw apiErrors.missing(`${param}.function`);
  if (typeof f.name !== 'string') throw apiErrors.missing(`${param}.function.name`);
  if (!FUNCTION_NAME.test(f.name)) throw apiErrors.invalidValue(`${param}.function.name`, `Invalid '${param}.function.name': it must be 1 to 64 letters, digits, underscores or dashes.`);
  const parameters = f.parameters === undefined || f.parameters === null ? NO_ARGUMENTS : checkSchema(f.parameters, `${param}.function.parameters`);
  return { name: f.name, ...(typeof f.description === 'string' ? { description: f.description } : {}), parameters };
}

// ---- The conversation ----------------------------------------------------------------------

/** An OpenAI chat message with the fields tool calling adds. */
export interface ToolAwareMessage {
  role: string;
  content: string;
  tool_calls?: { id?: string; type?: string; function: { name: string; arguments: string } }[];
  tool_call_id?: string;
  name?: string;
}

/**
 * The messages and template variables to render for a chat with tools.
 * @param templateUsesTools whether the chat template reads `tools` (then it gets them as they are)
 */
export function toolConversation(messages: ToolAwareMessage[], plan: ToolPlan | undefined, templateUsesTools: boolean): { messages: ChatMessage[]; templateVars?: Record<string, unknown> } {
  const usesTools = plan !== undefined || messages.some((m) => m.role === 'tool' || m.tool_calls?.length);
  if (!usesTools) return { messages };
  const openaiTools = plan?.tools.map((f) => ({ type: 'function', function: f }));
  if (templateUsesTools) {
    const rendered = messages.map((m) =>
      m.tool_calls?.length ? { ...m, tool_calls: m.tool_calls.map((c) => ({ ...c, function: { name: c.function.name, arguments: parseArguments(c.function.arguments) } })) } : m,
    );
    return { messages: rendered as ChatMessage[], templateVars: openaiTools ? { tools: openaiTools } : undefined };
  }
  return { messages: fallbackConversation(messages, plan) };
}

/**
 * The fallback format for templates without tool support: the tools are described in a system
 * message (the first one, or a new one in front), assistant calls are written as the model
 * writes them, and each `tool` message becomes a user turn holding
 * `<tool_response>\n{content}\n</tool_response>`.
 */
function fallbackConversation(messages: ToolAwareMessage[], plan: ToolPlan | undefined): ChatMessage[] {
  const out: ChatMessage[] = messages.map((m) => {
    if (m.role === 'tool') return { role: 'user', content: `<tool_response>\n${m.content}\n</tool_response>` };
    if (m.tool_calls?.length) {
      const calls = m.tool_calls.map((c) => `${toolCallHead(c.function.name)}${c.function.arguments}}\n${TOOL_CALL_CLOSE}`).join(TOOL_CALL_SEPARATOR);
      return { role: m.role, content: m.content ? `${m.content}\n${calls}` : calls };
    }
    return { role: m.role, content: m.content };
  });
  if (plan && plan.mode !== 'none') {
    const text = toolsSystemText(plan.tools);
    if (out[0]?.role === 'system') out[0] = { role: 'system', content: `${out[0].content}\n\n${text}` };
    else out.unshift({ role: 'system', content: text });
  }
  return out;
}

/** The system text describing the tools (fallback format). */
export function toolsSystemText(tools: readonly FunctionTool[]): string {
  return [
    'Functions you can call (JSON Schema):',
    '<tools>',
    ...tools.map((f) => JSON.stringify(f)),
    '</tools>',
    'Call one with:',
    `${TOOL_CALL_OPEN}\n{"name": <name>, "arguments": <JSON object>}\n${TOOL_CALL_CLOSE}`,
  ].join('\n');
}

function parseArguments(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

// ---- The output ----------------------------------------------------------------------------

export type ToolCallEvent =
  | { type: 'content'; text: string }
  /** A call begins: its index among the choice's calls, id and function name. */
  | { type: 'call'; index: number; id: string; name: string }
  /** More of the arguments of call `index`. */
  | { type: 'arguments'; index: number; text: string };

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
export class ToolCallParser {
  private buffer = '';
  private state: 'text' | 'head' | 'arguments' = 'text';
  private calls = 0;
  /** Whitespace held back from the end of the content so far. */
  private space = '';
  /** The arguments of the current call sent so far. */
  private args = '';

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
        events.push({ type: 'call', index: this.calls, id: toolCallId(), name: JSON.parse(m[1]!) as string });
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
        events.push({ type: 'call', index: this.calls, id: toolCallId(), name: call.name });
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

/** A whole choice's text as content and calls. */
export function parseToolCalls(text: string, finishReason?: string): ParsedToolCalls {
  const parser = new ToolCallParser();
  return assembleToolCalls([...parser.push(text), ...parser.flush(finishReason)]);
}

/** Content and calls of a whole output; `contentAfterCalls`: calls written before the content's first text (0 without content). */
export interface ParsedToolCalls {
  content: string | null;
  toolCalls: ToolCall[];
  contentAfterCalls: number;
}

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
function toolCallId(): string {
  return `call_${randomBytes(18).toString('base64url').slice(0, 24)}`;
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
