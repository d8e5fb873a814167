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
 * 3. when the copied proposal continues the draft's candidates, the copied candidates after them
 *    are appended to the draft's and verified in the same pass (point masses after the draft's
 *    q rows when sampling).
 * With the measured costs (not for seeded sampling) a copied proposal is first cut to the length
 * with the most predicted tokens per ms, and steps 2 and 3 weigh tokens per ms too.
 *
 * Either proposal is verified by the one acceptance rule (q rows for the draft's, point masses
 * for copied tokens), so the output stays the target's whatever is chosen.
 */
import { chooseAfterDraft, copiedLengthByCost, copiedTail, DraftAcceptanceMean, type RoundCosts, skipDraft } from '../proposers/hybrid.js';
import { expectedAcceptedFromHead } from '../proposers/acceptance-by-match.js';
import type { SequenceDraftFreeProposer } from './draft-free-proposer.js';
import type { ProposeContext, ProposeRequest, Proposer } from './proposer.js';
import { noProposal, type Proposal, type Sequence, type VerifiedRound } from './sequence.js';

/** The measured costs a sequence's choices weigh: none for seeded sampling, whose output must not depend on the load. */
function costsFor(seq: Sequence, measured: RoundCosts | undefined): RoundCosts | undefined {
  return !seq.greedy && seq.opts.seed !== undefined ? undefined : measured;
}

/** Which proposal a round verified. */
export type HybridChoice = 'draft' | 'draft-free' | 'skipped-draft' | 'draft+copied';

interface HybridSequence {
  free: SequenceDraftFreeProposer;
  draftMean: DraftAcceptanceMean;
  /** Which proposal the round in progress verifies. */
  verified?: 'draft' | 'draft-free';
  /** Of the round's candidates, how many the draft drafted (copied ones may follow them). */
  draftLength: number;
}

export class HybridProposer implements Proposer {
  private readonly sequences = new Map<Sequence, HybridSequence>();
  /**
   * Rounds by what they verified: the draft's proposal, the draft-free one after drafting, the
   * draft-free one without drafting; `draft+copied` counts the draft's rounds (among `draft`)
   * whose candidates the copied ones continued in the same verification.
   */
  readonly choices: Record<HybridChoice, number> = { draft: 0, 'draft-free': 0, 'skipped-draft': 0, 'draft+copied': 0 };

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
    this.sequences.set(sequence, { free, draftMean: new DraftAcceptanceMean(), draftLength: 0 });
    sequence.onEnd(() => this.sequences.delete(sequence));
  }

  async propose(requests: readonly ProposeRequest[], ctx: ProposeContext): Promise<Proposal[]> {
    const states = requests.map((r) => this.state(r.sequence));
    const measured = this.costs();
    const costsOf = (seq: Sequence) => costsFor(seq, measured);
    const free: Proposal[] = [];
    /** alpha_j of each copied proposal's candidates, read before a withdrawal forgets them. */
    const rates: number[][] = [];
    for (const [i, r] of requests.entries()) {
      const s = states[i]!;
      // A round the controller keeps plain verifies no candidates at all.
      let p = r.plan.draft ? (await s.free.propose([r], ctx))[0]! : noProposal();
      const costs = costsOf(r.sequence);
      if (costs && p.tokens.length > 0) p = s.free.cut(p, copiedLengthByCost(s.free.rates(), costs.verifyMs).length);
      free.push(p);
      rates.push(s.free.rates());
    }
    const drafting = requests.map((r, i) => {
      const s = states[i]!;
      return r.plan.draft && !skipDraft(s.free.expectedAccepted, s.draftMean.value, free[i]!.tokens.length, s.draftMean.drafted, costsOf(r.sequence));
    });
    const drafted = await this.draft.propose(
      requests.filter((_, i) => drafting[i]),
      ctx,
    );
    let j = 0;
    const out: Proposal[] = [];
    for (const [i, r] of requests.entries()) {
      const s = states[i]!;
      s.draftLength = 0;
      if (!drafting[i]) {
        s.verified = 'draft-free';
        if (free[i]!.tokens.length > 0) this.choices['skipped-draft']++;
        out.push(free[i]!);
        continue;
      }
      const d = drafted[j++]!;
      const draftExpected = d.acceptProbs ? expectedAcceptedFromHead(d.acceptProbs) : (s.draftMean.value ?? Infinity);
      const costs = costsOf(r.sequence);
      const lengths = { free: free[i]!.tokens.length, draft: d.tokens.length };
      if (lengths.free > 0 && chooseAfterDraft(s.free.expectedAccepted, draftExpected, r.sequence.greedy, lengths, costs) === 'draft-free') {
        const seq = r.sequence;
        if (seq.draftCache && seq.draftCache.length > seq.tokens.length) await seq.draftCache.crop(seq.tokens.length);
        s.verified = 'draft-free';
        this.choices['draft-free']++;
        out.push(free[i]!);
      } else {
        s.free.withdraw();
        s.verified = 'draft';
        s.draftLength = d.tokens.length;
        this.choices.draft++;
        out.push(d);
      }
    }
    this.appendCopiedTails(requests, states, free, rates, out, ctx);
    return out;
  }

  /**
   * Step 3 of proposers/hybrid.ts: a draft's proposal that the sequence's copied one continues
   * gets the copied candidates after it, within the round's budget (what the batch's proposals
   * leave of `ctx.verifyBudget`).
   */
  private appendCopiedTails(requests: readonly ProposeRequest[], states: HybridSequence[], free: readonly Proposal[], rates: readonly number[][], out: Proposal[], ctx: ProposeContext): void {
    let left = ctx.verifyBudget - requests.reduce((n, r, i) => n + r.sequence.unverified + out[i]!.tokens.length, 0);
    const measured = this.costs();
    for (const [i, r] of requests.entries()) {
      const s = states[i]!;
      const d = out[i]!;
      if (s.verified !== 'draft' || d.tokens.length === 0 || left <= 0) continue;
      const seq = r.sequence;
      const room = Math.min(left, seq.candidateRoom() - d.tokens.length);
      const costs = costsFor(seq, measured);
      const copied = free[i]!.tokens;
      const value = costs && {
        expected: d.acceptProbs ? expectedAcceptedFromHead(d.acceptProbs) : (s.draftMean.value ?? 0),
        survive: d.acceptProbs ? d.acceptProbs.reduce((a, b) => a * b, 1) : 1,
        rates: rates[i]!.slice(d.tokens.length),
        verifyMs: costs.verifyMs,
      };
      const tail = copiedTail(d.tokens, copied, room, value);
      if (tail === 0) continue;
      const k = d.tokens.length;
      out[i] = { ...d, tokens: [...d.tokens, ...copied.slice(k, k + tail)], draftProbs: seq.greedy ? d.draftProbs : [...d.draftProbs, ...free[i]!.draftProbs.slice(k, k + tail)] };
      left -= tail;
      this.choices['draft+copied']++;
    }
  }

  observe(sequence: Sequence, proposal: Proposal, round: VerifiedRound): void {
    const s = this.state(sequence);
    // The draft's running means count its own candidates, not the copied ones after them.
    if (s.verified === 'draft') s.draftMean.observe(Math.min(round.accepted, s.draftLength), s.draftLength);
    s.free.observe(sequence, proposal, round);
    s.verified = undefined;
  }

  private state(sequence: Sequence): HybridSequence {
    const s = this.sequences.get(sequence);
    if (!s) throw new RangeError('the hybrid proposer does not track this sequence');
    return s;
  }
}
