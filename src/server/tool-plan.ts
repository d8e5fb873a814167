/**
 * The tools of a chat request and how they may be called: `tools`, `tool_choice` and
 * `parallel_tool_calls` checked and turned into a plan, with the grammar that enforces the calls.
 *
 * `required` and a named function are enforced by a grammar (the output is one or more calls and
 * nothing else); `auto` lets the model write text or calls, and the grammar only takes over
 * inside a call, so every call it starts has valid arguments; `none` generates text. Calls are
 * written in the model's own format (`toolCallFormatOf`): Llama 3.1's JSON where its chat template
 * or vocabulary says so (grammar/llama3-json-format.ts), Hermes otherwise (grammar/hermes-format.ts).
 */
import { usesLlama3Json } from '../grammar/llama3-json-format.js';
import type { ToolCallFormat, ToolCallMode } from '../grammar/tool-call-common.js';
import { grammarSchema } from '../grammar/schema-check.js';
import { apiErrors } from './errors.js';
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
  /** How the model writes calls: the grammar's and the parser's format. */
  format: ToolCallFormat;
  grammar?: RequestGrammar;
}

/** OpenAI's rule for function names. */
const FUNCTION_NAME = /^[a-zA-Z0-9_-]{1,64}$/;
/** Arguments schema of a function declared without one: no arguments, `{}` (OpenAI: omitting `parameters` defines an empty parameter list). */
const NO_ARGUMENTS = { type: 'object', properties: {}, additionalProperties: false };

/**
 * The format a model writes tool calls in, as vLLM's `--tool-call-parser` would be chosen for it:
 * `llama3_json` when its chat template asks for Llama 3.1's JSON calls or, with a template that
 * says nothing of calls, its vocabulary has `<|python_tag|>` (llama3-json-format.ts
 * `usesLlama3Json`); `hermes` otherwise (Qwen2.5 / Qwen3, Hermes, and templates without tools).
 */
export function toolCallFormatOf(tokenizer: { chatTemplate?: string; idOf(token: string): number | undefined }): ToolCallFormat {
  return usesLlama3Json(tokenizer.chatTemplate, (text) => tokenizer.idOf(text) !== undefined) ? 'llama3_json' : 'hermes';
}

/**
 * The tools of a request and how they may be called; undefined without tools.
 * @param format how the model writes calls (`toolCallFormatOf`)
 * @throws ApiError (400) naming the field at fault
 */
export function planTools(body: { tools?: unknown; tool_choice?: unknown; parallel_tool_calls?: unknown }, format: ToolCallFormat = 'hermes'): ToolPlan | undefined {
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
  const plan: ToolPlan = { tools: functions, mode, parallel, format };
  if (mode !== 'none') {
    plan.grammar = {
      spec: { type: 'tool_calls', functions: called.map((f) => ({ name: f.name, parameters: JSON.stringify(grammarSchema(f.parameters)) })), mode, parallel, format },
      param: 'tools',
    };
  }
  return plan;
}

/**
 * One entry of `tools`, checked.
 * @param i its index in `tools` (for the error's `param`)
 * @throws ApiError (400) naming the field at fault
 */
export function functionTool(tool: unknown, i: number): FunctionTool {
  const param = `tools[${i}]`;
  if (!tool || typeof tool !== 'object') throw apiErrors.invalidType(param, 'an object');
  const t = tool as { type?: unknown; function?: { name?: unknown; description?: unknown; parameters?: unknown; strict?: unknown } };
  if (t.type !== 'function') {
    throw t.type === undefined ? apiErrors.missing(`${param}.type`) : apiErrors.unsupported(`${param}.type`, `tools of type ${JSON.stringify(t.type)}; only 'function' tools are.`);
  }
  const f = t.function;
  if (!f || typeof f !== 'object') throw apiErrors.missing(`${param}.function`);
  if (typeof f.name !== 'string') throw apiErrors.missing(`${param}.function.name`);
  if (!FUNCTION_NAME.test(f.name)) throw apiErrors.invalidValue(`${param}.function.name`, `Invalid '${param}.function.name': it must be 1 to 64 letters, digits, underscores or dashes.`);
  if (f.description !== undefined && f.description !== null && typeof f.description !== 'string') throw apiErrors.invalidType(`${param}.function.description`, 'a string');
  if (f.strict !== undefined && f.strict !== null && typeof f.strict !== 'boolean') throw apiErrors.invalidType(`${param}.function.strict`, 'a boolean');
  const parameters = f.parameters === undefined || f.parameters === null ? NO_ARGUMENTS : checkSchema(f.parameters, `${param}.function.parameters`);
  // Arguments are a JSON object (OpenAI refuses other parameter types the same way).
  const type = typeof parameters === 'object' ? (parameters as { type?: unknown }).type : undefined;
  if (type !== undefined && type !== 'object') {
    throw apiErrors.invalidValue(
      `${param}.function.parameters`,
      `Invalid schema for function '${f.name}': parameters must be a JSON Schema of type "object", got type ${JSON.stringify(type)}; put the value in a property (e.g. {"type": "object", "properties": {"value": ...}}).`,
      'invalid_function_parameters',
    );
  }
  return { name: f.name, ...(typeof f.description === 'string' ? { description: f.description } : {}), parameters };
}
