/**
 * The `hybrid` method's choice, per sequence and round, between the draft model's proposal and
 * the best draft-free one (draft-free.ts): the proposal with the larger expected accepted
 * length is verified.
 *
 * 1. Before drafting: the draft-free proposal's expected accepted length E_free
 *    (acceptance-by-match.ts) against what the draft's rounds have delivered for this
 *    sequence, E_draft (a running mean of its accepted candidates per round). When
 *    E_free >= E_draft, the round skips the draft's passes altogether; the draft catches up
 *    with the verified tokens in one pass the next time it drafts.
 * 2. After drafting (the draft ran), greedy decoding only: the draft's own proposal's expected
 *    accepted length from its acceptance head, sum_j prod_{i<=j} P_accept,i
 *    (acceptance-by-match.ts `expectedAcceptedFromHead`), against E_free; the larger wins, the
 *    draft's on a tie (its passes are paid for). When sampling, a round that drafted verifies the
 *    draft's candidates: the head's probabilities depend on the candidates drawn, and keeping a
 *    draw y ~ q only for some values of y leaves the kept y distributed otherwise than q, which
 *    speculative sampling's exactness rests on (with p = (0.5, 0.5), q = (0.9, 0.1), keeping
 *    y = 0 and copying token 1 otherwise emits token 0 with probability 0.55). Greedy output is
 *    the target's argmax whatever is proposed.
 *
 * Until the draft has been measured for a sequence, it drafts (E_draft unknown), so that a
 * repeating sequence cannot lock the draft out before anything is known about it.
 */
import { checkNumber } from './proposal.js';

/** Weight of the latest round in the running mean of the draft's accepted candidates. */
export const DRAFT_MEAN_WEIGHT = 0.2;

/** A running mean (exponentially weighted) of the draft's accepted candidates per round, for one sequence. */
export class DraftAcceptanceMean {
  private mean: number | undefined;

  /** @param weight the latest round's weight, in (0, 1] (default DRAFT_MEAN_WEIGHT) */
  constructor(private readonly weight = DRAFT_MEAN_WEIGHT) {
    checkNumber('weight', weight, Number.MIN_VALUE, 1);
  }

  /** Accepted candidates per draft round; undefined before the first. */
  get value(): number | undefined {
    return this.mean;
  }

  /** Record a round in which the draft's proposal was verified and `accepted` of its candidates accepted. */
  observe(accepted: number): void {
    this.mean = this.mean === undefined ? accepted : this.mean + this.weight * (accepted - this.mean);
  }
}

/** Step 1: whether this round skips the draft, given E_free and the draft's running mean (undefined: unmeasured). */
export function skipDraft(freeExpected: number, draftMean: number | undefined): boolean {
  return draftMean !== undefined && freeExpected > 0 && freeExpected >= draftMean;
}

/**
 * Step 2: which proposal a round that drafted verifies.
 * @param draftExpected the draft proposal's expected accepted length (the head's, computed from the candidates drawn)
 * @param greedy whether the sequence decodes greedily; when sampling the draft's is verified (see above)
 */
export function chooseAfterDraft(freeExpected: number, draftExpected: number, greedy: boolean): 'draft' | 'draft-free' {
  return greedy && freeExpected > draftExpected ? 'draft-free' : 'draft';
}
