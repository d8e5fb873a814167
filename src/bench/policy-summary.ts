/**
 * Per data set: the best fixed K, and how the stop policies compare with it (tokens/s). The
 * reference point for SpecDec++ is the best fixed K found in the same run, which is what a
 * user who tuned K on these very prompts would get.
 */
import type { OfflineResult } from './offline.js';

export interface PolicyRef {
  policy: string;
  tokens_per_s: number;
  /** tokens_per_s / that of the best fixed K. */
  vs_best_fixed: number;
}

export interface DatasetSummary {
  dataset: string;
  best_fixed: PolicyRef | null;
  /** The specdec++ entry at the head's default threshold, when it ran. */
  specdec_default: PolicyRef | null;
  best_specdec: PolicyRef | null;
  best_confidence: PolicyRef | null;
}

export function summarize(results: readonly OfflineResult[], specdecDefault?: string): DatasetSummary[] {
  const datasets = [...new Set(results.map((r) => r.dataset))];
  return datasets.map((dataset) => {
    const rows = results.filter((r) => r.dataset === dataset);
    const best = (prefix: string) => rows.filter((r) => r.policy.startsWith(prefix)).reduce<OfflineResult | null>((a, r) => (!a || r.tokens_per_s > a.tokens_per_s ? r : a), null);
    const fixed = best('fixed:');
    const ref = (r: OfflineResult | null | undefined): PolicyRef | null =>
      r ? { policy: r.policy, tokens_per_s: r.tokens_per_s, vs_best_fixed: fixed ? r.tokens_per_s / fixed.tokens_per_s : NaN } : null;
    return {
      dataset,
      best_fixed: ref(fixed),
      specdec_default: ref(specdecDefault ? rows.find((r) => r.policy === specdecDefault) : undefined),
      best_specdec: ref(best('specdec++')),
      best_confidence: ref(best('confidence:')),
    };
  });
}

export function formatSummary(summaries: readonly DatasetSummary[]): string {
  const pct = (x: number) => `${x >= 1 ? '+' : ''}${((x - 1) * 100).toFixed(1)}%`;
  const show = (label: string, r: PolicyRef | null) => (r ? `${label} ${r.policy} ${r.tokens_per_s.toFixed(1)} tok/s${Number.isFinite(r.vs_best_fixed) ? ` (${pct(r.vs_best_fixed)})` : ''}` : '');
  return (
    summaries
      .map((s) =>
        [
          `${s.dataset}: best fixed ${s.best_fixed ? `${s.best_fixed.policy} ${s.best_fixed.tokens_per_s.toFixed(1)} tok/s` : '-'}`,
          show('default specdec++', s.specdec_default),
          show('best specdec++', s.best_specdec),
          show('best confidence', s.best_confidence),
        ]
          .filter(Boolean)
          .join('; '),
      )
      .join('\n') + '\n'
  );
}
