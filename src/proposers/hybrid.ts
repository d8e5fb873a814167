/**
 * The `hybrid` method's choice, per sequence and round, between the draft model's proposal and
 * the best draft-free one (draft-free.ts): the proposal with the larger expected accepted
 * length is verified.
 *
 * 1. Before drafting: the draft-free proposal (k_free candidates, E_free expected accepted,
 *    acceptance-by-match.ts) against what the draft's rounds have delivered for this sequence
 *    (running means of its candidates k_draft and accepted E_draft per round). With the
 *    engine's measured pass costs (cost-model.ts: a verification of n tokens T(n), a draft step
 *    D), the round skips the draft's passes when copying delivers at least as many tokens per ms:
 *    (1 + E_free) / T(1 + k_free) >= (1 + E_draft) / (T(1 + k_draft) + k_draft D); before the
 *    costs are measured, when E_free >= E_draft. The draft catches up with the verified tokens
 *    in one pass the next time it drafts.
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

/** Running means (exponentially weighted) of the draft's accepted and proposed candidates per round, for one sequence. */
export class DraftAcceptanceMean {
  private mean: number | undefined;
  private draftedMean: number | undefined;

  /** @param weight the latest round's weight, in (0, 1] (default DRAFT_MEAN_WEIGHT) */
  constructor(private readonly weight = DRAFT_MEAN_WEIGHT) {
    checkNumber('weight', weight, Number.MIN_VALUE, 1);
  }

  /** Accepted candidates per draft round; undefined before the first. */
  get value(): number | undefined {
    return this.mean;
  }

  /** Candidates per draft round; undefined before the first. */
  get drafted(): number | undefined {
    return this.draftedMean;
  }

  /** Record a round in which the draft's proposal of `drafted` candidates (default: as many as accepted) was verified and `accepted` of them accepted. */
  observe(accepted: number, drafted = accepted): void {
    this.mean = this.mean === undefined ? accepted : this.mean + this.weight * (accepted - this.mean);
    this.draftedMean = this.draftedMean === undefined ? drafted : this.draftedMean + this.weight * (drafted - this.draftedMean);
  }
}

/** The engine's measured pass costs, ms (cost-model.ts). */
export interface RoundCosts {
  /** A verification pass feeding `tokens` tokens. */
  verifyMs(tokens: number): number;
  /** One draft step. */
  draftStepMs: number;
}

/**
 * Step 1: whether this round skips the draft.
 * @param freeExpected E_free of the draft-free proposal
 * @param draftMean the draft's running mean of accepted candidates per round (undefined: unmeasured)
 * @param freeTokens k_free, the draft-free proposal's candidates (with `costs`)
 * @param draftTokens k_draft, the draft's running mean of candidates per round (with `costs`)
 * @param costs the measured pass costs; absent: E_free against E_draft alone
 */
export function skipDraft(freeExpected: number, draftMean: number | undefined, freeTokens = 0, draftTokens = 0, costs?: RoundCosts): boolean {
  if (draftMean === undefined || !(freeExpected > 0)) return false;
  if (!costs) return freeExpected >= draftMean;
  const free = (1 + freeExpected) / costs.verifyMs(1 + freeTokens);
  const draft = (1 + draftMean) / (costs.verifyMs(1 + draftTokens) + draftTokens * costs.draftStepMs);
  return free >= draft;
}

/**
 * Step 2: which proposal a round that drafted verifies.
 * @param draftExpected the draft proposal's expected accepted length (the head's, computed from the candidates drawn)
 * @param greedy whether the sequence decodes greedily; when sampling the draft's is verified (see above)
 */
export function chooseAfterDraft(freeExpected: number, draftExpected: number, greedy: boolean): 'draft' | 'draft-free' {
  return greedy && freeExpected > draftExpected ? 'draft-free' : 'draft';
}
