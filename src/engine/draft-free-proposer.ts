/**
 * The draft-free proposers (prompt lookup and suffix decoding, src/proposers/) as a round's
 * proposer (proposer.ts): one per sequence, built from its prompt, asked for a proposal each
 * round and told what the round appended. No forward pass: the candidates are copied from text
 * the sequence has seen.
 *
 * Each candidate is verified as a point mass, q = one-hot(y), when sampling, so acceptance is
 * min(1, p(y)) and the output stays the target's (acceptance.ts). Not under a grammar, whose
 * masks follow drafted candidates only.
 */
import { RequestError } from '../errors.js';
import { DraftFreeProposer, type RoundProposal } from '../proposers/draft-free.js';
import { ProposerOptionError } from '../proposers/proposal.js';
import type { SuffixCachePool } from '../proposers/suffix.js';
import { oneHot } from './draft-proposer.js';
import type { ProposeContext, ProposeRequest, Proposer } from './proposer.js';
import { noProposal, type Proposal, type Sequence, type VerifiedRound } from './sequence.js';
import { type DraftFreePolicySpec, draftFreeOptions } from './stop-policy.js';

/** The key of the one sequence a SequenceDraftFreeProposer tracks. */
const KEY = 0;

export class SequenceDraftFreeProposer implements Proposer {
  private readonly proposer: DraftFreeProposer;
  /** The proposal of the round in progress (what `observe` weighs by its match). */
  private round: RoundProposal | undefined;
  /** A greedy round's proposal that another proposer's candidates displaced (`withdraw`). */
  private unverified: RoundProposal | undefined;

  /**
   * Track `sequence` from its prompt on; it is released when the sequence ends, its output
   * going to suffix decoding's global tree unless it was aborted. A seeded sampled sequence does
   * not read that tree: its output must not depend on the requests before it.
   * @param suffixCaches the engine's global trees of earlier outputs (default: one of its own)
   * @param seeded whether the sequence samples with a seed (it then does not read the global trees)
   * @throws RequestError naming `speculative.<option>` for a knob out of range
   */
  constructor(
    private readonly sequence: Sequence,
    spec: DraftFreePolicySpec,
    suffixCaches?: SuffixCachePool,
    seeded = false,
  ) {
    try {
      this.proposer = new DraftFreeProposer({ ...draftFreeOptions(spec, sequence.target.info.vocabSize), suffixCaches, readsGlobalCache: !seeded });
    } catch (err) {
      if (err instanceof ProposerOptionError) throw new RequestError(err.message, `speculative.${err.option}`);
      throw err;
    }
    this.proposer.add(KEY, sequence.tokens);
    sequence.onEnd(() => this.proposer.remove(KEY, sequence.finishReason !== 'abort'));
  }

  async propose(requests: readonly ProposeRequest[], ctx: ProposeContext): Promise<Proposal[]> {
    return requests.map(({ sequence: seq }) => {
      if (seq !== this.sequence) throw new RangeError('a draft-free proposer proposes for its own sequence only');
      this.round = undefined;
      this.unverified = undefined;
      const cap = Math.min(seq.candidateRoom(), ctx.verifyBudget - seq.unverified);
      if (cap <= 0 || seq.processor.constraint) return noProposal();
      const round = this.proposer.propose([KEY], cap)[0]!;
      if (round.tokens.length === 0) return noProposal();
      this.round = round;
      const vocab = seq.target.info.vocabSize;
      return { tokens: [...round.tokens], draftProbs: seq.greedy ? [] : round.tokens.map((y) => oneHot(y, vocab)), method: round.method };
    });
  }

  /** The sequence's acceptance of copied candidates by match length, per method (what `expectedAccepted` weighs by). */
  get acceptance(): DraftFreeProposer['acceptance'] {
    return this.proposer.acceptance;
  }

  /** E[accepted candidates] of the round's proposal (acceptance-by-match.ts); 0 when it proposed none. */
  get expectedAccepted(): number {
    return this.round?.expectedAccepted ?? 0;
  }

  /** alpha_1..alpha_k of the round's proposal: P(candidate j accepted | the ones before accepted), by its match (acceptance-by-match.ts); [] when it proposed none. */
  rates(): number[] {
    const r = this.round;
    if (!r?.method) return [];
    const tracker = this.proposer.acceptance[r.method];
    return r.tokens.map((_, j) => tracker.rate(r.matchLength, j + 1));
  }

  /**
   * Keep the round's proposal's first `length` candidates (what the round will verify of it),
   * so that `observe` weighs what was verified.
   * @returns the proposal cut to them (`proposal` as `propose` returned it)
   */
  cut(proposal: Proposal, length: number): Proposal {
    const r = this.round;
    if (!r || length >= r.tokens.length) return proposal;
    if (length <= 0) {
      this.round = undefined;
      return noProposal();
    }
    const tokens = r.tokens.slice(0, length);
    this.round = { ...r, tokens, probs: r.probs?.slice(0, length), expectedAccepted: this.proposer.acceptance[r.method!].expectedAccepted(r.matchLength, length) };
    return { ...proposal, tokens: proposal.tokens.slice(0, length), draftProbs: proposal.draftProbs.slice(0, length) };
  }

  /**
   * The round verifies another proposer's candidates. When the sequence decodes greedily,
   * `observe` still weighs this round's proposal against what the round emitted (the target's
   * argmax tokens: draft-free.ts `observeUnverified`), so that its acceptance is learnt in rounds
   * the draft wins too; when sampling it only appends what the round emitted.
   */
  withdraw(): void {
    this.unverified = this.sequence.greedy ? this.round : undefined;
    this.round = undefined;
  }

  observe(_sequence: Sequence, _proposal: Proposal, round: VerifiedRound): void {
    if (this.unverified) this.proposer.observeUnverified(KEY, this.unverified, round.emitted);
    else this.proposer.observe(KEY, this.round, round.accepted, round.emitted);
    this.round = undefined;
    this.unverified = undefined;
  }
}
