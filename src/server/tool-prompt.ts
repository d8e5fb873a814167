/**
 * Tools in the prompt: assistant messages with `tool_calls` and `tool` messages in the
 * conversation, and the tools themselves. A chat template that uses `tools` gets them as the
 * template variable `tools` and the messages as OpenAI sends them (arguments parsed to objects);
 * for other templates the conversation is rewritten in the fallback format: the tools described
 * in a system message, calls written in the plan's format (Hermes, grammar/hermes-format.ts, or
 * Llama 3.1's JSON, grammar/llama3-json-format.ts), in which the model is asked to call.
 */
import { TOOL_CALL_CLOSE, TOOL_CALL_OPEN, TOOL_CALL_SEPARATOR, toolCallHead } from '../grammar/hermes-format.js';
import { LLAMA3_JSON_CALL_TAIL, LLAMA3_JSON_SEPARATOR, llama3JsonCallHead } from '../grammar/llama3-json-format.js';
import type { ToolCallFormat } from '../grammar/tool-call-common.js';
import type { ChatMessage } from '../text/tokenizer.js';
import type { FunctionTool, ToolPlan } from './tool-plan.js';

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
 * writes them (the plan's format; Hermes without a plan), and each `tool` message becomes a user
 * turn holding `<tool_response>\n{content}\n</tool_response>`.
 */
export function fallbackConversation(messages: ToolAwareMessage[], plan: ToolPlan | undefined): ChatMessage[] {
  const format = plan?.format ?? 'hermes';
  const out: ChatMessage[] = messages.map((m) => {
    if (m.role === 'tool') return { role: 'user', content: `<tool_response>\n${m.content}\n</tool_response>` };
    if (m.tool_calls?.length) {
      const calls = m.tool_calls.map((c) => writtenCall(c.function.name, c.function.arguments, format)).join(format === 'llama3_json' ? LLAMA3_JSON_SEPARATOR : TOOL_CALL_SEPARATOR);
      return { role: m.role, content: m.content ? `${m.content}\n${calls}` : calls };
    }
    return { role: m.role, content: m.content };
  });
  if (plan && plan.mode !== 'none') {
    const text = toolsSystemText(plan.tools, format);
    if (out[0]?.role === 'system') out[0] = { role: 'system', content: `${out[0].content}\n\n${text}` };
    else out.unshift({ role: 'system', content: text });
  }
  return out;
}

/** A call as the model writes it in `format`. */
function writtenCall(name: string, args: string, format: ToolCallFormat): string {
  return format === 'llama3_json' ? `${llama3JsonCallHead(name)}${args}${LLAMA3_JSON_CALL_TAIL}` : `${toolCallHead(name)}${args}}\n${TOOL_CALL_CLOSE}`;
}

/** The system text describing the tools (fallback format), asking for calls in `format`. */
export function toolsSystemText(tools: readonly FunctionTool[], format: ToolCallFormat = 'hermes'): string {
  const how = format === 'llama3_json' ? '{"name": <name>, "parameters": <JSON object>}' : `${TOOL_CALL_OPEN}\n{"name": <name>, "arguments": <JSON object>}\n${TOOL_CALL_CLOSE}`;
  return ['Functions you can call (JSON Schema):', '<tools>', ...tools.map((f) => JSON.stringify(f)), '</tools>', 'Call one with:', how].join('\n');
}

function parseArguments(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
