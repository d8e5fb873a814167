/**
 * The pair's step costs as the engine pays them, for choosing the specdec++ threshold
 * (threshold.ts): the time of one draft step and of one verification pass over n tokens.
 *
 * They are measured inside real decoding (greedy, policy `none` and fixed K = 1..MAX_K, on
 * training prompts), not on each model alone: on a small CPU the target's thread pool keeps
 * spinning after each pass and slows the draft steps that follow, so a draft step in decoding
 * costs several times what it costs in isolation, and the first step of a round (right after
 * the target's pass, caches cold) costs more than the later ones. Each round reports its
 * draft-loop and verification times (`GenerateOptions.onRound`); a round with k candidates ran
 * k draft passes and one target pass over k + 1 (or k + 2) tokens. The draft loop's time is
 * fitted as a per-round cost plus a cost per step over k = 1..MAX_K. Rounds of the first call
 * (the prompt's prefill) are left out, and trimmed means keep other processes' spikes out.
 */
import type { DecoderModel } from '../../engine/model.js';
import { GREEDY } from '../../engine/sampling.js';
import { SpeculativeDecoder } from '../../engine/speculative.js';
import type { RoundStats } from '../../engine/stats.js';
import type { PolicySpec } from '../../engine/stop-policy.js';
import type { StepCosts } from './head-data.js';

/** Largest fixed K run; target passes over up to MAX_K + 1 tokens are measured. */
const MAX_K = 8;
/** Tokens generated per measurement run (costs grow with the context, so about a typical answer). */
const RUN_TOKENS = 128;
/** Sweeps over the policies (interleaved, so slow phases of the machine hit all alike). */
const SWEEPS = 3;

/** Mean of the middle 90%: throughput follows the mean, and the trim keeps other processes' spikes out. */
function trimmedMean(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const cut = Math.floor(sorted.length * 0.05);
  const kept = sorted.slice(cut, sorted.length - cut);
  return kept.reduce((a, b) => a + b, 0) / kept.length;
}

export async function measureStepCosts(target: DecoderModel, draft: DecoderModel, prompts: readonly (readonly number[])[]): Promise<StepCosts> {
  const decoder = new SpeculativeDecoder(target, draft);
  const policies: PolicySpec[] = [{ policy: 'none' }, ...Array.from({ length: MAX_K }, (_, i): PolicySpec => ({ policy: 'fixed', k: i + 1 }))];
  const draftByCandidates: number[][] = Array.from({ length: MAX_K + 1 }, () => []);
  const targetByCandidates: number[][] = Array.from({ length: MAX_K + 1 }, () => []);
  for (let sweep = 0; sweep < SWEEPS; sweep++) {
    for (const prompt of prompts) {
      for (const policy of policies) {
        let first = true;
        const onRound = (r: RoundStats) => {
          if (first) {
            first = false;
            return;
          }
          draftByCandidates[r.drafted]!.push(r.draftMs);
          targetByCandidates[r.drafted]!.push(r.targetMs);
        };
        await decoder.start(prompt, { maxTokens: RUN_TOKENS, sampling: GREEDY, policy, eosTokenIds: [], onRound }).run();
      }
    }
  }
  // Fixed K rounds draft K candidates except where the length limit cuts them, so nearly every
  // pass length is sampled; a missing one is interpolated from its neighbours.
  const measured = targetByCandidates.map((t) => (t.length > 0 ? trimmedMean(t) : NaN));
  const last = measured.findLastIndex((x) => !Number.isNaN(x));
  const target_ms = measured.slice(0, last + 1).map((x, i, all) => {
    if (!Number.isNaN(x)) return x;
    const lo = all.slice(0, i).findLastIndex((y) => !Number.isNaN(y));
    const hi = i + 1 + all.slice(i + 1).findIndex((y) => !Number.isNaN(y));
    return lo < 0 ? all[hi]! : all[lo]! + ((all[hi]! - all[lo]!) * (i - lo)) / (hi - lo);
  });
  // Draft loop time against k: a least-squares line through the per-k means.
  const points = draftByCandidates.flatMap((t, k) => (k > 0 && t.length > 0 ? [[k, trimmedMean(t)] as const] : []));
  const meanK = points.reduce((a, [k]) => a + k, 0) / points.length;
  const meanMs = points.reduce((a, [, ms]) => a + ms, 0) / points.length;
  const sxx = points.reduce((a, [k]) => a + (k - meanK) ** 2, 0);
  const slope = sxx > 0 ? points.reduce((a, [k, ms]) => a + (k - meanK) * (ms - meanMs), 0) / sxx : meanMs / meanK;
  const draft_step_ms = Math.max(slope, 0);
  const draft_round_ms = Math.max(meanMs - draft_step_ms * meanK, 0);
  return { draft_step_ms, draft_round_ms, target_ms };
}
