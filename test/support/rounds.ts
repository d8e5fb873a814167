/** Driving a generation round by round in tests. */
import type { FinishReason, GenerateOptions, SpeculativeDecoder } from '../../src/engine/speculative.js';
import type { GenerationStats } from '../../src/engine/stats.js';

export interface RoundLog {
  /** Output length before the round. */
  before: number;
  drafted: number;
  accepted: number;
  emitted: number;
}

export interface Run {
  tokens: number[];
  finish: FinishReason | undefined;
  stats: GenerationStats;
  rounds: RoundLog[];
}

/** Runs a generation round by round, recording what each round drafted, accepted and emitted. */
export async function drive(decoder: SpeculativeDecoder, prompt: readonly number[], opts: GenerateOptions): Promise<Run> {
  const g = decoder.start(prompt, opts);
  const rounds: RoundLog[] = [];
  let prev = g.stats;
  while (!g.done) {
    const before = g.tokenIds.length;
    const emitted = await g.step();
    const s = g.stats;
    rounds.push({ before, drafted: s.draft_tokens - prev.draft_tokens, accepted: s.accepted_tokens - prev.accepted_tokens, emitted: emitted.length });
    prev = s;
  }
  return { tokens: [...g.tokenIds], finish: g.finishReason, stats: g.stats, rounds };
}
