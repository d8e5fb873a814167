/**
 * FR-Spec token maps (Zhao et al. 2025, "FR-Spec: Accelerating Large-Vocabulary Language Models
 * via Frequency-Ranked Speculative Sampling", arXiv 2502.14856): the token ids a draft's lm_head
 * keeps, the most frequent ones of a corpus (or of the model's own outputs) ranked by count.
 *
 * The file is what `--speculative-token-map` (SGLang's flag name) reads. SGLang stores a PyTorch
 * tensor; specd stores JSON that any language reads:
 *
 *   {"format": "specd-token-map", "token_ids": [ids, ascending], "vocab_size": V, "source": "..."}
 *
 * A bare JSON array of ids is read as well. Why it is exact: the draft's q is zero outside the
 * map, so the draft never proposes those tokens, and the acceptance rule's residual
 * norm(max(0, p - q)) still covers every target token (speculative.ts / acceptance.ts); greedy
 * rounds compare the target's argmax over the whole vocabulary.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { ModelLoadError } from '../errors.js';

/** The `format` field of a token-map file. */
export const TOKEN_MAP_FORMAT = 'specd-token-map';

/** Sizes the FR-Spec paper evaluates (16k-64k); `specd models token-map --size` defaults to the middle one. */
export const DEFAULT_TOKEN_MAP_SIZE = 32768;

export interface TokenMap {
  /** Kept token ids, ascending, unique. // [size] */
  ids: Int32Array;
  /** The vocabulary the ids index (the model's vocab_size when written by specd). */
  vocabSize?: number;
  /** What the frequencies were counted on (free text). */
  source?: string;
}

/**
 * Token frequencies: `counts[id]` occurrences. Grows with `add`.
 */
export class TokenCounts {
  readonly counts: Float64Array;
  total = 0;

  constructor(readonly vocabSize: number) {
    this.counts = new Float64Array(vocabSize);
  }

  /** Count each id of `ids`; ids outside [0, vocabSize) are a RangeError. */
  add(ids: readonly number[]): void {
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) throw new RangeError(`token id ${id} is outside the vocabulary of ${this.vocabSize}`);
      this.counts[id]!++;
    }
    this.total += ids.length;
  }

  /**
   * The `size` most frequent ids, ranked by count (ties: the lower id), with `always` kept
   * whatever their count (special and end-of-sequence tokens, as FR-Spec keeps them).
   * @returns ids ascending // [min(size, vocabSize)]
   * @throws RangeError when `always` alone holds more than `size` ids or `size` < 1
   */
  top(size: number, always: Iterable<number> = []): TokenMap {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`a token map needs at least one token, not ${size}`);
    const n = Math.min(size, this.vocabSize);
    const kept = new Set<number>();
    for (const id of always) if (id >= 0 && id < this.vocabSize) kept.add(id);
    if (kept.size > n) throw new RangeError(`${kept.size} special tokens do not fit a token map of ${n}`);
    const order = Int32Array.from({ length: this.vocabSize }, (_, i) => i).sort((a, b) => this.counts[b]! - this.counts[a]! || a - b);
    for (let r = 0; kept.size < n; r++) kept.add(order[r]!);
    return { ids: Int32Array.from(kept).sort(), vocabSize: this.vocabSize };
  }

  /** Share of all counted tokens that fall inside `map` (what a draft restricted to it can propose). */
  coverage(map: TokenMap): number {
    if (this.total === 0) return 0;
    let inside = 0;
    for (const id of map.ids) inside += this.counts[id] ?? 0;
    return inside / this.total;
  }
}

/** Writes `map` to `path` (format above). */
export function writeTokenMap(path: string, map: TokenMap): void {
  const body = { format: TOKEN_MAP_FORMAT, vocab_size: map.vocabSize, source: map.source, token_ids: [...map.ids] };
  writeFileSync(path, `${JSON.stringify(body)}\n`);
}

/**
 * Reads a token map (format above).
 * @param vocabSize the draft's vocabulary: every id must be below it
 * @throws ModelLoadError naming the file for unreadable JSON, a missing or empty `token_ids`,
 *   ids that are not integers in [0, vocabSize), and repeated ids
 */
export function readTokenMap(path: string, vocabSize: number): TokenMap {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new ModelLoadError(`${path}: not a token map (${(err as Error).message}); write one with \`specd models token-map\``, path, 'speculative_token_map');
  }
  const body = Array.isArray(raw) ? { token_ids: raw } : (raw as Record<string, unknown> | null);
  const list = body?.token_ids;
  if (!Array.isArray(list) || list.length === 0) throw new ModelLoadError(`${path}: a token map needs a non-empty "token_ids" list`, path, 'speculative_token_map');
  const ids = new Int32Array(list.length);
  list.forEach((v, i) => {
    if (!Number.isInteger(v) || (v as number) < 0 || (v as number) >= vocabSize) {
      throw new ModelLoadError(`${path}: token id ${JSON.stringify(v)} is not an id of the draft's vocabulary of ${vocabSize}`, path, 'speculative_token_map');
    }
    ids[i] = v as number;
  });
  ids.sort();
  for (let i = 1; i < ids.length; i++) {
    if (ids[i] === ids[i - 1]) throw new ModelLoadError(`${path}: token id ${ids[i]} appears twice`, path, 'speculative_token_map');
  }
  const source = typeof body?.source === 'string' ? body.source : undefined;
  return { ids, vocabSize: typeof body?.vocab_size === 'number' ? body.vocab_size : undefined, source };
}
