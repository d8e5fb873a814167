/**
 * Which generated tokens are the output, and why the output ended: decided one token at a time.
 *
 * A speculative round produces several tokens at once. Every rule here looks at one token at a
 * time, in order, so the output (tokens, text, text offsets, finish reason) is a function of the
 * token sequence alone: the same under every draft policy and K, and the same streamed or not.
 * For each token t_i in turn:
 *
 * 1. EOS (one of `eosTokenIds`): the output ends before it; finish reason `stop`. It is not part
 *    of the sequence.
 * 2. Otherwise t_i joins the sequence. Its text offset is the length in UTF-16 code units (JS
 *    string length) of the complete text decoded from t_1..t_{i-1}: a byte token inside a
 *    multi-byte character starts where that character starts.
 * 3. Stop strings: the text so far (complete characters only) is searched after every token. The
 *    first token that completes a stop string ends the output at that match's start p (the
 *    earliest, if this token completes several). The text is cut at p, and the output tokens are
 *    those whose text offset is <= p: up to the token holding the stop string's first character
 *    (all of its byte tokens, for a multi-byte character). Finish reason `stop`.
 * 4. Max tokens: the `maxTokens`-th token of the sequence, unless rule 3 ended the output on it,
 *    ends it with finish reason `length`.
 * 5. `end(reason)` from outside: `abort` when cancelled (between rounds), or the caller's own
 *    reason.
 *
 * When the output ends by rule 1, 4 or 5, the text still held back (an incomplete UTF-8
 * character, released as U+FFFD; text that could have begun a stop string) is released and
 * searched for stop strings once more (a match there cuts it as in rule 3).
 *
 * Streaming (`take`): text is released once no stop string can include it (stop-strings.ts), and
 * token j is decided once its text offset is at or before the end of the released text, since
 * no later stop string can start before that point.
 */
import { IncrementalDetokenizer } from '../text/detokenizer.js';
import { StopStringMatcher } from '../text/stop-strings.js';
import type { TextTokenizer } from '../text/tokenizer.js';

/** `stop`: EOS or a stop string; `length`: max tokens or the context; `abort`: cancelled by the caller. */
export type FinishReason = 'stop' | 'length' | 'abort';

/**
 * What `push` made of a token. `continue`: it joined the sequence and the output goes on;
 * `end`: it joined the sequence and the output has ended (at it or, for a stop string, before
 * it); `eos`: it ends the output and is not part of the sequence.
 */
export type TokenVerdict = 'continue' | 'end' | 'eos';

export interface OutputRules {
  /** Most tokens in the sequence (already bounded by the context). */
  maxTokens: number;
  /** Tokens that end the output (empty: none, as with vLLM's `ignore_eos`). */
  eosTokenIds: Iterable<number>;
  /** Strings that end the output (the text stops before the first); need `tokenizer`. */
  stop?: readonly string[];
  /** Turns tokens into text; without it only tokens are decided (no text, offsets or stop strings). */
  tokenizer?: Pick<TextTokenizer, 'decode'>;
}

/** What became final since the previous `take`. */
export interface OutputDelta {
  /** Output text released. */
  text: string;
  /** Output tokens decided, with their text offsets (empty without a tokenizer). */
  tokenIds: number[];
  textOffsets: number[];
  /** Index of `tokenIds[0]` in the output. */
  from: number;
}

export class OutputDecider {
  /** The sequence: every token pushed except an ending EOS (the output is a prefix of it). */
  readonly sequence: number[] = [];
  private readonly offsets: number[] = [];
  private readonly eos: Set<number>;
  private readonly detokenizer: IncrementalDetokenizer | undefined;
  private readonly stops: StopStringMatcher;
  private released = '';
  /** Output tokens, once the output has ended. */
  private kept: number | undefined;
  private reason: FinishReason | undefined;
  private takenText = 0;
  private takenTokens = 0;

  constructor(private readonly rules: OutputRules) {
    this.eos = new Set(rules.eosTokenIds);
    this.detokenizer = rules.tokenizer && new IncrementalDetokenizer(rules.tokenizer, { skipSpecialTokens: true });
    const stop = rules.stop ?? [];
    if (stop.length > 0 && !this.detokenizer) throw new RangeError('stop strings need a tokenizer');
    this.stops = new StopStringMatcher(stop);
  }

  get done(): boolean {
    return this.reason !== undefined;
  }

  get finishReason(): FinishReason | undefined {
    return this.reason;
  }

  /** The output text released so far (all of it once done). */
  get text(): string {
    return this.released;
  }

  /** Output tokens decided so far (all of them once done). */
  get tokenIds(): number[] {
    return this.sequence.slice(0, this.decided());
  }

  /** Text offset of each token of `tokenIds` (empty without a tokenizer). */
  get textOffsets(): number[] {
    return this.detokenizer ? this.offsets.slice(0, this.decided()) : [];
  }

  /** Decide the next token (rules 1-4). After the end, tokens are ignored (`end`). */
  push(token: number): TokenVerdict {
    if (this.done) return 'end';
    if (this.eos.has(token)) {
      this.end('stop');
      return 'eos';
    }
    this.sequence.push(token);
    if (this.detokenizer) {
      this.offsets.push(this.detokenizer.text.length);
      if (this.release(this.detokenizer.push([token]))) return 'end';
    }
    if (this.sequence.length >= this.rules.maxTokens) {
      this.end('length');
      return 'end';
    }
    return 'continue';
  }

  /** End the output (rule 5; a no-op once done), releasing what is held back. */
  end(reason: FinishReason): void {
    if (this.done) return;
    if (this.detokenizer && this.release(this.detokenizer.flush())) return;
    this.released += this.stops.flush();
    this.kept = this.sequence.length;
    this.reason = reason;
  }

  /** What became final since the previous call (for streaming). */
  take(): OutputDelta {
    const decided = this.decided();
    const from = this.takenTokens;
    const delta: OutputDelta = {
      text: this.released.slice(this.takenText),
      tokenIds: this.sequence.slice(from, decided),
      textOffsets: this.detokenizer ? this.offsets.slice(from, decided) : [],
      from,
    };
    this.takenText = this.released.length;
    this.takenTokens = decided;
    return delta;
  }

  /**
   * New text through the stop matcher; on a match the output ends (rule 3).
   * @returns whether a stop string matched
   */
  private release(text: string): boolean {
    const start = this.released.length;
    const result = this.stops.push(text);
    this.released += result.emit;
    if (!result.stopped) return false;
    // The stop string starts where the released text ends.
    const at = start + result.emit.length;
    this.kept = this.countUpTo(at);
    this.reason = 'stop';
    return true;
  }

  /** Output tokens decided: all once done; else those no stop string can cut off. */
  private decided(): number {
    if (this.kept !== undefined) return this.kept;
    return this.detokenizer ? this.countUpTo(this.released.length) : this.sequence.length;
  }

  /** Tokens whose text offset is <= `at` (offsets never decrease). */
  private countUpTo(at: number): number {
    let n = this.offsets.length;
    while (n > 0 && this.offsets[n - 1]! > at) n--;
    return n;
  }
}
