/**
 * Speculation counters per proposal method (`draft`, `ngram`, `suffix`), as vLLM keeps them per
 * method (vllm/v1/spec_decode/metrics.py `SpecDecodingStats`): drafts (rounds that verified a
 * proposal of the method), draft tokens, accepted tokens and accepted tokens per position. Plain
 * data: the response's `usage.speculative` and the Prometheus counters read `snapshot()`.
 *
 * Derived rates (PromQL over the exported counters, labelled by method):
 *   acceptance rate       = rate(num_accepted_tokens_total[5m]) / rate(num_draft_tokens_total[5m])
 *   mean acceptance length = 1 + rate(num_accepted_tokens_total[5m]) / rate(num_drafts_total[5m])
 */
export const PROPOSAL_METHODS = ['draft', 'ngram', 'suffix'] as const;
export type ProposalMethod = (typeof PROPOSAL_METHODS)[number];

/** One method's counters. */
export interface MethodCounters {
  /** Rounds that verified a proposal of this method with at least one candidate. */
  numDrafts: number;
  /** Candidates proposed and verified. */
  numDraftTokens: number;
  /** Candidates accepted. */
  numAcceptedTokens: number;
  /** [i]: rounds whose candidate at position i (0-based) was accepted; as long as the longest proposal. */
  numAcceptedTokensPerPos: number[];
}

export class MethodStats {
  private readonly counters = new Map<ProposalMethod, MethodCounters>();

  /**
   * Record a verified proposal.
   * @param proposed candidates verified (k >= 1; a round with none is not a draft)
   * @param accepted leading candidates accepted (0..k)
   * @throws RangeError for accepted outside [0, proposed]
   */
  observe(method: ProposalMethod, proposed: number, accepted: number): void {
    if (proposed <= 0) return;
    if (!Number.isInteger(accepted) || accepted < 0 || accepted > proposed) throw new RangeError(`accepted (${accepted}) must be an integer in [0, proposed = ${proposed}]`);
    let c = this.counters.get(method);
    if (!c) this.counters.set(method, (c = { numDrafts: 0, numDraftTokens: 0, numAcceptedTokens: 0, numAcceptedTokensPerPos: [] }));
    c.numDrafts++;
    c.numDraftTokens += proposed;
    c.numAcceptedTokens += accepted;
    while (c.numAcceptedTokensPerPos.length < proposed) c.numAcceptedTokensPerPos.push(0);
    for (let i = 0; i < accepted; i++) c.numAcceptedTokensPerPos[i]!++;
  }

  /** Add another collector's counts (a request's into the engine's). */
  merge(other: MethodStats): void {
    for (const [method, o] of other.counters) {
      let c = this.counters.get(method);
      if (!c) this.counters.set(method, (c = { numDrafts: 0, numDraftTokens: 0, numAcceptedTokens: 0, numAcceptedTokensPerPos: [] }));
      c.numDrafts += o.numDrafts;
      c.numDraftTokens += o.numDraftTokens;
      c.numAcceptedTokens += o.numAcceptedTokens;
      o.numAcceptedTokensPerPos.forEach((n, i) => (c!.numAcceptedTokensPerPos[i] = (c!.numAcceptedTokensPerPos[i] ?? 0) + n));
    }
  }

  /** The counters of every method that proposed, in PROPOSAL_METHODS order (copies). */
  snapshot(): Partial<Record<ProposalMethod, MethodCounters>> {
    const out: Partial<Record<ProposalMethod, MethodCounters>> = {};
    for (const m of PROPOSAL_METHODS) {
      const c = this.counters.get(m);
      if (c) out[m] = { ...c, numAcceptedTokensPerPos: [...c.numAcceptedTokensPerPos] };
    }
    return out;
  }
}
