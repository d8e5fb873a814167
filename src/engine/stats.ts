/** Per-round and per-generation statistics of speculative decoding, as plain data. */
import type { ProposalMethod } from '../proposers/method-stats.js';

export interface RoundStats {
  /** Candidates the draft proposed (k). */
  drafted: number;
  /** Who proposed the candidates (absent when the round verified none): the draft model, prompt lookup or suffix decoding. */
  method?: ProposalMethod;
  /** Candidates the target accepted (n <= k). */
  accepted: number;
  /** Tokens the round added to the output (n + 1, fewer when EOS or the length limit cut it). */
  emitted: number;
  draftMs: number;
  targetMs: number;
  /** specdec++: the threshold h the round ran with (with the auto threshold it follows the load, cost-model.ts). */
  threshold?: number;
  /**
   * The acceptance head's P(accept) for each candidate, when a head was asked (index i for
   * y_{i+1}); with `accepted` this gives the head's live calibration (predicted vs realised).
   */
  acceptProbs?: number[];
}

export interface GenerationStats {
  rounds: number;
  draft_tokens: number;
  accepted_tokens: number;
  /** accepted_tokens / draft_tokens (0 when nothing was drafted). */
  acceptance_rate: number;
  /** Accepted draft tokens per round, not counting the target's own token. */
  mean_accepted_per_round: number;
  /** Output tokens per target forward pass (Spec-Bench's mean accepted length, tau). */
  tokens_per_target_call: number;
  /** Tokens the rounds produced (the work done); a stop string can end the text output earlier (text-generation.ts token_ids). */
  new_tokens: number;
  /** accepted_per_position[i]: rounds whose (i+1)-th candidate was accepted. */
  accepted_per_position: number[];
  draft_ms: number;
  target_ms: number;
  /** Time inside ONNX Runtime's run() across both models. */
  run_ms: number;
  wall_ms: number;
}

/** Accumulates RoundStats into GenerationStats. */
export class StatsCollector {
  private rounds = 0;
  private drafted = 0;
  private accepted = 0;
  private emitted = 0;
  private draftMs = 0;
  private targetMs = 0;
  private readonly perPosition: number[] = [];

  observe(round: RoundStats): void {
    this.rounds++;
    this.drafted += round.drafted;
    this.accepted += round.accepted;
    this.emitted += round.emitted;
    this.draftMs += round.draftMs;
    this.targetMs += round.targetMs;
    for (let i = 0; i < round.accepted; i++) this.perPosition[i] = (this.perPosition[i] ?? 0) + 1;
  }

  summary(wallMs: number, runMs: number): GenerationStats {
    return {
      rounds: this.rounds,
      draft_tokens: this.drafted,
      accepted_tokens: this.accepted,
      acceptance_rate: this.drafted > 0 ? this.accepted / this.drafted : 0,
      mean_accepted_per_round: this.rounds > 0 ? this.accepted / this.rounds : 0,
      tokens_per_target_call: this.rounds > 0 ? this.emitted / this.rounds : 0,
      new_tokens: this.emitted,
      accepted_per_position: [...this.perPosition],
      draft_ms: this.draftMs,
      target_ms: this.targetMs,
      run_ms: runMs,
      wall_ms: wallMs,
    };
  }
}
