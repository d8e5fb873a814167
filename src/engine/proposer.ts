/**
 * What proposes a round's candidates, the way vLLM v1 separates its drafters (`propose()`) from
 * the rejection sampler: a `Proposer` gets the sequences of a round that it serves and returns
 * each one's candidates with what acceptance needs (the q rows they were drawn from, or point
 * masses; the head's probabilities). The scheduler then verifies every sequence's candidates in
 * one target pass (acceptance.ts through `Sequence.verify`) whoever proposed them.
 *
 * Implementations: the draft model with its stop policy and head, step by step or in one run
 * (draft-proposer.ts), and the draft-free proposers, prompt lookup and suffix decoding
 * (draft-free-proposer.ts).
 */
import type { IterationPasses } from './passes.js';
import type { Proposal, Sequence, VerifiedRound } from './sequence.js';
import type { StopPolicy } from './stop-policy.js';

/** How a sequence drafts this round, as the draft controller decided (draft-controller.ts). */
export interface RoundPlan {
  /** Whether it drafts at all (false: the round verifies no candidate from the draft model). */
  draft: boolean;
  /** The stop policy of the round, fresh (specdec++ with the round's threshold h). */
  policy: StopPolicy;
  /** specdec++'s h this round, for its statistics. */
  threshold?: number;
}

export interface ProposeRequest {
  sequence: Sequence;
  plan: RoundPlan;
}

/** What a proposer may use while proposing. */
export interface ProposeContext {
  /** Where every forward pass goes (timed, reported, counted in the iteration's budget). */
  passes: IterationPasses;
  /**
   * Tokens the verification of this proposer's sequences may feed in all (their unverified
   * tokens and candidates): drafting stops once they would feed this many.
   */
  verifyBudget: number;
  /** Whether a sequence is still in the round (not failed by its own step). */
  live(sequence: Sequence): boolean;
  /** Run a sequence's own work (its grammar, its head): a throw fails that sequence alone. @returns undefined when it failed */
  guard<T>(sequence: Sequence, work: () => Promise<T>): Promise<T | undefined>;
  /** A draft step over `sequences` sequences took `ms` (the pass and the sequences' own work on its rows; cost-model.ts). */
  observeDraftStep(sequences: number, ms: number): void;
}

export interface Proposer {
  /**
   * The round's candidates of each sequence of `requests`.
   * @returns one proposal per request, in order (no candidates for a sequence that failed)
   * @throws what a forward pass throws (the round then fails every sequence in it)
   */
  propose(requests: readonly ProposeRequest[], context: ProposeContext): Promise<Proposal[]>;
  /** A sequence's round was verified: `proposal` (as `propose` returned it) gave `round`. */
  observe?(sequence: Sequence, proposal: Proposal, round: VerifiedRound): void;
}
