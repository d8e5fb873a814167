/**
 * One sequence's grammar state under speculative decoding.
 *
 * The xgrammar matcher holds the verified output and, beyond it, a speculative path: the
 * candidates y_1..y_i of the current round. The mask at "verified output + y_1..y_i" is what the
 * draft's logits are masked with when it proposes y_{i+1}, and the same mask is applied to the
 * target's row p_{i+1} that verifies it, so draft and target sample from the same masked
 * distributions and the acceptance rule stays exact with respect to the masked target. Masks are
 * computed once per path position and reused (the draft step and the verification row of a
 * position share one). After the verdict `accept` rolls the matcher back to the accepted prefix
 * and advances it over the emitted tokens.
 */
import type { GrammarMatcher } from '@mlc-ai/web-xgrammar';
import type { TokenConstraint } from '../engine/logits-processors.js';
import { GrammarError } from './errors.js';

/** Bits per bitmask word (xgrammar's masks are int32 words, bit t % 32 of word t / 32 set = token t allowed). */
const WORD_BITS = 32;

export class GrammarConstraint implements TokenConstraint {
  /** Tokens the matcher holds beyond the verified output. */
  private path: number[] = [];
  /** masks[i]: allowed tokens after the verified output + path[0..i-1] // each [ceil(vocab / 32)] */
  private masks: Int32Array[] = [];
  /** Microseconds spent computing masks, and applying them to logits rows (for benchmarks). */
  maskMicros = 0;
  applyMicros = 0;
  masksComputed = 0;
  private readonly stop: Set<number>;
  private released = false;

  constructor(
    private readonly matcher: GrammarMatcher,
    private readonly vocabSize: number,
    stopTokenIds: readonly number[],
  ) {
    this.stop = new Set(stopTokenIds);
  }

  async prepare(pending: readonly number[]): Promise<void> {
    if (this.masks[pending.length] !== undefined && this.onPath(pending)) return;
    this.follow(pending, pending.length);
    if (this.masks[pending.length] === undefined) {
      const start = performance.now();
      // After the stop token nothing may follow (xgrammar refuses to compute that mask).
      this.masks[pending.length] = this.matcher.isTerminated() ? new Int32Array(Math.ceil(this.vocabSize / WORD_BITS)) : await this.matcher.getNextTokenBitmask();
      this.maskMicros += (performance.now() - start) * 1000;
      this.masksComputed++;
    }
  }

  maskRow(row: Float32Array, pending: readonly number[]): void {
    const start = performance.now();
    applyMask(this.maskAt(pending), row, this.vocabSize);
    this.applyMicros += (performance.now() - start) * 1000;
  }

  /** Whether no token at all may follow `pending` while the grammar is not complete (a grammar with no finite output). Call after `prepare(pending)`. */
  allowsNothing(pending: readonly number[]): boolean {
    if (this.matcher.isTerminated()) return false;
    return this.maskAt(pending).every((bits) => bits === 0);
  }

  forcedToken(pending: readonly number[]): number | undefined {
    return onlyAllowedToken(this.maskAt(pending), this.stop);
  }

  accept(tokens: readonly number[]): void {
    if (this.released) return; // the generation ended in this round
    this.follow(tokens, tokens.length);
    this.path = [];
    this.masks = this.masks[tokens.length] ? [this.masks[tokens.length]!] : [];
  }

  get terminated(): boolean {
    return !this.released && this.matcher.isTerminated();
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.matcher.dispose();
  }

  /** The mask after the verified output + `pending` (call after `prepare(pending)`). // [ceil(vocab / 32)] */
  maskAt(pending: readonly number[]): Int32Array {
    return preparedMask(this.masks, this.path, pending);
  }

  private onPath(pending: readonly number[]): boolean {
    return isOnPath(this.path, pending);
  }

  /** Move the matcher to verified output + tokens[0..n-1]: roll back to the shared prefix, then advance. */
  private follow(tokens: readonly number[], n: number): void {
    let common = 0;
    while (common < n && common < this.path.length && this.path[common] === tokens[common]) common++;
    if (this.path.length > common) {
      this.matcher.rollBack(this.path.length - common);
      this.path.length = common;
      this.masks.length = Math.min(this.masks.length, common + 1);
    }
    for (let i = common; i < n; i++) {
      const token = tokens[i]!;
      // Masked sampling only proposes allowed tokens; a refusal means the grammar cannot go on (it admits no output from here).
      if (!this.matcher.acceptToken(token)) throw new GrammarError(`the grammar admits no output after ${this.path.length} tokens (token ${token} was refused)`);
      this.path.push(token);
    }
  }
}

/**
 * Set the logits of tokens a mask does not allow to -Infinity, in place.
 * @param mask xgrammar's bitmask // [ceil(vocabSize / 32)] int32 words, bit t % 32 of word t / 32 set = token t allowed
 * @param row logits // [logits width]; ids at or past `vocabSize` (padding) are never allowed
 * @param vocabSize tokens the mask covers (the tokenizer's vocabulary)
 */
export function applyMask(mask: Int32Array, row: Float32Array, vocabSize: number): void {
  const n = Math.min(row.length, vocabSize);
  for (let w = 0; w * WORD_BITS < n; w++) {
    const bits = mask[w]!;
    if (bits === -1) continue; // all 32 allowed
    const end = Math.min(n, (w + 1) * WORD_BITS);
    for (let t = w * WORD_BITS; t < end; t++) if (((bits >>> (t % WORD_BITS)) & 1) === 0) row[t] = -Infinity;
  }
  // Ids past the tokenizer's vocabulary (padding in the logits) are never allowed.
  for (let t = n; t < row.length; t++) row[t] = -Infinity;
}

/**
 * The one token a mask allows, when exactly one is and it is not a stop token (jump-forward).
 * @param mask as in applyMask // [ceil(vocabSize / 32)]
 */
export function onlyAllowedToken(mask: Int32Array, stop: ReadonlySet<number>): number | undefined {
  let found: number | undefined;
  for (let w = 0; w < mask.length; w++) {
    let bits = mask[w]!;
    while (bits !== 0) {
      if (found !== undefined) return undefined;
      const low = bits & -bits;
      found = w * WORD_BITS + (31 - Math.clz32(low));
      bits ^= low;
    }
  }
  return found === undefined || stop.has(found) ? undefined : found;
}

/** Whether `pending` is a prefix of the tokens a constraint has been prepared along (`path`). */
export function isOnPath(path: readonly number[], pending: readonly number[]): boolean {
  if (pending.length > path.length) return false;
  for (let i = 0; i < pending.length; i++) if (path[i] !== pending[i]) return false;
  return true;
}

/**
 * The mask prepared for the verified output + `pending`: `masks[k]` is the mask after the first k
 * tokens of `path`. // [ceil(vocab / 32)]
 * @throws Error when prepare() was not called with these pending tokens (an engine bug)
 */
export function preparedMask(masks: readonly (Int32Array | undefined)[], path: readonly number[], pending: readonly number[]): Int32Array {
  const mask = masks[pending.length];
  if (!mask || !isOnPath(path, pending)) throw new Error('grammar mask used before prepare() with the same pending tokens');
  return mask;
}
