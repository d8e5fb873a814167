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
