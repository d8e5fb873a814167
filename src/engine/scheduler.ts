/**
 * Continuous batching (iteration-level scheduling, as in Orca, vLLM and TGI): the generations
 * of one engine run their rounds together, one forward pass per draft step and one target pass
 * per round for all of them, so each pass reads the weights once for the whole batch.
 *
 * A generation asks for its next round with `step(gen)`; an iteration takes every generation
 * that has asked, and
 *
 * 1. runs one round over those whose prompt is in (`Generation.prefillPending` = 0): the draft
 *    steps in lock-step, each sequence drafting until its own policy stops it (`none`, `fixed`,
 *    `confidence` and `specdec++` mix freely; sequences with different draft models, e.g. the
 *    head's, get one pass per model; a sequence alone drafts in one run where it can,
 *    draft-phase.ts), then one target pass verifying every sequence's candidates; acceptance,
 *    rollback, RNG, stop conditions and logprobs stay per sequence (speculative.ts), so each
 *    output is what it would be alone;
 * 2. feeds pieces of new prompts (Generation.prefill, whole PREFILL_CHUNK pieces) within what is
 *    left of `maxBatchTokens` after the round, at least one piece per iteration, oldest first,
 *    so that a long prompt does not stall the others' decoding.
 *
 * Generations join between iterations (the first `step` after their prompt is in) and leave
 * when they stop asking (done, cancelled, or their consumer is slow: a round is never waited on).
 * Batched passes need caches written in place (model.ts `forwardBatch`); other caches still run
 * in lock-step, one sequence per pass.
 */
import type { ForwardOutputs, DecoderModel } from './model.js';
import type { Generation } from './speculative.js';

export interface SchedulerOptions {
  /**
   * Tokens the passes of one iteration feed at most (vLLM's max_num_batched_tokens): a round's
   * sequences stop drafting once their verification would feed more, and prompt pieces get
   * what the round leaves (at least one piece).
   */
  maxBatchTokens: number;
  /** Told about every pass (metrics, the cost model). */
  onPass?: (pass: PassRecord) => void;
}

/** One forward pass of a batch. */
export interface PassRecord {
  kind: 'draft' | 'verify' | 'prefill';
  /** Sequences in the pass. */
  sequences: number;
  /** Tokens fed, padding excluded. */
  tokens: number;
  /** Wall time of the pass, milliseconds. */
  ms: number;
}

interface Waiter {
  resolve: (emitted: number[]) => void;
  reject: (err: unknown) => void;
}

export class BatchScheduler {
  /** Generations waiting for their next round, in the order they asked. */
  private readonly waiting = new Map<Generation, Waiter>();
  private looping = false;

  /** @throws RangeError when maxBatchTokens is not a positive integer */
  constructor(readonly options: SchedulerOptions) {
    if (!Number.isInteger(options.maxBatchTokens) || options.maxBatchTokens < 1) throw new RangeError(`maxBatchTokens must be a positive integer, got ${options.maxBatchTokens}`);
  }

  /**
   * Run `gen`'s next round with the other generations' (its prompt first, when not yet in).
   * @returns the tokens the round added to the sequence, as Generation.step
   * @throws what the batch's passes throw; the generation's caches are then released
   */
  step(gen: Generation): Promise<number[]> {
    if (gen.done) return Promise.resolve([]);
    if (this.waiting.has(gen)) return Promise.reject(new Error('this generation already waits for a round'));
    return new Promise<number[]>((resolve, reject) => {
      this.waiting.set(gen, { resolve, reject });
      if (!this.looping) {
        this.looping = true;
        setImmediate(() => void this.loop());
      }
    });
  }

  private async loop(): Promise<void> {
    while (this.waiting.size > 0) {
      await this.iteration();
      // Let the generations that got their round ask for the next one before it starts.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    this.looping = false;
  }

  private async iteration(): Promise<void> {
    const gens = [...this.waiting.keys()].filter((g) => {
      if (!g.done) return true;
      this.settle(g, []); // finished while waiting (cancelled)
      return false;
    });
    const ready = gens.filter((g) => g.prefillPending === 0);
    const filling = gens.filter((g) => g.prefillPending > 0);
    let budget = this.options.maxBatchTokens;
    if (ready.length > 0) {
      try {
        budget -= await this.round(ready);
      } catch (err) {
        for (const g of ready) this.fail(g, err); // a failed pass: every generation in it
      }
    }
    // Prompt pieces, one pass each, oldest generation first; at least one per iteration.
    let pieces = 0;
    for (const g of filling) {
      while (g.prefillPending > 0 && (pieces === 0 || budget > 0)) {
        const start = performance.now();
        try {
          const fed = await g.prefill();
          budget -= fed;
          pieces++;
          this.options.onPass?.({ kind: 'prefill', sequences: 1, tokens: fed, ms: performance.now() - start });
        } catch (err) {
          this.fail(g, err);
          break;
        }
      }
      if (budget <= 0) break;
    }
  }

  /**
   * One round over `gens`; returns the tokens its target pass fed. A generation whose own step
   * fails (its grammar, its head) leaves the round failed; a pass that fails throws (and fails
   * every generation in the round).
   */
  private async round(all: Generation[]): Promise<number> {
    const limit = this.options.maxBatchTokens;
    // How the round drafts is the cost model's call once per round, and what the round
    // delivered is its evidence (only where some generation follows it).
    const costs = all.find((g) => g.adaptive)?.costModel;
    const arm = costs?.roundArm(all.length) ?? 'anchor';
    let gens = all.filter((g) => this.guard(g, () => g.beginRound(all.length, arm)));
    const draftStart = performance.now();
    if (gens.length === 1) {
      // A sequence alone drafts in one run where it can (draft-phase.ts); its draft steps below then find nothing to do.
      const gen = gens[0]!;
      const fed = await this.guardAsync(gen, () => gen.draftInOneRun());
      if (fed) this.options.onPass?.({ kind: 'draft', sequences: 1, tokens: fed, ms: performance.now() - draftStart });
      gens = gens.filter((g) => this.waiting.has(g));
    }
    for (;;) {
      const steps: { gen: Generation; input: number[] }[] = [];
      for (const gen of gens) {
        const input = await this.guardAsync(gen, () => gen.draftInput());
        if (input) steps.push({ gen, input });
      }
      // Timed from here: a draft's catching up (in draftInput) is no step's cost.
      const stepStart = performance.now();
      gens = gens.filter((g) => this.waiting.has(g));
      if (steps.length === 0) break;
      // One pass per draft model (the head's draft is a model of its own).
      for (const model of new Set(steps.map((s) => s.gen.draftModel!))) {
        const group = steps.filter((s) => s.gen.draftModel === model && this.waiting.has(s.gen));
        if (group.length === 0) continue;
        const outs = await this.pass(model, 'draft', group.map((s) => s.gen.draftKvCache!), group.map((s) => s.input));
        for (let i = 0; i < group.length; i++) await this.guardAsync(group[i]!.gen, () => group[i]!.gen.takeDraft(outs[i]!));
      }
      // The cost model sees the whole step (the sequences' own work on the draft's rows included), not the pass alone.
      steps[0]!.gen.costModel.observeDraft(steps.length, performance.now() - stepStart);
      gens = gens.filter((g) => this.waiting.has(g));
      if (gens.reduce((n, g) => n + g.verifyLength, 0) >= limit) for (const g of gens) g.stopDrafting();
    }
    const draftMs = performance.now() - draftStart;
    if (gens.length === 0) return 0;

    const targetStart = performance.now();
    const inputs = gens.map((g) => g.verifyInput());
    const outs = await this.pass(gens[0]!.targetModel, 'verify', gens.map((g) => g.targetKvCache), inputs);
    const settled: [Generation, number[]][] = [];
    for (let i = 0; i < gens.length; i++) {
      const gen = gens[i]!;
      const emitted = await this.guardAsync(gen, () => gen.finishRound(outs[i]!.logits, draftMs, targetStart));
      if (emitted) settled.push([gen, emitted]);
    }
    const tokens = inputs.reduce((n, x) => n + x.length, 0);
    // Verification as the cost model sees it: the pass and every sequence's acceptance and rollback.
    const end = performance.now();
    gens[0]!.costModel.observeVerify(gens.length, tokens, end - targetStart);
    if (costs) {
      // Catching up is the price of switching to drafting; a drafting round carries its share
      // of its sequences' prompt feeds, spread over what they emit (the cost of drafting all along).
      const catchUpMs = all.reduce((n, g) => n + g.catchUpMs, 0);
      const feedMs = arm === 'plain' ? 0 : settled.reduce((n, [g, emitted]) => n + g.takePromptFeedShare(emitted.length), 0);
      costs.observeBatchRound(all.length, arm, settled.reduce((n, [, emitted]) => n + emitted.length, 0), end - draftStart - catchUpMs + feedMs, catchUpMs);
    }
    for (const [gen, emitted] of settled) this.settle(gen, emitted);
    return tokens;
  }

  /** Run one generation's own step; on an error fail that generation alone. @returns whether it went on */
  private guard(gen: Generation, step: () => void): boolean {
    try {
      step();
      return true;
    } catch (err) {
      this.fail(gen, err);
      return false;
    }
  }

  private async guardAsync<T>(gen: Generation, step: () => Promise<T>): Promise<T | undefined> {
    try {
      return await step();
    } catch (err) {
      this.fail(gen, err);
      return undefined;
    }
  }

  /** One batched pass, reported. */
  private async pass(model: DecoderModel, kind: 'draft' | 'verify', caches: Parameters<DecoderModel['forwardBatch']>[0], inputs: number[][]): Promise<ForwardOutputs[]> {
    const start = performance.now();
    const outs = await model.forwardBatch(caches, inputs);
    this.options.onPass?.({ kind, sequences: inputs.length, tokens: inputs.reduce((n, x) => n + x.length, 0), ms: performance.now() - start });
    return outs;
  }

  private settle(gen: Generation, emitted: number[]): void {
    const waiter = this.waiting.get(gen);
    this.waiting.delete(gen);
    waiter?.resolve(emitted);
  }

  private fail(gen: Generation, err: unknown): void {
    const waiter = this.waiting.get(gen);
    if (!waiter) return;
    this.waiting.delete(gen);
    gen.discard();
    waiter.reject(err);
  }
}
