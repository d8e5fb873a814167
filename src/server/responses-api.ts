/**
 * OpenAI's Responses API (`POST /v1/responses`) on the chat engine: the request's `input` (a
 * string, or message items) and `instructions` become a chat, planned like
 * /v1/chat/completions (generation-plan.ts `planMessages`), and the output is one assistant message
 * with one `output_text` part.
 *
 * Responses are stored unless `store: false` (response-store.ts, bounded in memory); the route
 * resolves `previous_response_id` against the store before planning (the stored conversation
 * goes before `input`), so planning refuses one it is handed unresolved. `conversation`
 * objects and `background` responses are refused.
 * Function tools (`tools`, `tool_choice`, `parallel_tool_calls`, `function_call` and
 * `function_call_output` input items, `function_call` output items) work as in chat
 * (responses-tools.ts). Responses API fields specd cannot honour (hosted tools, reasoning
 * effort, ...) are refused like chat's; `speculative`, `top_k` and `seed` work as in chat.
 */
import { randomUUID } from 'node:crypto';
import type { TokenLogprob } from '../engine/logprobs.js';
import { apiErrors } from './errors.js';
import { textFormatGrammar } from './response-format.js';
import { checkCommon, type GenerationPlan, type PlanContext, planMessages } from './generation-plan.js';
import type { CommonBody } from './requests.js';
import { checkUnsupported, given, type Unsupported } from './unsupported.js';
import { chatLogprobs, type Usage } from './responses.js';
import { addToolItem, echoTools, functionCallItem, isToolItem, planResponseTools } from './responses-tools.js';
import type { ToolCall } from './tool-output.js';
import { type ToolAwareMessage, toolConversation } from './tool-prompt.js';
import type { SpeculativeField } from './speculation.js';
import type { TokenTexts } from './token-text.js';

type Opt<T> = T | null | undefined;

/** The `include` value that asks for the output text's logprobs. */
export const INCLUDE_LOGPROBS = 'message.output_text.logprobs';

export interface InputContentPart {
  type: string;
  text?: string;
  [field: string]: unknown;
}

export interface InputItem {
  type?: string;
  role?: string;
  content?: string | InputContentPart[];
  [field: string]: unknown;
}

export interface ResponsesBody {
  model?: Opt<string>;
  input?: Opt<string | InputItem[]>;
  instructions?: Opt<string>;
  max_output_tokens?: Opt<number>;
  temperature?: Opt<number>;
  top_p?: Opt<number>;
  top_logprobs?: Opt<number>;
  include?: Opt<string[]>;
  stream?: Opt<boolean>;
  store?: Opt<boolean>;
  metadata?: Opt<Record<string, string>>;
  user?: Opt<string>;
  speculative?: Opt<SpeculativeField>;
  top_k?: Opt<number>;
  seed?: Opt<number>;
  /** At most this many function calls in the response (1, or any with parallel_tool_calls false). */
  max_tool_calls?: Opt<number>;
  /** `{format: {type: "text" | "json_object" | "json_schema", ...}}`: structured outputs (response-format.ts). */
  text?: Opt<{ format?: unknown }>;
  [field: string]: unknown;
}

const RESPONSES_UNSUPPORTED: Unsupported[] = [
  ['previous_response_id', given, 'a continued response is read from the server\'s response store, which this planning was not given.'],
  ['conversation', given, 'conversation objects are not available; continue a stored response with previous_response_id, or send the whole conversation in `input`.'],
  ['background', (v) => v === true, 'background responses are not available; stream the response instead.'],
  ['prompt', given, 'stored prompt templates are not available; send the text in `input`.'],
  ['reasoning', (v) => given(v) && ((given((v as { effort?: unknown }).effort) && (v as { effort: unknown }).effort !== 'none') || given((v as { summary?: unknown }).summary)), 'the served model has no reasoning mode (only effort "none" applies).'],
  ['truncation', (v) => v === 'auto', 'a conversation longer than the context is refused (context_length_exceeded), not truncated.'],
];

const ROLES: Record<string, string> = { system: 'system', developer: 'system', user: 'user', assistant: 'assistant' };
/** Text content part types: the input's, and the output's (an earlier assistant turn sent back). */
const TEXT_PARTS = new Set(['input_text', 'output_text', 'text']);

/** The request as a plan for the engine (and the fields the response object echoes). */
export function planResponse(body: ResponsesBody, ctx: PlanContext): GenerationPlan {
  checkUnsupported(body, RESPONSES_UNSUPPORTED);
  for (const value of body.include ?? []) {
    if (value !== INCLUDE_LOGPROBS) throw apiErrors.unsupported('include', `"${value}" is not available; specd can include "${INCLUDE_LOGPROBS}".`);
  }
  const common: CommonBody = {
    model: body.model,
    stream: body.stream,
    temperature: body.temperature,
    top_p: body.top_p,
    top_k: body.top_k,
    seed: body.seed,
    user: body.user,
    speculative: body.speculative,
  };
  checkCommon(common, ctx);
  const format = textFormatGrammar(body.text);
  // max_tool_calls: 1 is one call per response, which is what parallel_tool_calls false enforces;
  // a larger cap on several calls has no grammar here, so it is refused rather than ignored.
  const maxToolCalls = body.max_tool_calls ?? undefined;
  if (maxToolCalls !== undefined && maxToolCalls > 1 && body.parallel_tool_calls !== false) {
    throw apiErrors.unsupported('max_tool_calls', `a cap of ${maxToolCalls} tool calls is not enforced by this server; use max_tool_calls 1 or parallel_tool_calls false (at most one call), or leave it out.`);
  }
  const parallel = maxToolCalls === 1 ? false : body.parallel_tool_calls;
  const tools = planResponseTools({ tools: body.tools, tool_choice: body.tool_choice, parallel_tool_calls: parallel }, ctx.facts.toolCallFormat);
  if (format && tools && tools.mode !== 'none') {
    throw apiErrors.unsupported('text.format', "a text format together with tools the model may call; set 'tool_choice' to 'none' or leave out one of them.");
  }
  const conversation = toolConversation(inputMessages(body), tools, ctx.facts.tokenizer.templateUsesTools);
  const logprobs = body.include?.includes(INCLUDE_LOGPROBS) ? (body.top_logprobs ?? 0) : undefined;
  const requested = body.max_output_tokens ?? undefined;
  const out = planMessages(conversation.messages, common, ctx, { param: 'input', maxParam: 'max_output_tokens', requested, fallback: Infinity }, logprobs, {
    grammar: format ?? tools?.grammar,
    ...(conversation.templateVars ? { templateVars: conversation.templateVars } : {}),
  });
  if (tools && tools.mode !== 'none') out.tools = tools;
  return out;
}

/** `instructions` (a system message first) and `input` as the chat template's messages. */
function inputMessages(body: ResponsesBody): ToolAwareMessage[] {
  const messages: ToolAwareMessage[] = [];
  if (given(body.instructions)) messages.push({ role: 'system', content: body.instructions! });
  if (!given(body.input)) throw apiErrors.missing('input');
  const input = body.input!;
  if (typeof input === 'string') {
    messages.push({ role: 'user', content: input });
    return messages;
  }
  input.forEach((item, i) => {
    const at = `input[${i}]`;
    if (isToolItem(item)) {
      addToolItem(messages, item, at);
      return;
    }
    // An earlier turn's reasoning, sent back by agent loops: left out of the prompt, as chat templates leave out earlier thinking.
    if (item.type === 'reasoning') return;
    if (given(item.type) && item.type !== 'message') {
      const why = item.type === 'item_reference'
        ? 'item references name stored output items, and the response store did not resolve this one; send the item itself.'
        : `input items of type "${item.type}" are not supported; specd takes messages, function_call and function_call_output items.`;
      throw apiErrors.unsupported(`${at}.type`, why);
    }
    const role = typeof item.role === 'string' && Object.hasOwn(ROLES, item.role) ? ROLES[item.role]! : undefined;
    if (!role) {
      throw apiErrors.invalidValue(`${at}.role`, `Invalid value for '${at}.role': ${JSON.stringify(item.role)}. Supported values are: ${Object.keys(ROLES).map((r) => `'${r}'`).join(', ')}.`);
    }
    const content = item.content ?? '';
    if (typeof content === 'string') {
      messages.push({ role, content });
      return;
    }
    const texts = content.map((part, j) => {
      if (!TEXT_PARTS.has(part.type)) {
        throw apiErrors.unsupported(`${at}.content[${j}].type`, `content parts of type "${part.type}" need a multimodal model; specd serves text-only models.`);
      }
      if (typeof part.text !== 'string') throw apiErrors.missing(`${at}.content[${j}].text`);
      return part.text;
    });
    messages.push({ role, content: texts.join('\n') });
  });
  if (messages.length === 0) throw apiErrors.invalidValue('input', "Invalid 'input': it holds no messages.", 'empty_array');
  return messages;
}

/** `resp_...` and `msg_...` ids. */
export function responseIds(): { id: string; itemId: string; reasoningId: string } {
  const hex = () => randomUUID().replace(/-/g, '');
  return { id: `resp_${hex()}`, itemId: `msg_${hex()}`, reasoningId: `rs_${hex()}` };
}

/** The Responses API's usage, with specd's `speculative` as in chat. */
export function responseUsage(usage: Usage) {
  return {
    input_tokens: usage.prompt_tokens,
    input_tokens_details: { cached_tokens: usage.prompt_tokens_details.cached_tokens },
    output_tokens: usage.completion_tokens,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: usage.total_tokens,
    speculative: usage.speculative,
  };
}

export type ResponseLogprob = ReturnType<typeof chatLogprobs>['content'][number];

/** Token logprobs as `output_text.logprobs` (chat's records: token, logprob, bytes, top_logprobs). */
export function responseLogprobs(records: readonly TokenLogprob[] | undefined, texts: TokenTexts): ResponseLogprob[] {
  return records ? chatLogprobs(records, texts).content : [];
}

export type ResponseStatus = 'in_progress' | 'completed' | 'incomplete' | 'failed';

/** What a response object shows at one moment. */
export interface ResponseState {
  status: ResponseStatus;
  /** The output message; absent before it starts. */
  message?: { text: string; logprobs: ResponseLogprob[]; status: 'in_progress' | 'completed' | 'incomplete' };
  usage?: Usage;
  error?: { code: string; message: string };
  /** With a reasoning parser, the output's reasoning: an item before the message. */
  reasoning?: { id: string; text: string; status: 'in_progress' | 'completed' };
  /** With tools, the calls the output made: `function_call` items (`id` is the item's `fc_...`). */
  calls?: { id: string; call: ToolCall; status: 'in_progress' | 'completed' | 'incomplete' }[];
  /** How many of `calls` the model wrote before the message's first text (the message's place among the items; 0 when absent). */
  messageAfterCalls?: number;
}

/** A reasoning output item (`rs_...`): the model's thinking as one `reasoning_text` part, no summary. */
export function reasoningItem(reasoning: NonNullable<ResponseState['reasoning']>) {
  return { id: reasoning.id, type: 'reasoning' as const, summary: [], content: [{ type: 'reasoning_text' as const, text: reasoning.text }], status: reasoning.status };
}

/** The fields of a response object that come from the request. */
export interface ResponseEcho {
  id: string;
  itemId: string;
  createdAt: number;
  model: string;
  body: ResponsesBody;
  /** The function tools as the response echoes them (`echoTools`); none without tools. */
  tools?: ReturnType<typeof echoTools>;
}

/** The output item: one assistant message holding one `output_text` part. */
export function outputMessage(echo: ResponseEcho, message: NonNullable<ResponseState['message']>) {
  return {
    id: echo.itemId,
    type: 'message' as const,
    status: message.status,
    role: 'assistant' as const,
    content: [outputText(message.text, message.logprobs)],
  };
}

/** An `output_text` content part (no annotations: specd cites nothing). */
export function outputText(text: string, logprobs: ResponseLogprob[]) {
  return { type: 'output_text' as const, text, annotations: [], logprobs };
}

/** The output items in the order the model wrote them: reasoning, then the message and the calls as they came. */
export function outputItems(echo: ResponseEcho, state: ResponseState) {
  const calls = (state.calls ?? []).map((c) => functionCallItem(c.id, c.call, c.status));
  const at = Math.min(state.messageAfterCalls ?? 0, calls.length);
  return [
    ...(state.reasoning ? [reasoningItem(state.reasoning)] : []),
    ...calls.slice(0, at),
    ...(state.message ? [outputMessage(echo, state.message)] : []),
    ...calls.slice(at),
  ];
}

/** A response object (OpenAI's `Response`), as it is at `state`. */
export function responseObject(echo: ResponseEcho, state: ResponseState) {
  const { body } = echo;
  const done = state.status !== 'in_progress';
  return {
    id: echo.id,
    object: 'response' as const,
    created_at: echo.createdAt,
    status: state.status,
    completed_at: state.status === 'completed' ? Math.floor(Date.now() / 1000) : null,
    error: state.error ?? null,
    incomplete_details: state.status === 'incomplete' ? { reason: 'max_output_tokens' as const } : null,
    instructions: body.instructions ?? null,
    max_output_tokens: body.max_output_tokens ?? null,
    model: echo.model,
    output: outputItems(echo, state),
    parallel_tool_calls: body.parallel_tool_calls ?? true,
    previous_response_id: body.previous_response_id ?? null,
    reasoning: { effort: null, summary: null },
    store: body.store !== false,
    temperature: body.temperature ?? null,
    text: { format: (body.text as { format?: unknown } | undefined)?.format ?? { type: 'text' as const } },
    tool_choice: body.tool_choice ?? 'auto',
    tools: echo.tools ?? [],
    top_logprobs: body.top_logprobs ?? 0,
    top_p: body.top_p ?? null,
    truncation: 'disabled' as const,
    usage: done && state.usage ? responseUsage(state.usage) : null,
    user: body.user ?? null,
    metadata: body.metadata ?? {},
  };
}
