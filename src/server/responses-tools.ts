/**
 * Function tools on the Responses API (`POST /v1/responses`), on chat's tool machinery
 * (tool-plan.ts, tool-prompt.ts, tool-output.ts): the Responses API's flat tool definitions (`{type: "function", name,
 * description, parameters, strict}`) and `tool_choice` (`"none" | "auto" | "required" |
 * {type: "function", name}`) become chat's, planned by `planTools` (the same grammar for
 * `required` and a named function); `function_call` and `function_call_output` input items
 * become an assistant message's `tool_calls` and `tool` messages; the calls parsed from the
 * output (`parseToolCalls` / `HermesParser`) become `function_call` output items.
 */
import { randomUUID } from 'node:crypto';
import { ApiError, apiErrors } from './errors.js';
import type { ToolCall } from './tool-output.js';
import { planTools, type ToolPlan } from './tool-plan.js';
import type { ToolCallFormat } from '../grammar/tool-call-common.js';
import type { ToolAwareMessage } from './tool-prompt.js';

/**
 * The Responses API's `tools`, `tool_choice` and `parallel_tool_calls` planned as chat's.
 * @returns undefined without tools (or with `tool_choice` "none" or "auto" and no tools)
 * @param format how the model writes calls (tool-plan.ts `toolCallFormatOf`; default Hermes)
 * @throws ApiError (400) naming the field at fault (`tools[i].name`, `tool_choice.name`, ...)
 */
export function planResponseTools(body: { tools?: unknown; tool_choice?: unknown; parallel_tool_calls?: unknown }, format?: ToolCallFormat): ToolPlan | undefined {
  const { tools, tool_choice: choice } = body;
  let chatTools: unknown = tools;
  if (Array.isArray(tools)) {
    chatTools = tools.map((tool, i) => {
      if (!tool || typeof tool !== 'object') throw apiErrors.invalidType(`tools[${i}]`, 'an object');
      const t = tool as { type?: unknown; name?: unknown; description?: unknown; parameters?: unknown; strict?: unknown };
      if (t.type === undefined) throw apiErrors.missing(`tools[${i}].type`);
      if (t.type !== 'function') {
        throw apiErrors.unsupported(`tools[${i}].type`, `tools of type ${JSON.stringify(t.type)} (hosted tools) are not available; only 'function' tools are.`);
      }
      if (typeof t.name !== 'string') throw apiErrors.missing(`tools[${i}].name`);
      return { type: 'function', function: { name: t.name, description: t.description, parameters: t.parameters, strict: t.strict } };
    });
  }
  let chatChoice: unknown = choice;
  if (choice && typeof choice === 'object') {
    const c = choice as { type?: unknown; name?: unknown };
    if (c.type !== 'function') {
      throw apiErrors.invalidValue('tool_choice', `Invalid value for 'tool_choice': ${JSON.stringify(choice)}. Supported values are: 'none', 'auto', 'required' and {"type": "function", "name": ...}.`);
    }
    if (typeof c.name !== 'string') throw apiErrors.missing('tool_choice.name');
    chatChoice = { type: 'function', function: { name: c.name } };
  }
  try {
    return planTools({ tools: chatTools, tool_choice: chatChoice, parallel_tool_calls: body.parallel_tool_calls }, format);
  } catch (err) {
    // Chat's parameter names (`tools[i].function.name`) as the Responses API names them.
    if (err instanceof ApiError && err.param) {
      const rename = (text: string) => text.replace(/(tools\[\d+\])\.function\./g, '$1.').replace(/tool_choice\.function\./g, 'tool_choice.');
      throw new ApiError(err.status, err.type, rename(err.message), rename(err.param), err.code);
    }
    throw err;
  }
}

/**
 * A `function_call` input item (an earlier call, as the response gave it) or a
 * `function_call_output` item (its result) added to the conversation: consecutive calls join
 * one assistant message's `tool_calls` (after the assistant's text of that turn, when it is the
 * message before); an output becomes a `tool` message.
 * @param at the item's parameter name (`input[i]`), for errors
 * @throws ApiError (400) when `call_id`, `name`, `arguments` or `output` is missing
 */
export function addToolItem(messages: ToolAwareMessage[], item: Record<string, unknown>, at: string): void {
  if (typeof item.call_id !== 'string') throw apiErrors.missing(`${at}.call_id`);
  if (item.type === 'function_call') {
    if (typeof item.name !== 'string') throw apiErrors.missing(`${at}.name`);
    if (typeof item.arguments !== 'string') throw apiErrors.missing(`${at}.arguments`);
    const call = { id: item.call_id, type: 'function', function: { name: item.name, arguments: item.arguments } };
    const last = messages[messages.length - 1];
    if (last?.role === 'assistant') (last.tool_calls ??= []).push(call);
    else messages.push({ role: 'assistant', content: '', tool_calls: [call] });
    return;
  }
  const output = item.output;
  let content: string;
  if (typeof output === 'string') content = output;
  else if (Array.isArray(output)) {
    content = output
      .map((part, j) => {
        const p = part as { type?: unknown; text?: unknown };
        if (p?.type !== 'input_text' && p?.type !== 'output_text') {
          throw apiErrors.unsupported(`${at}.output[${j}].type`, `function outputs of type ${JSON.stringify(p?.type)} need a multimodal model; specd takes text ('input_text').`);
        }
        if (typeof p.text !== 'string') throw apiErrors.missing(`${at}.output[${j}].text`);
        return p.text;
      })
      .join('\n');
  } else throw apiErrors.missing(`${at}.output`);
  messages.push({ role: 'tool', content, tool_call_id: item.call_id });
}

/** Whether an input item is a tool item `addToolItem` takes. */
export function isToolItem(item: { type?: unknown }): boolean {
  return item.type === 'function_call' || item.type === 'function_call_output';
}

export type FunctionCallStatus = 'in_progress' | 'completed' | 'incomplete';

/** A `function_call` output item: its own id (`fc_...`), the call's id (`call_id`, what a `function_call_output` answers), name and arguments (a JSON string). */
export function functionCallItem(id: string, call: ToolCall, status: FunctionCallStatus) {
  return { id, type: 'function_call' as const, status, call_id: call.id, name: call.function.name, arguments: call.function.arguments };
}

/** A `fc_...` item id. */
export function functionCallItemId(): string {
  return `fc_${randomUUID().replace(/-/g, '')}`;
}

/** The tools as the response object echoes them (the Responses API's flat function tools). */
export function echoTools(plan: ToolPlan | undefined, body: { tools?: unknown }) {
  if (!plan || !Array.isArray(body.tools)) return [];
  return plan.tools.map((f, i) => ({
    type: 'function' as const,
    name: f.name,
    description: f.description ?? null,
    parameters: f.parameters,
    strict: (body.tools as { strict?: unknown }[])[i]?.strict ?? true,
  }));
}

