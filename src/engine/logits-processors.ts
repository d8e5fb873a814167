/**
 * Logits processors that depend on the text generated so far: presence and frequency
 * penalties (OpenAI's definition) and a per-token logit bias.
 *
 *   logit[t] += bias[t] - frequency_penalty * c[t] - presence_penalty * (c[t] > 0)
 *
 * where c[t] counts t in the output so far (the prompt does not count, as in OpenAI's API and
 * vLLM). Speculative decoding stays exact only if the draft's and the target's logits are
 * processed identically at every position: for candidate y_i (and for the target's row p_i
 * that verifies it) the counts cover the verified output plus the candidates y_1..y_{i-1}
 * before it. `apply` takes those pending candidates explicitly.
 *
 * A token constraint (a grammar, grammar/constraint.ts) masks the same rows: tokens it does not
 * allow after the verified output + pending candidates get -Infinity. Its masks are computed
 * asynchronously, so `prepare(pending)` is awaited before `apply(row, pending)`.
 */

/** A grammar's state for one sequence: which tokens may come next. */
export interface TokenConstraint {
  /** Compute the mask after the verified output + `pending`; await it before `maskRow` / `forcedToken` with the same pending. */
  prepare(pending: readonly number[]): Promise<void>;
  /** Set the logits of the tokens not allowed after verified output + `pending` to -Infinity, in place. // row: [vocab] */
  maskRow(row: Float32Array, pending: readonly number[]): void;
  /** The only token allowed after verified output + `pending`, when exactly one is (and it does not end the output). */
  forcedToken(pending: readonly number[]): number | undefined;
  /** Record tokens appended to the verified output (the matcher rolls back past candidates that were not). */
  accept(tokens: readonly number[]): void;
  /** Free the matcher. */
  release(): void;
}

export interface LogitsAdjustments {
  /** Subtracted once from every token already in the output. Range [-2, 2] in the API; 0 = off. */
  presencePenalty?: number;
  /** Subtracted per occurrence of a token in the output. Range [-2, 2] in the API; 0 = off. */
  frequencyPenalty?: number;
  /** Added to the logits of the given token ids. Range [-100, 100] in the API. */
  logitBias?: Readonly<Record<number, number>>;
}

export class LogitsProcessor {
  private readonly presence: number;
  private readonly frequency: number;
  private readonly bias: [number, number][];
  /** c[t]: occurrences of token t in the verified output. */
  private readonly counts = new Map<number, number>();

  constructor(
    adjustments: LogitsAdjustments = {},
    /** The grammar, when the output is constrained. */
    readonly constraint?: TokenConstraint,
  ) {
    this.presence = adjustments.presencePenalty ?? 0;
    this.frequency = adjustments.frequencyPenalty ?? 0;
    this.bias = Object.entries(adjustments.logitBias ?? {})
      .map(([id, b]): [number, number] => [Number(id), b])
      .filter(([, b]) => b !== 0);
  }

  /** Whether any adjustment or constraint is switched on (when not, rows pass through untouched). */
  get active(): boolean {
    return this.presence !== 0 || this.frequency !== 0 || this.bias.length > 0 || this.constraint !== undefined;
  }

  /** With a constraint: compute its mask after the verified output + `pending`; undefined (nothing to await) without one. */
  prepare(pending: readonly number[] = []): Promise<void> | undefined {
    return this.constraint?.prepare(pending);
  }

  /** Record tokens appended to the verified output. */
  accept(tokens: readonly number[]): void {
    this.constraint?.accept(tokens);
    if (this.presence === 0 && this.frequency === 0) return;
    for (const t of tokens) this.counts.set(t, (this.counts.get(t) ?? 0) + 1);
  }

  /**
   * The processed copy of one logits row at the position after the verified output and then
   * `pending` (candidates not verified yet); `row` itself is not modified. With a constraint,
   * `prepare(pending)` must have been awaited first.
   * @param row logits // [vocab]
   */
  apply(row: Float32Array, pending: readonly number[] = []): Float32Array {
    if (!this.active) return row;
    const out = row.slice(); // a copy (Float32Array.from would go through the iterator)
    this.constraint?.maskRow(out, pending);
    for (const [id, b] of this.bias) if (id >= 0 && id < out.length) out[id]! += b;
    if (this.presence === 0 && this.frequency === 0) return out;
    let counts: ReadonlyMap<number, number> = this.counts;
    if (pending.length > 0) {
      const merged = new Map(this.counts);
      for (const t of pending) merged.set(t, (merged.get(t) ?? 0) + 1);
      counts = merged;
    }
    for (const [t, c] of counts) {
      if (t >= 0 && t < out.length) out[t]! -= this.frequency * c + this.presence;
    }
    return out;
  }
}
