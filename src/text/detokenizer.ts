/**
 * Streaming detokenization: turns token ids, pushed as they are generated, into text deltas.
 *
 * Each push decodes only a small window: the tokens of the previously emitted chunk (for
 * context, so decoders that strip a leading space or merge across tokens see their
 * neighbours) plus the tokens not emitted yet, as in vLLM's and transformers' TextStreamer's
 * incremental detokenization. The delta is the window's text beyond the context's text.
 *
 * A byte-level model can end a push in the middle of a UTF-8 character; the decoder then
 * ends in U+FFFD. That last character is held back until a later token completes it (or
 * `flush`), so no broken character is ever emitted; text before it is emitted at once. Should
 * the held-back window grow long (every push ending mid-character), it is closed at its last
 * complete token boundary, keeping the cost of a push proportional to the tokens it adds.
 */
import type { TextTokenizer } from './tokenizer.js';

/** Once this many tokens are unemitted, the window is closed at its last complete character. */
const MAX_PENDING_TOKENS = 16;
/** An incomplete UTF-8 character spans at most 3 bytes, so at most this many tokens. */
const MAX_INCOMPLETE_TOKENS = 3;
const REPLACEMENT = '\uFFFD';

export interface DetokenizerOptions {
  skipSpecialTokens?: boolean;
}

export class IncrementalDetokenizer {
  private readonly ids: number[] = [];
  /** Start of the context window (tokens of the last closed chunk). */
  private prefixOffset = 0;
  /** First token not yet fully emitted. */
  private readOffset = 0;
  /** Characters of the open window (beyond the context text) already emitted. */
  private partialChars = 0;
  private emitted = '';

  constructor(
    private readonly tokenizer: Pick<TextTokenizer, 'decode'>,
    private readonly opts: DetokenizerOptions = {},
  ) {}

  /** Add generated ids; returns the text they complete (possibly ''). */
  push(ids: readonly number[]): string {
    for (const id of ids) this.ids.push(id);
    if (this.readOffset === this.ids.length) return '';
    const { prefixText, windowText } = this.decodeWindow();
    if (!windowText.endsWith(REPLACEMENT)) return this.closeWindow(prefixText, windowText, this.ids.length);

    if (this.ids.length - this.readOffset >= MAX_PENDING_TOKENS) {
      // Keep the window small: close it at the last token boundary where the text is
      // complete; the incomplete tail becomes the new window. If there is none (the model
      // emits invalid bytes), stop holding back.
      const stop = Math.max(this.readOffset, this.ids.length - 1 - MAX_INCOMPLETE_TOKENS);
      for (let end = this.ids.length - 1; end > stop; end--) {
        const text = this.decode(this.ids.slice(this.prefixOffset, end));
        if (!text.endsWith(REPLACEMENT)) return this.closeWindow(prefixText, text, end);
      }
      return this.closeWindow(prefixText, windowText, this.ids.length);
    }

    // Emit what is stable now: everything before the trailing replacement character.
    const stableEnd = windowText.length - 1;
    const start = prefixText.length + this.partialChars;
    if (stableEnd <= start) return '';
    this.partialChars = stableEnd - prefixText.length;
    return this.emit(windowText.slice(start, stableEnd));
  }

  /** End of generation: returns everything still held back (may contain U+FFFD). */
  flush(): string {
    if (this.readOffset === this.ids.length) return '';
    const { prefixText, windowText } = this.decodeWindow();
    return this.closeWindow(prefixText, windowText, this.ids.length);
  }

  /** All text emitted so far. */
  get text(): string {
    return this.emitted;
  }

  /** All ids pushed so far. */
  get tokenIds(): readonly number[] {
    return this.ids;
  }

  private decode(ids: number[]): string {
    return this.tokenizer.decode(ids, { skipSpecialTokens: this.opts.skipSpecialTokens ?? false });
  }

  private decodeWindow(): { prefixText: string; windowText: string } {
    return {
      prefixText: this.decode(this.ids.slice(this.prefixOffset, this.readOffset)),
      windowText: this.decode(this.ids.slice(this.prefixOffset)),
    };
  }

  /**
   * Emit the window's text up to token `end` (`text` is its decoding) and make the tokens
   * since the last close the next context. Text already emitted past `end` stays counted.
   */
  private closeWindow(prefixText: string, text: string, end: number): string {
    const emittedTo = prefixText.length + this.partialChars;
    this.prefixOffset = this.readOffset;
    this.readOffset = end;
    this.partialChars = Math.max(0, emittedTo - text.length);
    return this.emit(text.slice(emittedTo));
  }

  private emit(delta: string): string {
    this.emitted += delta;
    return delta;
  }
}
