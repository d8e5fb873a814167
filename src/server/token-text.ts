/**
 * How a single token is shown in `logprobs`: its text and its UTF-8 bytes.
 *
 * A byte-level model's token can be part of a character; decoded alone it is U+FFFD. Its bytes
 * then come from the vocabulary entry (GPT-2's byte-to-unicode alphabet, or SentencePiece's
 * `<0xNN>` byte-fallback tokens), and its text is written as OpenAI does, `bytes:\xe2\x80`.
 */
import type { TextTokenizer } from '../text/tokenizer.js';

export interface TokenText {
  token: string;
  bytes: number[];
}

const REPLACEMENT = '\uFFFD';

/** GPT-2's byte <-> printable-unicode table, as characters -> bytes. */
const BYTE_LEVEL_DECODER: ReadonlyMap<string, number> = (() => {
  const printable: number[] = [];
  for (let b = '!'.charCodeAt(0); b <= '~'.charCodeAt(0); b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const map = new Map<string, number>();
  for (const b of printable) map.set(String.fromCharCode(b), b);
  let n = 0;
  for (let b = 0; b < 256; b++) if (!printable.includes(b)) map.set(String.fromCharCode(256 + n++), b);
  return map;
})();

/** Bytes of a vocabulary entry, if it is written in a byte alphabet. */
function vocabBytes(entry: string): number[] | undefined {
  const fallback = /^<0x([0-9A-Fa-f]{2})>$/.exec(entry);
  if (fallback) return [parseInt(fallback[1]!, 16)];
  const bytes: number[] = [];
  for (const ch of entry) {
    const b = BYTE_LEVEL_DECODER.get(ch);
    if (b === undefined) return undefined;
    bytes.push(b);
  }
  return bytes;
}

/** Caches each token's text; one per tokenizer. */
export class TokenTexts {
  private readonly cache = new Map<number, TokenText>();

  constructor(private readonly tokenizer: TextTokenizer) {}

  of(id: number): TokenText {
    let t = this.cache.get(id);
    if (!t) {
      t = this.compute(id);
      this.cache.set(id, t);
    }
    return t;
  }

  private compute(id: number): TokenText {
    const text = this.tokenizer.decode([id]);
    if (!text.includes(REPLACEMENT)) return { token: text, bytes: [...Buffer.from(text, 'utf8')] };
    const bytes = vocabBytes(this.tokenizer.tokenOf(id) ?? '');
    if (!bytes) return { token: text, bytes: [...Buffer.from(text, 'utf8')] };
    const decoded = Buffer.from(bytes).toString('utf8');
    if (!decoded.includes(REPLACEMENT)) return { token: decoded, bytes };
    return { token: `bytes:${bytes.map((b) => `\\x${b.toString(16).padStart(2, '0')}`).join('')}`, bytes };
  }
}
