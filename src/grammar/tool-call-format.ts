/**
 * How specd's output spells tool calls: the Hermes format that Qwen2.5/Qwen3 chat templates
 * use, one JSON object per call between tags, arguments last:
 *
 *   <tool_call>
 *   {"name": "get_weather", "arguments": {"city": "Paris"}}
 *   </tool_call>
 *
 * Several calls follow each other separated by a newline. The grammar that enforces it is an
 * xgrammar structural tag (https://xgrammar.mlc.ai/docs/tutorials/structural_tag.html): each
 * function is a tag whose begin is the call up to its arguments, whose content is the
 * arguments' JSON schema and whose end closes the object and the tag.
 */

export const TOOL_CALL_OPEN = '<tool_call>';
export const TOOL_CALL_CLOSE = '</tool_call>';
/** Between two calls. */
export const TOOL_CALL_SEPARATOR = '\n';

/** `auto`: text, or calls where the model starts one; `required`: one or more calls only; `named`: one call of the one function. */
export type ToolCallMode = 'auto' | 'required' | 'named';

export interface ToolGrammarFunction {
  name: string;
  /** The arguments' grammar (EBNF, root rule `root`), from their JSON schema. */
  argumentsEbnf: string;
}

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
  const tags = functions.map((f) => ({ type: 'tag', begin: toolCallHead(f.name), content: { type: 'grammar', grammar: f.argumentsEbnf }, end: TOOL_CALL_TAIL }));
  switch (mode) {
    case 'named':
      return { type: 'structural_tag', format: tags[0] };
    case 'required':
      return { type: 'structural_tag', format: { type: 'tags_with_separator', tags, separator: TOOL_CALL_SEPARATOR, at_least_one: true, stop_after_first: !parallel } };
    case 'auto':
      return { type: 'structural_tag', format: { type: 'triggered_tags', triggers: [TOOL_CALL_OPEN], tags, at_least_one: false, stop_after_first: !parallel } };
  }
}

/**
 * Index just after the JSON object or array `text` starts with (tool-call arguments as the
 * model writes them), or -1 while it is incomplete. Brackets inside strings and escaped quotes are
 * skipped; the text is not otherwise validated.
 */
export function jsonValueEnd(text: string): number {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
      continue;
    }
    if (c === '"') inString = true;
    else if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') {
      depth--;
      if (depth === 0) return i + 1;
    }
  }
  return -1;
}
