/**
 * Continuous batching (iteration-level scheduling, as in Orca, vLLM and TGI), and the one round
 * driver: the generations of one engine run their rounds together, one forward pass per draft
 * step and one target pass per round for all of them, so each pass reads the weights once for
 * the whole batch. A generation stepped alone runs here too, as a batch of one (the engine's
 * own scheduler, `Generation.step`).
 *
 * A generation asks for its next round with `step(gen)`; an iteration takes every generation
 * that has asked, and
 *
 * 1. runs one round over those whose prompt is in (`prefillPending` = 0): the engine's draft
 *    controller decides how each drafts (draft-controller.ts); each proposer proposes for the
 *    sequences it serves (proposer.ts: the draft model's steps in lock-step, each sequence until
 *    its own policy stops it, or in one run for a sequence alone; draft-free proposers copy);
 *    then one target pass verifies every sequence's candidates; acceptance, rollback, RNG, stop
 *    conditions and logprobs stay per sequence (sequence.ts), so each output is what it would
 *    be alone;
 * 2. feeds pieces of new prompts (`Sequence.promptPiece`, whole PREFILL_CHUNK pieces) within what
 *    is left of `maxBatchTokens` after the round, at least one piece per iteration, each to the
 *    prompt with the fewest positions in so far, so that a long prompt stalls neither the
 *    others' decoding nor a short prompt's start.
 *
 * Every pass goes through the iteration's `IterationPasses` (passes.ts), which times it, reports
 * it (`onPass`) and counts its tokens in the budget: prompt pieces, the drafts' catching up,
 * draft steps and verification. A draft's catching up always runs in full (a sequence's
 * candidates must not depend on its batch: with sampling they decide which random draws make
 * the output), so it takes its tokens from what prompt pieces get.
 *
 * Generations join between iterations (the first `step` after their prompt is in) and leave
 * when they stop asking (done, cancelled, or their consumer is slow: a round is never waited on).
 * Batched passes need caches written in place (model.ts `forwardBatch`); other caches still run
 * in lock-step, one sequence per pass.
 */
import type { DraftController } from './draft-controller.js';
import { IterationPasses, type PassRecord } from './passes.js';
import type { ProposeContext, Proposer } from './proposer.js';
import type { Proposal, Sequence } from './sequence.js';
import type { Generation, SpeculativeDecoder } from './speculative.js';

export type { PassKind, PassRecord } from './passes.js';

export interface SchedulerOptions {
  /**
   * Tokens the passes of one iteration feed at most (vLLM's max_num_batched_tokens): a round's
   * sequences stop drafting once their verification would feed more, and prompt pieces get
   * what the round's passes leave (at least one piece).
   */
  maxBatchTokens: number;
  /** Told about every pass (metrics). */
  onPass?: (pass: PassRecord) => void;
}

interface Waiter {
  resolve: (emitted: number[]) => void;
  reject: (err: unknown) => void;
}

export class BatchScheduler {
  /** Generations waiting for their next round, in the order they asked. */
  private readonly waiting = new Map<Generation, Waiter>();
  private looping = false;
  /** The engine whose generations this scheduler runs (the first one stepped). */
  private engine: SpeculativeDecoder | undefined;
  private iterations = 0;

  /** @throws RangeError when maxBatchTokens is not a positive integer */
  constructor(readonly options: SchedulerOptions) {
    if (!Number.isInteger(options.maxBatchTokens) || options.maxBatchTokens < 1) throw new RangeError(`maxBatchTokens must be a positive integer, got ${options.maxBatchTokens}`);
  }

  /**
   * Run `gen`'s next round with the other generations' (its prompt first, when not yet in).
   * @returns the tokens the round added to the sequence (`gen.output` says which are the output)
   * @throws what the batch's passes throw (the generation's caches are then released); an
   *   Error when `gen` already waits for a round or belongs to another engine than this scheduler's
   */
  step(gen: Generation): Promise<number[]> {
    if (gen.done) return Promise.resolve([]);
    if (this.waiting.has(gen)) return Promise.reject(new Error('this generation already waits for a round'));
    this.engine ??= gen.engine;
    if (gen.engine !== this.engine) return Promise.reject(new Error("a scheduler runs one engine's generations; this one belongs to another"));
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
    const passes = new IterationPasses(this.options.maxBatchTokens, this.options.onPass, ++this.iterations);
    const ready = gens.filter((g) => g.prefillPending === 0);
    const filling = gens.filter((g) => g.prefillPending > 0);
    if (ready.length > 0) {
      try {
        await this.round(ready, passes);
      } catch (err) {
        for (const g of ready) this.fail(g, err); // a failed pass: every generation in it
      }
    }
    // Prompt pieces, one pass each, while the budget lasts (at least one per iteration), each to
    // the generation with the fewest prompt positions in so far (oldest first among equals): a
    // short prompt goes in beside a long one instead of waiting for its whole prefill, and long
    // prompts share the budget (vLLM caps a long prompt's share of a step for the same reason,
    // `long_prefill_token_threshold`).
    const costs = this.engine!.controller.costs;
    const pending = [...filling];
    let pieces = 0;
    while (pending.length > 0 && (pieces === 0 || passes.left > 0)) {
      let i = 0;
      for (let j = 1; j < pending.length; j++) if (pending[j]!.sequence.targetCache.length < pending[i]!.sequence.targetCache.length) i = j;
      const g = pending[i]!;
      const seq = g.sequence;
      try {
        const piece = seq.promptPiece();
        await passes.forward(seq.target, 'prefill', [seq.targetCache], [piece], 0);
        pieces++;
        // A target pass of many tokens for one sequence: what pins the cost model's cost of a token.
        costs.observeVerify(1, piece.length, passes.lastMs, true);
        seq.prefillMs += passes.lastMs;
        if (seq.prefillPending === 0) pending.splice(i, 1);
      } catch (err) {
        this.fail(g, err);
        pending.splice(i, 1);
      }
    }
  }

  /**
   * One round over `all`. A generation whose own step fails (its grammar, its head) leaves the
   * round failed; a pass that fails throws (and fails every generation in the round).
   */
  private async round(all: Generation[], passes: IterationPasses): Promise<void> {
    const controller: DraftController = this.engine!.controller;
    const limit = this.options.maxBatchTokens;
    const { plans, arm } = controller.planRound(all.map((g) => g.policy));
    const bySequence = new Map(all.map((g) => [g.sequence, g]));
    const planOf = new Map(all.map((g, i) => [g, plans[i]!]));
    const live = (seq: Sequence) => this.waiting.has(bySequence.get(seq)!);
    const proposals = new Map<Generation, Proposal>();
    // The sequences of each proposer, in the order they asked.
    const groups = new Map<Proposer, number[]>();
    all.forEach((g, i) => groups.set(g.proposer, [...(groups.get(g.proposer) ?? []), i]));

    for (const g of all) g.sequence.catchUpRoundMs = 0;
    const draftStart = performance.now();
    for (const [proposer, members] of groups) {
      const mine = members.filter((i) => this.waiting.has(all[i]!));
      if (mine.length === 0) continue;
      // The others' verification: what this group's may feed is what it leaves of the budget.
      const others = all.reduce((n, g, i) => (mine.includes(i) || !this.waiting.has(g) ? n : n + g.sequence.unverified + (proposals.get(g)?.tokens.length ?? 0)), 0);
      const context: ProposeContext = {
        passes,
        verifyBudget: limit - others,
        live,
        guard: (seq, work) => this.guardAsync(bySequence.get(seq)!, work),
        observeDraftStep: (sequences, ms) => controller.costs.observeDraft(sequences, ms),
      };
      const out = await proposer.propose(
        mine.map((i) => ({ sequence: all[i]!.sequence, plan: plans[i]! })),
        context,
      );
      mine.forEach((i, j) => proposals.set(all[i]!, out[j]!));
    }
    const draftMs = performance.now() - draftStart;
    const gens = all.filter((g) => this.waiting.has(g));
    if (gens.length === 0) return;

    const targetStart = performance.now();
    const inputs = gens.map((g) => g.sequence.verifyInput(proposals.get(g)!.tokens));
    const target = this.engine!.target;
    const outs = await passes.forward(target, 'verify', gens.map((g) => g.sequence.targetCache), inputs, proposals.get(gens[0]!)!.tokens.length + 1);
    const settled: [Generation, number[]][] = [];
    for (let i = 0; i < gens.length; i++) {
      const gen = gens[i]!;
      const seq = gen.sequence;
      const proposal = proposals.get(gen)!;
      const verified = await this.guardAsync(gen, () => seq.verify(outs[i]!.logits, proposal, { draftMs, targetStart }, planOf.get(gen)!.threshold));
      if (!verified) continue;
      controller.costs.observeRound(proposal.tokens.length, verified.accepted);
      if (!this.guard(gen, () => gen.proposer.observe?.(seq, proposal, verified))) continue;
      seq.settleIfDone();
      settled.push([gen, verified.emitted]);
    }
    const tokens = inputs.reduce((n, x) => n + x.length, 0);
    // Verification as the cost model sees it: the pass and every sequence's acceptance and rollback.
    const end = performance.now();
    const padded = gens.length * Math.max(...inputs.map((x) => x.length));
    controller.costs.observeVerify(gens.length, tokens, end - targetStart, false, padded);
    if (arm !== undefined) {
      // Catching up is the price of switching to drafting; a drafting round carries its share
      // of its sequences' prompt feeds, spread over what they emit (the cost of drafting all along).
      const catchUpMs = all.reduce((n, g) => n + g.sequence.catchUpRoundMs, 0);
      const feedMs = arm === 'plain' ? 0 : settled.reduce((n, [g, emitted]) => n + g.sequence.takePromptFeedShare(emitted.length), 0);
      const emitted = settled.reduce((n, [, e]) => n + e.length, 0);
      controller.observeRound(all.length, arm, emitted, end - draftStart - catchUpMs + feedMs, catchUpMs);
    }
    for (const [gen, emitted] of settled) this.settle(gen, emitted);
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
