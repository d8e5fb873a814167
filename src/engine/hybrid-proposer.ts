/**
 * `hybrid`: per round and sequence, the draft model and a draft-free proposer (prompt lookup or
 * suffix decoding) compete by expected accepted length, by the decision of
 * src/proposers/hybrid.ts:
 *
 * 1. before drafting, the draft-free proposal's E_free (acceptance by match length) against the
 *    draft's running mean of accepted candidates per round for this sequence, weighed by the
 *    engine's measured pass costs (tokens per ms of either kind of round): when copying is
 *    expected to deliver at least as much, the sequence skips the draft's passes this round
 *    (its draft catches up the next time it drafts);
 * 2. after drafting, greedy decoding only, E_free against the draft's own expectation: with the
 *    acceptance head sum_j prod_{i<=j} P_accept,i, else its running mean; the larger is
 *    verified, the draft's on a tie. When the draft-free proposal wins, the draft's cache is cut
 *    back to x (it holds candidates that will not be verified). When sampling, a round that
 *    drafted verifies the draft's candidates: choosing by the values drawn would bias the output.
 *
 * Either proposal is verified by the one acceptance rule (q rows for the draft's, point masses
 * for copied tokens), so the output stays the target's whatever is chosen.
 */
import { DraftAcceptanceMean, chooseAfterDraft, type RoundCosts, skipDraft } from '../proposers/hybrid.js';
import { expectedAcceptedFromHead } from '../proposers/acceptance-by-match.js';
import type { SequenceDraftFreeProposer } from './draft-free-proposer.js';
import type { ProposeContext, ProposeRequest, Proposer } from './proposer.js';
import { noProposal, type Proposal, type Sequence, type VerifiedRound } from './sequence.js';

/** Which proposal a round verified. */
export type HybridChoice = 'draft' | 'draft-free' | 'skipped-draft';

interface HybridSequence {
  free: SequenceDraftFreeProposer;
  draftMean: DraftAcceptanceMean;
  /** Which proposal the round in progress verifies. */
  verified?: 'draft' | 'draft-free';
}

export class HybridProposer implements Proposer {
  private readonly sequences = new Map<Sequence, HybridSequence>();
  /** Rounds by what they verified: the draft's proposal, the draft-free one after drafting, or the draft-free one without drafting. */
  readonly choices: Record<HybridChoice, number> = { draft: 0, 'draft-free': 0, 'skipped-draft': 0 };

  /**
   * @param draft the draft model's proposer (draft-proposer.ts)
   * @param costs the engine's measured pass costs, once measured (cost-model.ts); undefined: compare expected accepted lengths alone
   */
  constructor(
    private readonly draft: Proposer,
    private readonly costs: () => RoundCosts | undefined = () => undefined,
  ) {}

  /** Let `free` compete with the draft for `sequence`'s rounds, until it ends. */
  add(sequence: Sequence, free: SequenceDraftFreeProposer): void {
    this.sequences.set(sequence, { free, draftMean: new DraftAcceptanceMean() });
    sequence.onEnd(() => this.sequences.delete(sequence));
  }

  async propose(requests: readonly ProposeRequest[], ctx: ProposeContext): Promise<Proposal[]> {
    const states = requests.map((r) => this.state(r.sequence));
    const free: Proposal[] = [];
    const freeExpected: number[] = [];
    for (const [i, r] of requests.entries()) {
      // A round the controller keeps plain verifies no candidates at all.
      free.push(r.plan.draft ? (await states[i]!.free.propose([r], ctx))[0]! : noProposal());
      freeExpected.push(states[i]!.free.expectedAccepted);
    }
    const costs = this.costs();
    const drafting = requests.map((r, i) => {
      const mean = states[i]!.draftMean;
      // A seeded sampled sequence decides without the measured costs: its output must not depend on the load.
      const seeded = !r.sequence.greedy && r.sequence.opts.seed !== undefined;
      return r.plan.draft && !skipDraft(freeExpected[i]!, mean.value, free[i]!.tokens.length, mean.drafted, seeded ? undefined : costs);
    });
    const drafted = await this.draft.propose(
      requests.filter((_, i) => drafting[i]),
      ctx,
    );
    let j = 0;
    const out: Proposal[] = [];
    for (const [i, r] of requests.entries()) {
      const s = states[i]!;
      if (!drafting[i]) {
        s.verified = 'draft-free';
        if (free[i]!.tokens.length > 0) this.choices['skipped-draft']++;
        out.push(free[i]!);
        continue;
      }
      const d = drafted[j++]!;
      const draftExpected = d.acceptProbs ? expectedAcceptedFromHead(d.acceptProbs) : (s.draftMean.value ?? Infinity);
      if (free[i]!.tokens.length > 0 && chooseAfterDraft(freeExpected[i]!, draftExpected, r.sequence.greedy) === 'draft-free') {
        const seq = r.sequence;
        if (seq.draftCache && seq.draftCache.length > seq.tokens.length) await seq.draftCache.crop(seq.tokens.length);
        s.verified = 'draft-free';
        this.choices['draft-free']++;
        out.push(free[i]!);
      } else {
        s.free.withdraw();
        s.verified = 'draft';
        this.choices.draft++;
        out.push(d);
      }
    }
    return out;
  }

  observe(sequence: Sequence, proposal: Proposal, round: VerifiedRound): void {
    const s = this.state(sequence);
    if (s.verified === 'draft') s.draftMean.observe(round.accepted, proposal.tokens.length);
    s.free.observe(sequence, proposal, round);
    s.verified = undefined;
  }

  private state(sequence: Sequence): HybridSequence {
    const s = this.sequences.get(sequence);
    if (!s) throw new RangeError('the hybrid proposer does not track this sequence');
    return s;
  }
}
