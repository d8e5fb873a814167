/**
 * The one place every forward pass of a scheduler iteration goes through (prompt pieces, the
 * draft's catching up, draft steps, verification): it times the pass, reports it (`PassRecord`,
 * the scheduler's `onPass`) and spends the iteration's token budget (vLLM's
 * max_num_batched_tokens, here counting the draft's tokens as well as the target's).
 */
import type { KVCache } from './kv-cache.js';
import type { DecoderModel, ForwardOutputs } from './model.js';

/**
 * What a pass did: `prefill`, a piece of a prompt fed to the target; `catch-up`, tokens fed to a
 * draft that lagged (the prompt, or tokens of rounds that did not draft); `draft`, one draft step
 * (or a round's draft phase in one run); `verify`, the target's verification of a round.
 */
export type PassKind = 'prefill' | 'catch-up' | 'draft' | 'verify';

/** One forward pass of a batch. */
export interface PassRecord {
  kind: PassKind;
  /** Sequences in the pass. */
  sequences: number;
  /** Tokens fed, padding excluded. */
  tokens: number;
  /** Wall time of the pass, milliseconds. */
  ms: number;
  /** The scheduler iteration the pass belongs to (1, 2, ... per scheduler). */
  iteration?: number;
}

export class IterationPasses {
  private spent = 0;
  /** Wall time of the last pass, milliseconds. */
  lastMs = 0;

  /**
   * @param budget tokens the iteration's passes may feed (they may go over it: a pass is never
   *   cut, and the scheduler decides what to run while some is left)
   * @param onPass told about every pass
   * @param iteration the iteration's number, for the records
   */
  constructor(
    readonly budget: number,
    private readonly onPass?: (pass: PassRecord) => void,
    readonly iteration?: number,
  ) {}

  /** Tokens left of the budget (negative once a pass went over it). */
  get left(): number {
    return this.budget - this.spent;
  }

  /** Tokens the iteration's passes have fed. */
  get tokens(): number {
    return this.spent;
  }

  /**
   * One pass of `model` over the sequences of `caches`, sequence b feeding `inputs[b]`. A single
   * sequence runs `forwardWithHidden` with logits for its last `rows` positions (0: none, for a
   * prompt piece); several run `forwardBatch` (every row's logits).
   * @returns per sequence, as `DecoderModel.forwardBatch`
   * @throws what the model's pass throws
   */
  async forward(model: DecoderModel, kind: PassKind, caches: readonly KVCache[], inputs: readonly (readonly number[])[], rows = Infinity): Promise<ForwardOutputs[]> {
    const tokens = inputs.reduce((n, x) => n + x.length, 0);
    return this.run(kind, inputs.length, tokens, async () =>
      caches.length === 1 ? [await model.forwardWithHidden(caches[0]!, inputs[0]!, rows)] : model.forwardBatch(caches, inputs),
    );
  }

  /**
   * A pass that is not a plain forward (a draft phase in one run, draft-phase.ts): `pass` runs
   * it; it is timed, reported and spends `tokens` of the budget like any other.
   * @param tokens tokens fed, or how many its result says were fed
   */
  async run<T>(kind: PassKind, sequences: number, tokens: number | ((out: T) => number), pass: () => Promise<T>): Promise<T> {
    const start = performance.now();
    const out = await pass();
    this.lastMs = performance.now() - start;
    if (typeof tokens === 'function') tokens = tokens(out);
    this.spent += tokens;
    this.onPass?.({ kind, sequences, tokens, ms: this.lastMs, iteration: this.iteration });
    return out;
  }
}
