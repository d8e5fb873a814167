/**
 * Choosing the specdec++ threshold h without touching benchmark prompts: simulate speculative
 * decoding on held-out training responses with the pair's measured step costs, and take the h
 * with the most simulated tokens per millisecond.
 *
 * The simulation walks each held-out response's labelled positions in order. A round starting
 * at row t drafts candidates that stand for rows t, t+1, ...; the stop rule sees the head's
 * P(accept) of each row as it is drafted (stop-policy.ts) and the same K_min / K_max; the
 * candidate that triggers the stop is kept, as the policy keeps it; candidate j is accepted
 * with probability a_{t+j} (its label) while all before it were; the round emits the accepted
 * ones plus the target's token and costs k draft steps (plus the draft loop's per-round cost)
 * and one target pass over k + 1 tokens. Expectations over the acceptance draws are computed
 * exactly (no sampling noise), so nearby thresholds compare reliably. Fixed K runs through the
 * same loop, so the result also says which K would win and by how much. Responses of one
 * decoding temperature give that temperature's threshold (eval.ts). It is an estimate: real
 * rounds propose tokens conditioned on their own earlier candidates.
 */
import type { StepCosts } from './head-data.js';

/** One held-out response: its rows' soft labels and the head's predictions, in position order. */
export interface SimSequence {
  labels: ArrayLike<number>;
  probs: ArrayLike<number>;
}

export type SimPolicy = { policy: 'fixed'; k: number } | { policy: 'specdec++'; threshold: number; kMin: number; kMax: number };

export interface SimResult {
  policy: string;
  tokens: number;
  rounds: number;
  drafted: number;
  accepted: number;
  ms: number;
  tokens_per_ms: number;
  /** Accepted / drafted. */
  acceptance_rate: number;
  /** (Drafted - accepted) / drafted. */
  discard_rate: number;
  /** Target calls / tokens. */
  verification_rate: number;
  mean_drafted_per_round: number;
}

/**
 * Time of one target pass over n tokens: a least-squares line through the measured passes
 * (fixed cost + cost per token), which smooths the noise of single measurements.
 */
export function targetMs(costs: StepCosts, n: number): number {
  const t = costs.target_ms;
  const m = t.length;
  if (m === 1) return t[0]!;
  const meanX = (m + 1) / 2;
  const meanY = t.reduce((a, b) => a + b, 0) / m;
  let sxy = 0;
  let sxx = 0;
  t.forEach((y, i) => {
    sxy += (i + 1 - meanX) * (y - meanY);
    sxx += (i + 1 - meanX) ** 2;
  });
  const slope = Math.max(0, sxy / sxx);
  return meanY + slope * (n - meanX);
}

export function simLabel(p: SimPolicy): string {
  return p.policy === 'fixed' ? `fixed:${p.k}` : `specdec++:${p.threshold}`;
}

/** Candidates a round starting at row t drafts under `policy` (the stop rule of stop-policy.ts). */
function draftLength(seq: SimSequence, t: number, policy: SimPolicy): number {
  const n = seq.labels.length;
  let k = 0;
  let prod = 1;
  for (let s = 1; t + s - 1 < n; s++) {
    k = s;
    if (policy.policy === 'fixed') {
      if (s >= policy.k) break;
      continue;
    }
    prod *= seq.probs[t + s - 1]!;
    if (s >= policy.kMax) break;
    if (s >= policy.kMin && 1 - prod > policy.threshold) break;
  }
  return k;
}

/**
 * Expected totals of decoding every sequence under `policy`, computed exactly by dynamic
 * programming from the end of each sequence backwards: from row t a round drafts k_t
 * candidates, accepts j of them with probability a_t ... a_{t+j-1} (1 - a_{t+j}) (all k with
 * the product of all k), and the next round starts at row t + j + 1.
 */
export function simulate(sequences: readonly SimSequence[], policy: SimPolicy, costs: StepCosts): SimResult {
  let tokens = 0;
  let rounds = 0;
  let drafted = 0;
  let accepted = 0;
  let ms = 0;
  for (const seq of sequences) {
    const n = seq.labels.length;
    // Expected totals from row t to the end; rows >= n contribute nothing.
    const E = { ms: new Float64Array(n + 2), rounds: new Float64Array(n + 2), drafted: new Float64Array(n + 2), accepted: new Float64Array(n + 2), tokens: new Float64Array(n + 2) };
    for (let t = n - 1; t >= 0; t--) {
      const k = draftLength(seq, t, policy);
      let reach = 1; // P(the first j candidates are accepted)
      let eMs = 0;
      let eRounds = 0;
      let eDrafted = 0;
      let eAccepted = 0;
      let eTokens = 0;
      for (let j = 0; j <= k; j++) {
        const pj = j < k ? reach * (1 - seq.labels[t + j]!) : reach;
        const next = Math.min(t + j + 1, n);
        eMs += pj * E.ms[next]!;
        eRounds += pj * E.rounds[next]!;
        eDrafted += pj * E.drafted[next]!;
        eAccepted += pj * (j + E.accepted[next]!);
        eTokens += pj * (j + 1 + E.tokens[next]!);
        if (j < k) reach *= seq.labels[t + j]!;
      }
      E.ms[t] = (k > 0 ? (costs.draft_round_ms ?? 0) + k * costs.draft_step_ms : 0) + targetMs(costs, k + 1) + eMs;
      E.rounds[t] = 1 + eRounds;
      E.drafted[t] = k + eDrafted;
      E.accepted[t] = eAccepted;
      E.tokens[t] = eTokens;
    }
    tokens += E.tokens[0]!;
    rounds += E.rounds[0]!;
    drafted += E.drafted[0]!;
    accepted += E.accepted[0]!;
    ms += E.ms[0]!;
  }
  return {
    policy: simLabel(policy),
    tokens,
    rounds,
    drafted,
    accepted,
    ms,
    tokens_per_ms: ms > 0 ? tokens / ms : 0,
    acceptance_rate: drafted ? accepted / drafted : 0,
    discard_rate: drafted ? (drafted - accepted) / drafted : 0,
    verification_rate: tokens ? rounds / tokens : 0,
    mean_drafted_per_round: rounds ? drafted / rounds : 0,
  };
}

export interface ThresholdSelection {
  method: string;
  costs: StepCosts;
  k_min: number;
  k_max: number;
  recommended: number;
  best_fixed: string;
  /** Simulated tokens/ms of the recommended h over the best fixed K. */
  simulated_gain_over_best_fixed: number;
  specdec: SimResult[];
  fixed: SimResult[];
}

/** Thresholds tried: 0.05 to 0.95 in steps of 0.05, then finer towards 1 (a head trained with w > 1 predicts low). */
export const THRESHOLD_GRID = [...Array.from({ length: 19 }, (_, i) => Math.round((0.05 + 0.05 * i) * 100) / 100), 0.97, 0.98, 0.99, 0.995];
export const FIXED_GRID = [1, 2, 3, 4, 5, 6, 7, 8];

/** Simulates the threshold grid and fixed K = 1..8; recommends the fastest h. */
export function selectThreshold(sequences: readonly SimSequence[], costs: StepCosts, bounds: { kMin: number; kMax: number }): ThresholdSelection {
  const specdec = THRESHOLD_GRID.map((threshold) => simulate(sequences, { policy: 'specdec++', threshold, ...bounds }, costs));
  const fixed = FIXED_GRID.map((k) => simulate(sequences, { policy: 'fixed', k }, costs));
  const best = specdec.reduce((a, b) => (b.tokens_per_ms > a.tokens_per_ms ? b : a));
  const bestFixed = fixed.reduce((a, b) => (b.tokens_per_ms > a.tokens_per_ms ? b : a));
  return {
    method: 'simulated tokens/ms on the validation split with the measured step costs (threshold.ts)',
    costs,
    k_min: bounds.kMin,
    k_max: bounds.kMax,
    recommended: THRESHOLD_GRID[specdec.indexOf(best)]!,
    best_fixed: bestFixed.policy,
    simulated_gain_over_best_fixed: best.tokens_per_ms / bestFixed.tokens_per_ms,
    specdec,
    fixed,
  };
}
