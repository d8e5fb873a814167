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

/** The figures between two scrapes of `/metrics` (the Prometheus text of each). */
export function speculationDelta(beforeText: string, afterText: string): SpeculationFigures {
  const before = parsePrometheusText(beforeText);
  const after = parsePrometheusText(afterText);
  const delta = (name: string, match: Record<string, string> = {}) => sumSamples(after, name, match) - sumSamples(before, name, match);
  const drafts = delta(M.drafts);
  const draftTokens = delta(M.draftTokens);
  const accepted = delta(M.accepted);
  const positions = labelValues(after, M.acceptedPerPos, 'position')
    .map(Number)
    .filter((p) => Number.isInteger(p) && p >= 0)
    .sort((a, b) => a - b);
  const byPosition = new Array<number>(positions.length ? positions.at(-1)! + 1 : 0).fill(0);
  for (const p of positions) byPosition[p] = drafts > 0 ? delta(M.acceptedPerPos, { position: String(p) }) / drafts : 0;
  return {
    drafts,
    draft_tokens: draftTokens,
    accepted_tokens: accepted,
    acceptance_rate: draftTokens > 0 ? accepted / draftTokens : null,
    accepted_per_round: drafts > 0 ? accepted / drafts : null,
    mean_acceptance_length: drafts > 0 ? 1 + accepted / drafts : null,
    acceptance_by_position: byPosition,
    generation_tokens: delta(M.generationTokens),
    draft_seconds: delta(M.draftSeconds),
    verify_seconds: delta(M.verifySeconds),
  };
}
