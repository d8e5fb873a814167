/**
 * What a pass costs at the current load, measured online, and the specdec++ threshold that
 * follows from it (`specdec++` without a threshold: `--threshold auto`).
 *
 * Measured, with exponential forgetting (the last ~HALF_LIFE observations weigh half):
 * - T(n): a verification over n tokens (the pass and every sequence's acceptance and rollback),
 *   a line a + b n (b: a token's cost) fitted to the verifications and the prompt pieces' target
 *   passes (these pin b: under one policy the tokens per sequence hardly vary, and a plane over
 *   tokens and sequences, tried first, could not tell a token's cost from a sequence's and kept
 *   drafting where it lost);
 * - D(B): a draft step over B sequences (the pass and every sequence's sampling and head), a
 *   line fitted to the draft steps;
 * - the live acceptance rate of the candidates the target judged (on this traffic, not on the
 *   head's training data).
 *
 * The rule. Throughput is a ratio (tokens / time), so a candidate is worth drafting when its
 * expected tokens times the time a token costs at the best operating point exceed its cost
 * (Dinkelbach's view of ratio objectives). With candidates accepted independently at the live rate
 * a, k candidates per sequence emit (1 - a^(k+1)) / (1 - a) tokens for [T(B (k + 1)) + k D(B)] / B
 * of time; the best k*(B) of that model gives v(B), the time per token there. Drafting one more
 * candidate for one sequence costs c(B) = b + D(B) / B (its verify token, and its share of a draft pass), and gains an
 * accepted token with probability P_s a, where P_s is the head's probability that every
 * candidate so far survives and a the acceptance of the next one. It pays while
 * P_s > c(B) / (a v(B)): the same form as SpecDec++'s rule (stop when 1 - P_s > h; Huang et al.
 * 2024, arXiv 2405.19715, whose optimal h likewise grows with the cost of a draft step relative
 * to a verification), with 1 - h proportional to c(B) / v(B). The head's recommended h, chosen
 * offline by simulating decoding alone with the pair's measured costs (heads/threshold.ts), is
 * the anchor at B = 1; at batch B the bound on P_s scales by rho(B) = (c(B) / v(B)) / (c(1) / v(1)):
 *
 *   h(B) = 1 - (1 - h_1) rho(B),   clamped to [0, 1].
 *
 * Drafting stops altogether for a round of B > 1 sequences when k*(B) = 0: on a compute-bound
 * batch a verified token costs what a decoded one does and rejected candidates are pure loss.
 * (Alone, the anchor stands: drafting off would leave the acceptance rate unmeasured for good.)
 */

/** Longest draft the i.i.d. model of `atBatch` considers. */
const MAX_MODELLED_DRAFT = 16;
/** Observations after which an observation's weight has halved. */
const HALF_LIFE = 200;
const DECAY = 0.5 ** (1 / HALF_LIFE);
/** Passes of each kind (and rounds) seen before the model adapts the threshold; until then the anchor holds. */
export const MIN_OBSERVATIONS = 16;

/** A least-squares line y = a + b x over observations weighted by recency. */
class RecentLine {
  private w = 0;
  private sx = 0;
  private sy = 0;
  private sxx = 0;
  private sxy = 0;
  count = 0;

  observe(x: number, y: number): void {
    this.w = this.w * DECAY + 1;
    this.sx = this.sx * DECAY + x;
    this.sy = this.sy * DECAY + y;
    this.sxx = this.sxx * DECAY + x * x;
    this.sxy = this.sxy * DECAY + x * y;
    this.count++;
  }

  /**
   * The line's value at x; with too little spread in x to tell a slope, the mean (slope 0);
   * never a negative slope nor a negative intercept (a cost has a fixed part >= 0: else the
   * line through the origin).
   */
  at(x: number): number {
    const mx = this.sx / this.w;
    const my = this.sy / this.w;
    const vx = this.sxx / this.w - mx * mx;
    const slope = vx > 1e-9 * Math.max(1, mx * mx) ? Math.max(0, (this.sxy / this.w - mx * my) / vx) : 0;
    if (my - slope * mx < 0) return (this.sxy / this.sxx) * x;
    return my + slope * (x - mx);
  }

  /** The slope, as `at` uses it. */
  get slope(): number {
    return this.at(1) - this.at(0);
  }
}

/** A recency-weighted mean. */
class RecentMean {
  private w = 0;
  private s = 0;
  observe(y: number, weight = 1): void {
    this.w = this.w * DECAY + weight;
    this.s = this.s * DECAY + y * weight;
  }
  get value(): number {
    return this.w > 0 ? this.s / this.w : NaN;
  }
}

/** What the auto threshold decides for a round. */
export interface AutoThreshold {
  /** h for this round. */
  threshold: number;
  /** False when drafting does not pay at this load (the round drafts nothing). */
  draft: boolean;
}

export class PassCostModel {
  private readonly verify = new RecentLine();
  private readonly draftStep = new RecentLine();
  private readonly acceptance = new RecentMean();
  private rounds = 0;

  /** A verification (or a prompt piece's target pass) over `sequences` sequences feeding `tokens` tokens took `ms` (the sequence count is not modelled). */
  observeVerify(_sequences: number, tokens: number, ms: number): void {
    this.verify.observe(tokens, ms);
  }

  /** A draft step over `sequences` sequences took `ms`. */
  observeDraft(sequences: number, ms: number): void {
    this.draftStep.observe(sequences, ms);
  }

  /** A sequence's round: candidates drafted and accepted. */
  observeRound(drafted: number, accepted: number): void {
    this.rounds++;
    // Candidates the target judged: the accepted ones and the first rejected one.
    const judged = Math.min(drafted, accepted + 1);
    if (judged > 0) this.acceptance.observe(accepted / judged, judged);
  }

  /** Whether enough has been measured to adapt. */
  get ready(): boolean {
    return this.verify.count >= MIN_OBSERVATIONS && this.draftStep.count >= MIN_OBSERVATIONS && this.rounds >= MIN_OBSERVATIONS;
  }

  /**
   * c(B) and v(B) of the module comment, and the best draft length k*(B) of the i.i.d. model:
   * with each candidate accepted with probability a (the live rate), k candidates emit
   * (1 - a^(k+1)) / (1 - a) tokens per sequence for [T(B (k + 1)) + k D(B)] / B of time.
   */
  private atBatch(batch: number): { c: number; v: number; k: number } {
    const a = Math.min(this.acceptance.value, 0.999);
    const d = this.draftStep.at(batch);
    let best = { k: 0, v: Infinity };
    for (let k = 0; k <= MAX_MODELLED_DRAFT; k++) {
      const tokens = (1 - a ** (k + 1)) / (1 - a);
      const time = (this.verify.at(batch * (k + 1)) + k * d) / batch;
      if (time / tokens < best.v) best = { k, v: time / tokens };
    }
    return { c: this.verify.slope + d / batch, ...best };
  }

  /**
   * The specdec++ threshold for a round of `batch` sequences, from the anchor h_1 (the head's
   * recommended threshold, right for a sequence decoding alone).
   * @param anchor h_1 in [0, 1]
   * @param batch sequences in the round (>= 1)
   */
  threshold(anchor: number, batch: number): AutoThreshold {
    if (!this.ready) return { threshold: anchor, draft: true };
    if (!Number.isFinite(this.acceptance.value)) return { threshold: anchor, draft: true };
    const here = this.atBatch(batch);
    const alone = this.atBatch(1);
    const rho = here.c / here.v / (alone.c / alone.v);
    const threshold = Math.min(1, Math.max(0, 1 - (1 - anchor) * rho));
    // Alone, the anchor stands: the head's build found that drafting pays for this pair alone,
    // and a live estimate that says otherwise would, once drafting stopped, never be revised.
    return { threshold: Number.isFinite(threshold) ? threshold : anchor, draft: batch <= 1 || here.k > 0 };
  }

  /** The measured quantities, for reports. */
  snapshot(): { verifyMsPerPass: number; verifyMsPerToken: number; draftMsPerStep: number; acceptance: number; rounds: number } {
    return {
      verifyMsPerPass: this.verify.at(0),
      verifyMsPerToken: this.verify.slope,
      draftMsPerStep: this.draftStep.at(1),
      acceptance: this.acceptance.value,
      rounds: this.rounds,
    };
  }
}
