/**
 * What every tool-call format shares: how calls may be asked for (`ToolCallMode`), a function
 * as a format's structural tag takes it, the events a streamed parser gives, and reading the
 * extent of a JSON value in model output. Each format is one module beside this one (constants,
 * structural tag, parser): hermes-format.ts, llama3-json-format.ts.
 */

/** The formats a model writes calls in: Hermes' `<tool_call>` (Qwen, Hermes, the fallback) and Llama 3.1's JSON (vLLM's `llama3_json`). */
export type ToolCallFormat = 'hermes' | 'llama3_json';

/** A format's streamed parser: `push` each piece of text, `flush` at the end (`length`: the output was cut). */
export interface ToolCallParser {
  push(text: string): ToolCallEvent[];
  flush(finishReason?: string): ToolCallEvent[];
}

/** `auto`: text, or calls where the model starts one; `required`: one or more calls only; `named`: one call of the one function. */
export type ToolCallMode = 'auto' | 'required' | 'named';

export interface ToolGrammarFunction {
  name: string;
  /** The arguments' grammar (EBNF, root rule `root`), from their JSON schema. */
  argumentsEbnf: string;
}

/** What a format's streamed parser reads from an output, in order. */
export type ToolCallEvent =
  | { type: 'content'; text: string }
  /** A call begins: its index among the choice's calls, id and function name. */
  | { type: 'call'; index: number; id: string; name: string }
  /** More of the arguments of call `index`. */
  | { type: 'arguments'; index: number; text: string };

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

/** How a format writes one call around its arguments, for the structural tag. */
export interface ToolCallMarkup {
  /** The text before a function's arguments. */
  head(name: string): string;
  /** The text after the arguments. */
  tail: string;
  /** The text between parallel calls. */
  separator: string;
  /** The text that starts a call when the model may also answer in text (`auto`). */
  trigger: string;
}

/**
 * The structural tag (xgrammar's JSON format) for tool calls written in `markup`: one call of the
 * named function, at least one call (`required`), or calls triggered by `markup.trigger` among text
 * (`auto`).
 * @param parallel whether several calls may follow each other (`parallel_tool_calls`)
 */
export function structuralTagFor(markup: ToolCallMarkup, functions: readonly ToolGrammarFunction[], mode: ToolCallMode, parallel: boolean): object {
  const tags = functions.map((f) => ({ type: 'tag', begin: markup.head(f.name), content: { type: 'grammar', grammar: f.argumentsEbnf }, end: markup.tail }));
  switch (mode) {
    case 'named':
      return { type: 'structural_tag', format: tags[0] };
    case 'required':
      return { type: 'structural_tag', format: { type: 'tags_with_separator', tags, separator: markup.separator, at_least_one: true, stop_after_first: !parallel } };
    case 'auto':
      return { type: 'structural_tag', format: { type: 'triggered_tags', triggers: [markup.trigger], tags, at_least_one: false, stop_after_first: !parallel } };
  }
}
