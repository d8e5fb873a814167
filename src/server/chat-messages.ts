/**
 * Chat messages as the chat template takes them: roles mapped to the template's (`developer` is
 * `system`), text content parts joined with newlines (as vLLM), an assistant's earlier
 * `tool_calls` and a tool message's `tool_call_id` kept. What is not a text chat (images, audio,
 * the deprecated `function` role) is refused naming the message and part.
 */
import { apiErrors } from './errors.js';
import type { MessageBody } from './requests.js';
import type { ToolAwareMessage } from './tool-prompt.js';
import { given } from './unsupported.js';

const ROLES: Record<string, string> = { system: 'system', developer: 'system', user: 'user', assistant: 'assistant', tool: 'tool' };

/** Messages as the chat template takes them; text content parts are joined with newlines (as vLLM). */
export function chatMessages(messages: MessageBody[]): ToolAwareMessage[] {
  return messages.map((m, i): ToolAwareMessage => {
    // Own properties only: "constructor" or "__proto__" is not a role.
    const role = Object.hasOwn(ROLES, m.role) ? ROLES[m.role] : undefined;
    if (m.role === 'function') throw apiErrors.unsupported(`messages[${i}].role`, "\"function\" messages belong to the deprecated function calling; use 'tool' messages.");
    if (!role) {
      throw apiErrors.invalidValue(`messages[${i}].role`, `Invalid value for 'messages[${i}].role': "${m.role}". Supported values are: ${Object.keys(ROLES).map((r) => `'${r}'`).join(', ')}.`);
    }
    const extra: Partial<ToolAwareMessage> = {};
    if (role === 'tool') {
      if (typeof m.tool_call_id !== 'string') throw apiErrors.missing(`messages[${i}].tool_call_id`);
      extra.tool_call_id = m.tool_call_id;
    }
    if (given(m.tool_calls) && !(Array.isArray(m.tool_calls) && m.tool_calls.length === 0)) {
      if (role !== 'assistant') throw apiErrors.invalidValue(`messages[${i}].tool_calls`, `Invalid 'messages[${i}]': only assistant messages have 'tool_calls'.`);
      extra.tool_calls = assistantToolCalls(m.tool_calls, `messages[${i}].tool_calls`);
    }
    const text = messageText(m, i);
    return { role, content: text, ...extra };
  });
}

/** An assistant message's earlier calls: `[{id, type: "function", function: {name, arguments}}]`. */
function assistantToolCalls(value: unknown, param: string): NonNullable<ToolAwareMessage['tool_calls']> {
  if (!Array.isArray(value)) throw apiErrors.invalidType(param, 'an array');
  return value.map((c: unknown, j) => {
    const call = c as { id?: unknown; type?: unknown; function?: { name?: unknown; arguments?: unknown } } | null;
    if (!call || typeof call !== 'object') throw apiErrors.invalidType(`${param}[${j}]`, 'an object');
    if (typeof call.function?.name !== 'string') throw apiErrors.missing(`${param}[${j}].function.name`);
    if (typeof call.function.arguments !== 'string') throw apiErrors.invalidType(`${param}[${j}].function.arguments`, 'a string (JSON text)');
    return { ...(typeof call.id === 'string' ? { id: call.id } : {}), type: 'function', function: { name: call.function.name, arguments: call.function.arguments } };
  });
}

/** A message's text: its content string, or its text parts joined with newlines. */
function messageText(m: MessageBody, i: number): string {
  const content = m.content ?? '';
  if (typeof content === 'string') return content;
  const texts = content.map((part, j) => {
    // An earlier assistant turn may hold a refusal part: its text is what the assistant said.
    if (part.type === 'refusal' && m.role === 'assistant') {
      if (typeof part.refusal !== 'string') throw apiErrors.missing(`messages[${i}].content[${j}].refusal`);
      return part.refusal;
    }
    if (part.type !== 'text') {
      throw apiErrors.unsupported(`messages[${i}].content[${j}].type`, `content parts of type "${part.type}" need a multimodal model; specd serves text-only models.`);
    }
    if (typeof part.text !== 'string') throw apiErrors.missing(`messages[${i}].content[${j}].text`);
    return part.text;
  });
  return texts.join('\n');
}
