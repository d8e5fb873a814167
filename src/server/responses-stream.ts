/**
 * The Responses API's streamed events for one output (routes/responses.ts sends them): the
 * output's text arrives in pieces (one per round) and ends with a finish reason; this turns it
 * into OpenAI's typed events and the final response object.
 *
 * Items get their `output_index` in the order they open, and the final object lists them in
 * that same order: a reasoning item first (with a reasoning parser), then the message and the
 * `function_call` items as the model wrote them. The message opens with its first text, so text
 * written after a call (`tool_choice: auto`) puts the message after that call, in the events and
 * in the object alike (`ResponseState.messageAfterCalls`).
 */
import { parseReasoning, type ReasoningParserName, ReasoningParser } from '../text/reasoning-parser.js';
import type { ApiFinishReason, Usage } from './responses.js';
import { outputMessage, outputText, reasoningItem, type ResponseEcho, type ResponseLogprob, responseObject, type ResponseState } from './responses-api.js';
import { functionCallItem, functionCallItemId } from './responses-tools.js';
import type { ToolCallFormat, ToolCallParser } from '../grammar/tool-call-common.js';
import { parseToolCalls, type ToolCall, toolCallParser } from './tool-output.js';

/** Sends one event: its type and its fields (the caller adds `type` and `sequence_number`). */
export type SendEvent = (type: string, data: object) => void;

/** `length` (max_output_tokens or the context) leaves a response incomplete. */
export function finalStatus(reason: ApiFinishReason): 'completed' | 'incomplete' {
  return reason === 'length' ? 'incomplete' : 'completed';
}

/** How an output is read: for reasoning (a reasoning parser), for tool calls, or neither. */
export interface OutputReading {
  reasoningParser?: ReasoningParserName;
  tools: boolean;
  /** The format the calls are written in (default Hermes). */
  toolFormat?: ToolCallFormat;
}

/**
 * The response object of a whole output (not streamed), with the items in the order the
 * streamed events give them.
 * @param logprobs the text's logprobs (left out with tools, as the streamed message's are)
 */
export function responseFromText(echo: ResponseEcho, reasoningId: string, reading: OutputReading, text: string, finishReason: ApiFinishReason, usage: Usage, logprobs: ResponseLogprob[]) {
  const status = finalStatus(finishReason);
  const split = reading.reasoningParser ? parseReasoning(reading.reasoningParser, text) : { reasoning: null, content: text };
  const reasoning = split.reasoning !== null ? { id: reasoningId, text: split.reasoning, status: 'completed' as const } : undefined;
  if (reading.tools) {
    const { content, toolCalls, contentAfterCalls } = parseToolCalls(split.content, finishReason, reading.toolFormat);
    // A cut (max_output_tokens) leaves only the last call incomplete.
    const calls = toolCalls.map((call, i) => ({ id: functionCallItemId(), call, status: i === toolCalls.length - 1 ? status : ('completed' as const) }));
    const message = content !== null || calls.length === 0 ? { text: content ?? '', logprobs: [], status } : undefined;
    return responseObject(echo, { status, usage, calls, ...(message ? { message, messageAfterCalls: contentAfterCalls } : {}), ...(reasoning ? { reasoning } : {}) });
  }
  return responseObject(echo, { status, usage, message: { text: split.content, logprobs, status }, ...(reasoning ? { reasoning } : {}) });
}

export class ResponseEventStream {
  private readonly parser: ReasoningParser | undefined;
  private readonly toolParser: ToolCallParser | undefined;
  private reasoning: { id: string; text: string; status: 'in_progress' | 'completed' } | undefined;
  private readonly reasoningAt: { item_id: string; output_index: number; content_index: number };
  private readonly item: { item_id: string; output_index: number; content_index: number };
  private text = '';
  private readonly logprobs: ResponseLogprob[] = [];
  private messageOpened = false;
  /** Calls opened before the message (its place among them). */
  private messageAfterCalls = 0;
  private readonly calls: { id: string; call: ToolCall; status: 'in_progress' | 'completed' | 'incomplete' }[] = [];
  private readonly callIndex: number[] = [];
  private nextIndex = 0;

  /**
   * @param options.reasoningParser splits reasoning from the content (a reasoning item first)
   * @param options.tools read the content for tool calls (each a `function_call` item)
   */
  constructor(
    private readonly echo: ResponseEcho,
    private readonly reasoningId: string,
    options: OutputReading,
    private readonly send: SendEvent,
  ) {
    this.parser = options.reasoningParser ? new ReasoningParser(options.reasoningParser) : undefined;
    this.toolParser = options.tools ? toolCallParser(options.toolFormat) : undefined;
    this.reasoningAt = { item_id: reasoningId, output_index: 0, content_index: 0 };
    this.item = { item_id: echo.itemId, output_index: 0, content_index: 0 };
  }

  /** response.created and response.in_progress (and, for plain text, the message opens at once). */
  start(): void {
    const state: ResponseState = { status: 'in_progress' };
    this.send('response.created', { response: responseObject(this.echo, state) });
    this.send('response.in_progress', { response: responseObject(this.echo, state) });
    if (!this.parser && !this.toolParser) this.openMessage();
  }

  /** One round's new text, with its logprobs. */
  tokens(text: string, piece: ResponseLogprob[]): void {
    if (!this.parser) return this.write(text, piece);
    const part = this.parser.push(text);
    this.reason(part.reasoning);
    this.write(part.content, part.reasoning && !part.content ? [] : piece);
  }

  /** The end: the open items close, then response.completed or response.incomplete with the final object (returned). */
  finish(finishReason: ApiFinishReason, usage: Usage): ReturnType<typeof responseObject> {
    if (this.parser) {
      const part = this.parser.flush();
      this.reason(part.reasoning);
      this.write(part.content, []);
    }
    const status = finalStatus(finishReason);
    if (this.toolParser) {
      this.toolEvents('', finishReason);
      this.closeCall(status);
    }
    const withMessage = this.messageOpened || this.calls.length === 0;
    const { item, text, logprobs } = this;
    if (withMessage) {
      this.openMessage();
      this.send('response.output_text.done', { ...item, text, logprobs });
      this.send('response.content_part.done', { ...item, part: outputText(text, logprobs) });
      this.send('response.output_item.done', { output_index: item.output_index, item: outputMessage(this.echo, { text, logprobs, status }) });
    }
    const state: ResponseState = {
      status,
      usage,
      calls: this.calls,
      ...(withMessage ? { message: { text, logprobs, status }, messageAfterCalls: this.messageAfterCalls } : {}),
      ...(this.reasoning ? { reasoning: this.reasoning } : {}),
    };
    const response = responseObject(this.echo, state);
    this.send(`response.${status}`, { response });
    return response;
  }

  private reason(delta: string): void {
    if (!delta) return;
    if (!this.reasoning) {
      this.reasoning = { id: this.reasoningId, text: '', status: 'in_progress' };
      this.send('response.output_item.added', { output_index: 0, item: reasoningItem(this.reasoning) });
      this.send('response.content_part.added', { ...this.reasoningAt, part: { type: 'reasoning_text', text: '' } });
    }
    this.reasoning.text += delta;
    this.send('response.reasoning_text.delta', { ...this.reasoningAt, delta });
  }

  private closeReasoning(): void {
    const reasoning = this.reasoning;
    if (!reasoning || reasoning.status === 'completed') return;
    reasoning.status = 'completed';
    this.send('response.reasoning_text.done', { ...this.reasoningAt, text: reasoning.text });
    this.send('response.content_part.done', { ...this.reasoningAt, part: { type: 'reasoning_text', text: reasoning.text } });
    this.send('response.output_item.done', { output_index: 0, item: reasoningItem(reasoning) });
    this.nextIndex = Math.max(this.nextIndex, 1);
  }

  private openMessage(): void {
    if (this.messageOpened) return;
    this.messageOpened = true;
    this.closeReasoning();
    this.item.output_index = this.nextIndex++;
    this.messageAfterCalls = this.calls.length;
    this.send('response.output_item.added', { output_index: this.item.output_index, item: { ...outputMessage(this.echo, { text: '', logprobs: [], status: 'in_progress' }), content: [] } });
    this.send('response.content_part.added', { ...this.item, part: outputText('', []) });
  }

  private closeCall(status: 'completed' | 'incomplete'): void {
    const i = this.calls.length - 1;
    const last = this.calls[i];
    if (!last || last.status !== 'in_progress') return;
    last.status = status;
    this.send('response.function_call_arguments.done', { item_id: last.id, output_index: this.callIndex[i], arguments: last.call.function.arguments });
    this.send('response.output_item.done', { output_index: this.callIndex[i], item: functionCallItem(last.id, last.call, status) });
  }

  private toolEvents(textDelta: string, finish?: string): void {
    const events = finish === undefined ? this.toolParser!.push(textDelta) : this.toolParser!.flush(finish);
    for (const e of events) {
      if (e.type === 'content') this.plainWrite(e.text, []);
      else if (e.type === 'call') {
        this.closeCall('completed');
        this.closeReasoning();
        const call: ToolCall = { id: e.id, type: 'function', function: { name: e.name, arguments: '' } };
        this.calls.push({ id: functionCallItemId(), call, status: 'in_progress' });
        this.callIndex.push(this.nextIndex++);
        this.send('response.output_item.added', { output_index: this.callIndex[this.calls.length - 1], item: functionCallItem(this.calls[this.calls.length - 1]!.id, call, 'in_progress') });
      } else {
        const last = this.calls[this.calls.length - 1]!;
        last.call.function.arguments += e.text;
        this.send('response.function_call_arguments.delta', { item_id: last.id, output_index: this.callIndex[this.calls.length - 1], delta: e.text });
      }
    }
  }

  private write(delta: string, piece: ResponseLogprob[]): void {
    if (this.toolParser) this.toolEvents(delta);
    else this.plainWrite(delta, piece);
  }

  private plainWrite(delta: string, piece: ResponseLogprob[]): void {
    if (!delta && !piece.length) return;
    this.openMessage();
    this.text += delta;
    this.logprobs.push(...piece);
    this.send('response.output_text.delta', { ...this.item, delta, logprobs: piece });
  }
}
