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
 * 3. Both in one verification: when the copied proposal continues the draft's candidates (its
 *    first k_draft candidates are the draft's), the copied candidates after them are appended to
 *    the draft's (`copiedTail`), greedy or sampling: candidate k_draft + j is then a point mass
 *    chosen from the candidates before it, which speculative sampling allows at any position
 *    (the draft's draws are all kept, so none is selected by its value).
 * With the measured costs (and not for seeded sampling), a copied proposal is cut to the length
 * with the most tokens per ms (`copiedLengthByCost`), step 2 compares tokens per ms of the two
 * verifications (the draft's steps are paid by then), and step 3 appends the tail's best prefix
 * by tokens per ms.
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
 * @param lengths with `costs`: k_free and k_draft, the two proposals' candidates
 * @param costs the measured pass costs: tokens per ms of the two verifications,
 *   (1 + E_free) / T(1 + k_free) against (1 + E_draft) / T(1 + k_draft) (the draft's steps are
 *   paid whichever is verified); absent: E_free against E_draft
 */
export function chooseAfterDraft(
  freeExpected: number,
  draftExpected: number,
  greedy: boolean,
  lengths?: { free: number; draft: number },
  costs?: Pick<RoundCosts, 'verifyMs'>,
): 'draft' | 'draft-free' {
  if (!greedy) return 'draft';
  if (!costs || !lengths) return freeExpected > draftExpected ? 'draft-free' : 'draft';
  return (1 + freeExpected) / costs.verifyMs(1 + lengths.free) > (1 + draftExpected) / costs.verifyMs(1 + lengths.draft) ? 'draft-free' : 'draft';
}

/**
 * The length of a copied proposal with the most predicted tokens per ms of its verification:
 * the k in [0, K] maximizing (1 + E(k)) / T(1 + k), E(k) = sum_{j<=k} prod_{i<=j} alpha_i (the
 * expected accepted length of its first k candidates, acceptance-by-match.ts; a round emits one
 * token besides), T(n) the measured verification of n tokens. A row costs what the line's slope
 * says whether its candidate is accepted or not, so candidates whose chance of being reached is
 * small cost more than they deliver. Ties go to the shorter proposal.
 * @param rates alpha_1..alpha_K of the proposal's candidates, each in [0, 1]
 * @param verifyMs T(n), ms, for n >= 1 tokens
 * @returns k and E(k)
 */
export function copiedLengthByCost(rates: readonly number[], verifyMs: (tokens: number) => number): { length: number; expected: number } {
  return bestPrefixByRate(rates, rates.length, 0, 1, 0, verifyMs);
}

/**
 * The prefix of t in [0, most] candidates, verified after `base` others, with the most predicted
 * tokens per ms: (1 + E + sum_{j<=t} S prod_{i<=j} alpha_i) / T(1 + base + t) (the rule of
 * copiedLengthByCost and copiedTail; ties go to the shorter prefix).
 * @param rates alpha of the prefix's candidates (missing ones count as 0)
 * @param expected E, the expected accepted length of the `base` candidates before them
 * @param survive S, the chance that all `base` candidates are accepted
 * @returns t and the expected accepted length with it
 */
function bestPrefixByRate(rates: readonly number[], most: number, expected: number, survive: number, base: number, verifyMs: (tokens: number) => number): { length: number; expected: number } {
  let best = { length: 0, expected };
  let bestRate = (1 + expected) / verifyMs(1 + base);
  let chain = survive;
  for (let t = 1; t <= most; t++) {
    chain *= rates[t - 1] ?? 0;
    expected += chain;
    const rate = (1 + expected) / verifyMs(1 + base + t);
    if (rate > bestRate) [best, bestRate] = [{ length: t, expected }, rate];
  }
  return best;
}

/**
 * Step 3: how many copied candidates to append to the draft's, verified in the same pass. The
 * copied proposal must continue the draft's candidates (its first k_draft equal them, and it is
 * longer); then its candidates k_draft + 1.. are appended, at most `room`. With `value`, only
 * the prefix of that tail with the most predicted tokens per ms: a tail of t candidates delivers
 * S E_tail(t) more tokens (S the chance that every drafted candidate is accepted, E_tail(t) =
 * sum_{j<=t} prod_{i<=j} alpha_i over the tail's rates) for T(1 + k_draft + t) instead of
 * T(1 + k_draft).
 * @param drafted the draft's candidates y_1..y_k
 * @param copied the copied proposal's candidates c_1..c_m
 * @param room most candidates the sequence may still add to the round
 * @param value with the measured costs: `expected`, the draft's expected accepted length;
 *   `survive`, S; `rates`, alpha of c_{k+1}..c_m; `verifyMs`, T(n)
 * @returns t, the copied candidates to append (0: they do not continue the draft, or do not pay)
 */
export function copiedTail(
  drafted: readonly number[],
  copied: readonly number[],
  room: number,
  value?: { expected: number; survive: number; rates: readonly number[]; verifyMs: (tokens: number) => number },
): number {
  const k = drafted.length;
  if (copied.length <= k || room <= 0) return 0;
  for (let i = 0; i < k; i++) if (copied[i] !== drafted[i]) return 0;
  const most = Math.min(copied.length - k, Math.floor(room));
  if (!value) return most;
  return bestPrefixByRate(value.rates, most, value.expected, value.survive, k, value.verifyMs).length;
}
