/**
 * The offline benchmark: the engine in-process, no server, every policy on the same prompts.
 *
 * Policies run interleaved prompt by prompt (prompt 1 under every policy, then prompt 2, ...)
 * so that a noisy, shared machine slows all of them alike; the speedup of a policy is its
 * tokens/s over that of `none` (target-only decoding) from the same run.
 *
 * With grammar modes (prompts with a JSON Schema, the `json` set) every policy also runs with
 * its output constrained to the schema (`on`), and with it but without jump-forward
 * (`no-jump-forward`); a speedup is then over `none` with the same grammar mode.
 */
import type { ModelPair } from '../pair/model-pair.js';
import type { SamplingParams } from '../engine/sampling.js';
import { isGreedy } from '../engine/sampling.js';
import { type PolicySpec, policyLabel } from '../engine/stop-policy.js';
import type { DraftPhaseMode } from '../engine/speculative.js';
import type { RoundStats } from '../engine/stats.js';
import { generateText } from '../engine/text-generation.js';
import type { GrammarConstraint } from '../grammar/constraint.js';
import type { BenchPrompt, DatasetName } from './datasets.js';

export interface OfflineBenchOptions {
  dataset: DatasetName;
  prompts: BenchPrompt[];
  policies: PolicySpec[];
  maxTokens: number;
  sampling: SamplingParams;
  seed: number;
  /** Each policy runs once per mode; default `off`. Modes other than `off` need prompts with a schema. */
  grammar?: GrammarMode[];
  /** How greedy rounds draft (speculative.ts DraftPhaseMode); default one-run. */
  draftPhase?: DraftPhaseMode;
  /** Called after each generation (for a progress bar). */
  onProgress?: (done: number, total: number) => void;
}

/** `off`: no grammar; `on`: the prompt's JSON Schema constrains the output; `no-jump-forward`: the same without jump-forward. */
export const GRAMMAR_MODES = ['off', 'on', 'no-jump-forward'] as const;
export type GrammarMode = (typeof GRAMMAR_MODES)[number];

export interface OfflineResult {
  policy: string;
  grammar: GrammarMode;
  dataset: DatasetName;
  prompts: number;
  new_tokens: number;
  wall_s: number;
  tokens_per_s: number;
  /** tokens_per_s / tokens_per_s of `none` in the same run; null without a `none` entry. */
  speedup_vs_none: number | null;
  rounds: number;
  draft_tokens: number;
  accepted_tokens: number;
  mean_accepted_per_round: number;
  /** Output tokens per target forward pass (Spec-Bench's tau). */
  tokens_per_target_call: number;
  acceptance_rate: number;
  /** Drafted but not accepted / drafted (0 when nothing was drafted). */
  discard_rate: number;
  /** Target calls / output tokens (1 for target-only decoding; lower is better). */
  verification_rate: number;
  /** Time in the draft loop per drafted candidate, and in verification (target pass, acceptance, rollback) per round, ms. */
  draft_ms_per_step: number;
  target_ms_per_call: number;
  /** specdec++: the mean threshold h its rounds ran with (the draft controller's choice with `--threshold auto`); null for other policies. */
  mean_threshold: number | null;
  /** Share of wall time spent outside ONNX Runtime's run(): sampling, copies, rollback. */
  overhead_fraction: number;
  /** Greedy only: whether every output equals `none`'s (with the same grammar mode) token for token (null when not checked). */
  matches_none: boolean | null;
  /** With a grammar: ms computing token masks (xgrammar) and applying them to logits rows, per output token. */
  mask_ms_per_token: number | null;
  /** With a grammar: that time as a share of the wall time. */
  mask_share: number | null;
}

interface Totals {
  newTokens: number;
  wallMs: number;
  runMs: number;
  draftMs: number;
  targetMs: number;
  rounds: number;
  drafted: number;
  accepted: number;
  outputs: string[];
  maskMs: number;
  /** Sum of specdec++'s h over its rounds, and the rounds that had one. */
  thresholdSum: number;
  thresholdRounds: number;
}

export async function runOfflineBench(pair: ModelPair, opts: OfflineBenchOptions): Promise<OfflineResult[]> {
  const modes = opts.grammar ?? ['off'];
  /** Entry e: policy e % policies under grammar mode floor(e / policies). */
  const entries = modes.flatMap((grammar) => opts.policies.map((policy) => ({ grammar, policy })));
  const totals: Totals[] = entries.map(() => ({ newTokens: 0, wallMs: 0, runMs: 0, draftMs: 0, targetMs: 0, rounds: 0, drafted: 0, accepted: 0, outputs: [], maskMs: 0, thresholdSum: 0, thresholdRounds: 0 }));
  const total = opts.prompts.length * entries.length;
  const grammars = modes.some((m) => m !== 'off') ? await pair.grammars() : undefined;
  const constraintFor = async (prompt: BenchPrompt, mode: GrammarMode) => {
    if (mode === 'off') return undefined;
    if (!prompt.schema) throw new Error(`prompt ${prompt.id} has no JSON Schema for a grammar`);
    return grammars!.constraint({ type: 'json_schema', schema: JSON.stringify(prompt.schema) });
  };

  // Warm up every entry once so first-run allocation (and grammar compilation) does not count.
  for (const { grammar, policy } of entries) {
    for (const prompt of grammar === 'off' ? [opts.prompts[0]!] : opts.prompts) {
      const constraint = await constraintFor(prompt, grammar);
      await generateText(pair, { messages: prompt.messages }, { maxTokens: 8, sampling: opts.sampling, seed: opts.seed, policy, constraint });
    }
  }
  let done = 0;
  for (const [i, prompt] of opts.prompts.entries()) {
    for (const [p, { grammar, policy }] of entries.entries()) {
      // Each prompt on its own: suffix decoding's global tree would otherwise hold this prompt's answer from the entry before.
      pair.decoder.suffixCaches.clear();
      const constraint: GrammarConstraint | undefined = await constraintFor(prompt, grammar);
      const t = totals[p]!;
      const onRound = (round: RoundStats) => {
        if (round.threshold === undefined) return;
        t.thresholdSum += round.threshold;
        t.thresholdRounds++;
      };
      const r = await generateText(pair, { messages: prompt.messages }, { maxTokens: opts.maxTokens, sampling: opts.sampling, seed: opts.seed + i, policy, constraint, jumpForward: grammar !== 'no-jump-forward', draftPhase: opts.draftPhase, onRound });
      if (constraint) t.maskMs += (constraint.maskMicros + constraint.applyMicros) / 1000;
      t.newTokens += r.token_ids.length;
      t.wallMs += r.stats.wall_ms;
      t.runMs += r.stats.run_ms;
      t.draftMs += r.stats.draft_ms;
      t.targetMs += r.stats.target_ms;
      t.rounds += r.stats.rounds;
      t.drafted += r.stats.draft_tokens;
      t.accepted += r.stats.accepted_tokens;
      t.outputs.push(r.token_ids.join(','));
      opts.onProgress?.(++done, total);
    }
  }

  const tps = (t: Totals) => (t.wallMs > 0 ? (t.newTokens / t.wallMs) * 1000 : 0);
  return entries.map(({ grammar, policy }, p) => {
    const t = totals[p]!;
    const noneIndex = entries.findIndex((e) => e.grammar === grammar && e.policy.policy === 'none');
    const noneTps = noneIndex >= 0 ? tps(totals[noneIndex]!) : undefined;
    const reference = noneIndex >= 0 && isGreedy(opts.sampling) ? totals[noneIndex]!.outputs : undefined;
    return {
      policy: policyLabel(policy),
      grammar,
      dataset: opts.dataset,
      prompts: opts.prompts.length,
      new_tokens: t.newTokens,
      wall_s: t.wallMs / 1000,
      tokens_per_s: tps(t),
      speedup_vs_none: noneTps ? tps(t) / noneTps : null,
      rounds: t.rounds,
      draft_tokens: t.drafted,
      accepted_tokens: t.accepted,
      mean_accepted_per_round: t.rounds ? t.accepted / t.rounds : 0,
      tokens_per_target_call: t.rounds ? t.newTokens / t.rounds : 0,
      acceptance_rate: t.drafted ? t.accepted / t.drafted : 0,
      discard_rate: t.drafted ? (t.drafted - t.accepted) / t.drafted : 0,
      verification_rate: t.newTokens ? t.rounds / t.newTokens : 0,
      draft_ms_per_step: t.drafted ? t.draftMs / t.drafted : 0,
      target_ms_per_call: t.rounds ? t.targetMs / t.rounds : 0,
      mean_threshold: t.thresholdRounds > 0 ? t.thresholdSum / t.thresholdRounds : null,
      overhead_fraction: t.wallMs > 0 ? 1 - t.runMs / t.wallMs : 0,
      matches_none: reference ? t.outputs.every((o, i) => o === reference[i]) : null,
      mask_ms_per_token: grammar === 'off' ? null : t.newTokens ? t.maskMs / t.newTokens : 0,
      mask_share: grammar === 'off' ? null : t.wallMs > 0 ? t.maskMs / t.wallMs : 0,
    };
  });
}
