/**
 * Reasoning parsers: split a reasoning model's output into its thinking (`reasoning_content`)
 * and its answer (`content`), streamed or whole, as vLLM's `--reasoning-parser` does.
 *
 * - `deepseek_r1` (DeepSeek-R1 and its distills): the chat template opens `<think>` in the
 *   prompt, so the output starts inside the reasoning; a leading `<think>` is dropped if the
 *   model writes one anyway. Everything up to `</think>` is reasoning, the rest content; an
 *   output that never closes the block is all reasoning.
 * - `qwen3` (Qwen3): the model writes `<think>` itself (or the template, with
 *   `enable_thinking: false`, closes an empty block in the prompt). An output that starts with
 *   `<think>` is reasoning up to `</think>`; one that does not is all content.
 * In both, the tags themselves appear in neither part; a closed block's trailing newlines are
 * dropped from the content's start, as Qwen3's template strips them when the turn is sent back.
 *
 * The parser works on text deltas (after detokenization and stop strings): a tag split across
 * deltas is held back until it is complete or ruled out, so no delta ever shows part of a tag.
 */

/** The parsers `--reasoning-parser` accepts (vLLM's names). */
export const REASONING_PARSERS = ['deepseek_r1', 'qwen3'] as const;
export type ReasoningParserName = (typeof REASONING_PARSERS)[number];

const THINK_START = '<think>';
const THINK_END = '</think>';

/** What one push adds to each part (either may be ''). */
export interface ReasoningDelta {
  reasoning: string;
  content: string;
}

type Phase = 'start' | 'reasoning' | 'after-end' | 'content';

export class ReasoningParser {
  private phase: Phase = 'start';
  /** Text held back: a possible tag prefix (or, at the start, the opening of the output). */
  private held = '';
  /** Whole-output parts so far. */
  reasoning = '';
  content = '';
  /** Whether the output opened a reasoning block (always, for deepseek_r1). */
  private sawReasoning: boolean;

  constructor(readonly name: ReasoningParserName) {
    this.sawReasoning = name === 'deepseek_r1';
  }

  /** The output so far had reasoning (deepseek_r1: always; qwen3: it started with `<think>`). */
  get hasReasoning(): boolean {
    return this.sawReasoning;
  }

  /** Add output text; returns what can be told apart now. */
  push(delta: string): ReasoningDelta {
    const out: ReasoningDelta = { reasoning: '', content: '' };
    let text = this.held + delta;
    this.held = '';
    while (text.length > 0) {
      if (this.phase === 'start') {
        // Does the output open with <think>? Undecided while it is a prefix of the tag.
        if (text.startsWith(THINK_START)) {
          text = text.slice(THINK_START.length);
          this.phase = 'reasoning';
          this.sawReasoning = true;
        } else if (THINK_START.startsWith(text)) {
          this.held = text;
          break;
        } else this.phase = this.name === 'deepseek_r1' ? 'reasoning' : 'content';
        continue;
      }
      if (this.phase === 'reasoning') {
        const end = text.indexOf(THINK_END);
        if (end !== -1) {
          out.reasoning += text.slice(0, end);
          text = text.slice(end + THINK_END.length);
          this.phase = 'after-end';
          continue;
        }
        const keep = partialSuffix(text, THINK_END);
        out.reasoning += text.slice(0, text.length - keep);
        this.held = text.slice(text.length - keep);
        break;
      }
      if (this.phase === 'after-end') {
        // Newlines between </think> and the answer belong to neither.
        const trimmed = text.replace(/^\n+/, '');
        if (trimmed.length === 0) break;
        text = trimmed;
        this.phase = 'content';
        continue;
      }
      out.content += text;
      break;
    }
    this.reasoning += out.reasoning;
    this.content += out.content;
    return out;
  }

  /** The output has ended: whatever was held back is released to the part it was in. */
  flush(): ReasoningDelta {
    const held = this.held;
    this.held = '';
    const out: ReasoningDelta = { reasoning: '', content: '' };
    if (held.length === 0) return out;
    if (this.phase === 'reasoning' || (this.phase === 'start' && this.name === 'deepseek_r1')) out.reasoning = held;
    else out.content = held;
    this.reasoning += out.reasoning;
    this.content += out.content;
    return out;
  }
}

/** Split a whole output: `parse(name, text)` is push(text) then flush(), summed. */
export function parseReasoning(name: ReasoningParserName, text: string): { reasoning: string | null; content: string } {
  const parser = new ReasoningParser(name);
  parser.push(text);
  parser.flush();
  return { reasoning: parser.hasReasoning ? parser.reasoning : null, content: parser.content };
}

/** Length of the longest proper prefix of `tag` that `text` ends with. */
function partialSuffix(text: string, tag: string): number {
  for (let n = Math.min(tag.length - 1, text.length); n > 0; n--) if (text.endsWith(tag.slice(0, n))) return n;
  return 0;
}
