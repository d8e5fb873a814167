/**
 * Speculation figures of a benchmark run from the server's `/metrics`, scraped before and after
 * it: the counters' differences (so earlier traffic does not count; traffic from other clients
 * during the run does). Names are those of src/server/metrics.ts.
 */
import { labelValues, parsePrometheusText, sumSamples } from './prometheus-text.js';

const M = {
  drafts: 'specd_spec_decode_num_drafts_total',
  draftTokens: 'specd_spec_decode_num_draft_tokens_total',
  accepted: 'specd_spec_decode_num_accepted_tokens_total',
  acceptedPerPos: 'specd_spec_decode_num_accepted_tokens_per_pos_total',
  generationTokens: 'specd_generation_tokens_total',
  draftSeconds: 'specd_spec_decode_draft_seconds_total',
  verifySeconds: 'specd_spec_decode_verify_seconds_total',
} as const;

export interface SpeculationFigures {
  /** Rounds that drafted at least one candidate. */
  drafts: number;
  draft_tokens: number;
  accepted_tokens: number;
  /** accepted_tokens / draft_tokens; null when nothing was drafted. */
  acceptance_rate: number | null;
  /** accepted_tokens / drafts: accepted candidates per round. */
  accepted_per_round: number | null;
  /** 1 + accepted_per_round: tokens per target pass counting the bonus token (vLLM's "mean acceptance length"). */
  mean_acceptance_length: number | null;
  /** Per draft position (0-based): accepted there / drafts. */
  acceptance_by_position: number[];
  /** Tokens the server generated over the run. */
  generation_tokens: number;
  /** Time in drafting and in verification over the run, every policy together. */
  draft_seconds: number;
  verify_seconds: number;
}

/** The raw counts behind the figures; runs add up (see {@link addCounts}). */
export interface SpeculationCounts {
  drafts: number;
  draftTokens: number;
  accepted: number;
  /** Accepted candidates at each draft position. */
  acceptedByPosition: number[];
  generationTokens: number;
  draftSeconds: number;
  verifySeconds: number;
}

/** The counters' increase between two scrapes of `/metrics` (the Prometheus text of each). */
export function countDelta(beforeText: string, afterText: string): SpeculationCounts {
  const before = parsePrometheusText(beforeText);
  const after = parsePrometheusText(afterText);
  const delta = (name: string, match: Record<string, string> = {}) => sumSamples(after, name, match) - sumSamples(before, name, match);
  const positions = labelValues(after, M.acceptedPerPos, 'position')
    .map(Number)
    .filter((p) => Number.isInteger(p) && p >= 0);
  const byPosition = new Array<number>(positions.length ? Math.max(...positions) + 1 : 0).fill(0);
  for (const p of positions) byPosition[p] = delta(M.acceptedPerPos, { position: String(p) });
  return {
    drafts: delta(M.drafts),
    draftTokens: delta(M.draftTokens),
    accepted: delta(M.accepted),
    acceptedByPosition: byPosition,
    generationTokens: delta(M.generationTokens),
    draftSeconds: delta(M.draftSeconds),
    verifySeconds: delta(M.verifySeconds),
  };
}

export function addCounts(a: SpeculationCounts, b: SpeculationCounts): SpeculationCounts {
  const positions = Math.max(a.acceptedByPosition.length, b.acceptedByPosition.length);
  return {
    drafts: a.drafts + b.drafts,
    draftTokens: a.draftTokens + b.draftTokens,
    accepted: a.accepted + b.accepted,
    acceptedByPosition: Array.from({ length: positions }, (_, i) => (a.acceptedByPosition[i] ?? 0) + (b.acceptedByPosition[i] ?? 0)),
    generationTokens: a.generationTokens + b.generationTokens,
    draftSeconds: a.draftSeconds + b.draftSeconds,
    verifySeconds: a.verifySeconds + b.verifySeconds,
  };
}

export function speculationFigures(c: SpeculationCounts): SpeculationFigures {
  return {
    drafts: c.drafts,
    draft_tokens: c.draftTokens,
    accepted_tokens: c.accepted,
    acceptance_rate: c.draftTokens > 0 ? c.accepted / c.draftTokens : null,
    accepted_per_round: c.drafts > 0 ? c.accepted / c.drafts : null,
    mean_acceptance_length: c.drafts > 0 ? 1 + c.accepted / c.drafts : null,
    acceptance_by_position: c.acceptedByPosition.map((n) => (c.drafts > 0 ? n / c.drafts : 0)),
    generation_tokens: c.generationTokens,
    draft_seconds: c.draftSeconds,
    verify_seconds: c.verifySeconds,
  };
}

/** The figures between two scrapes of `/metrics`. */
export function speculationDelta(beforeText: string, afterText: string): SpeculationFigures {
  return speculationFigures(countDelta(beforeText, afterText));
}
