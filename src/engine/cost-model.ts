/**
 * What a pass costs at the current load, measured online, and the specdec++ threshold that
 * follows from it (`specdec++` without a threshold: `--threshold auto`).
 *
 * Measured, with exponential forgetting (the last ~HALF_LIFE observations weigh half):
 * - T(n): a verification over n rows (the pass and every sequence's acceptance and rollback; a
 *   batch's rows padded to its longest input, `observeVerify`), a line a + b n (b: a row's cost) fitted to the verifications and the prompt pieces' target
 *   passes (these pin b: under one policy the tokens per sequence hardly vary; why a line and
 *   not a plane over tokens and sequences: docs/decisions/2026-11-30-auto-threshold-measured-arms.md);
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
 * offline by simulating decoding alone with the pair's measured costs (heads/training/threshold.ts), is
 * the anchor at B = 1; at batch B the bound on P_s scales by rho(B) = (c(B) / v(B)) / (c(1) / v(1)):
 *
 *   h(B) = 1 - (1 - h_1) rho(B),   clamped to [0, 1].
 *
 * Whether a round of B > 1 sequences drafts at all, and with h(B) or h_1, is measured rather than
 * modelled (RoundArms below): on a compute-bound batch a verified token costs what a decoded one
 * does and rejected candidates are pure loss, and the rounds themselves show it. Alone, a
 * sequence always drafts, with h = 1 - c(1) / (a v(1)) once enough is measured (h_1 before):
 * the rule above with its bound on P_s taken as it stands (`aloneThreshold`).
 */

/**
 * Bounds of the threshold chosen for a sequence alone (`aloneThreshold`): the i.i.d. model
 * behind it is rough at the extremes (h near 0 drafts one candidate per round whatever the head
 * says, near 1 drafts to K_max), so the measured h is kept where the head's rule still decides.
 */
export const ALONE_H_MIN = 0.1;
export const ALONE_H_MAX = 0.9;
/** Longest draft the i.i.d. model of `atBatch` considers. */
const MAX_MODELLED_DRAFT = 16;
/** Observations after which an observation's weight has halved. */
const HALF_LIFE = 200;
const DECAY = 0.5 ** (1 / HALF_LIFE);
/** Passes of each kind (and rounds) seen before the model adapts the threshold; until then the anchor holds. */
export const MIN_OBSERVATIONS = 16;
/** Rounds a new batch-size bucket plays without drafting before it tries the drafting arms (RoundArms). */
export const MIN_ARM_ROUNDS = 8;
/** Rounds each arm plays in a bucket before the best one is chosen (RoundArms). */
export const MIN_TRIES = 2;
/** Most of a bucket's rounds (recency-weighted) the worse arm is played to see a change. */
export const EXPLORE_SHARE = 1 / 16;
/** Most of a bucket's time (recency-weighted) exploring may cost (RoundArms). */
export const EXPLORE_COST = 1 / 200;
/** A round slower than this many times its arm's usual time per token counts as the usual time (RoundArms). */
const OUTLIER_FACTOR = 3;

/**
 * A least-squares line y = a + b x over observations weighted by recency: each `observe` first
 * decays what came before; a caller that keeps several lines on one clock calls `decay` and
 * `add` itself.
 */
class RecentLine {
  private w = 0;
  private sx = 0;
  private sy = 0;
  private sxx = 0;
  private sxy = 0;
  count = 0;

  /**
   * @param flat with too little spread in x to tell a slope (variance at most `minSpread` x
   *   max(1, mean x^2)): `mean`, the mean y at any x; `proportional`, y proportional to x
   */
  constructor(private readonly options: { flat: 'mean' | 'proportional'; minSpread: number } = { flat: 'mean', minSpread: 1e-9 }) {}

  decay(): void {
    this.w *= DECAY;
    this.sx *= DECAY;
    this.sy *= DECAY;
    this.sxx *= DECAY;
    this.sxy *= DECAY;
  }

  add(x: number, y: number): void {
    this.w += 1;
    this.sx += x;
    this.sy += y;
    this.sxx += x * x;
    this.sxy += x * y;
    this.count++;
  }

  observe(x: number, y: number): void {
    this.decay();
    this.add(x, y);
  }

  /** Recency-weighted count, sum of x and sum of y. */
  get weight(): number {
    return this.w;
  }
  get sumX(): number {
    return this.sx;
  }
  get sumY(): number {
    return this.sy;
  }

  /**
   * The line's value at x; with too little spread in x to tell a slope, as the constructor's
   * `flat` says; never a negative slope nor a negative intercept (a cost has a fixed part >= 0:
   * else the line through the origin).
   */
  at(x: number): number {
    const mx = this.sx / this.w;
    const my = this.sy / this.w;
    const vx = this.sxx / this.w - mx * mx;
    const flat = !(vx > this.options.minSpread * Math.max(1, mx * mx));
    if (flat && this.options.flat === 'proportional') return (my * x) / mx;
    const slope = flat ? 0 : Math.max(0, (this.sxy / this.w - mx * my) / vx);
    if (my - slope * mx < 0) return (this.sxy / this.sxx) * x;
    return my + slope * (x - mx);
  }

  /** The slope, as `at` uses it. */
  get slope(): number {
    return this.at(1) - this.at(0);
  }

  /** The recency-weighted mean x (NaN before any observation). */
  get meanX(): number {
    return this.sx / this.w;
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
  /** Recency-weighted observations. */
  get weight(): number {
    return this.w;
  }
}

/**
 * How a round of several sequences under the auto threshold drafts: with the head's threshold
 * for a sequence alone (`anchor`, h_1), with the threshold the pass costs give for the batch
 * (`model`, h(B)), or not at all (`plain`).
 */
export type RoundArm = 'anchor' | 'model' | 'plain';
/** The arms, in the order they are first tried after a new bucket's plain rounds. */
export const ROUND_ARMS: readonly RoundArm[] = ['anchor', 'model', 'plain'];
const PLAIN = ROUND_ARMS.indexOf('plain');

/**
 * Which arm rounds of a batch size play, decided by what such rounds delivered: per batch-size
 * bucket (1, 2, 3-4, 5-8, ...: powers of two), the tokens each sequence emitted and the time
 * taken by each arm's rounds, as a line over the batch size, with exponential forgetting. The
 * arm with the most tokens per millisecond at the round's batch size plays, and the others now
 * and then, so that a change in the load is seen. Exploring an arm costs the
 * shortfall of its rate (gap) over the time it plays, plus the drafts' catching up with the
 * prompt and with the tokens they missed while rounds did not draft (a price of switching,
 * kept out of the rate: the rate is that of drafting all along). The other arms are explored, the least played first,
 * while what exploring cost stays within EXPLORE_COST of the bucket's time, each in at most
 * EXPLORE_SHARE of its rounds: a close call is checked more often than a clear one, and an
 * expensive switch less often. A new bucket plays `plain` for its first MIN_ARM_ROUNDS rounds
 * (a first drafting round feeds every sequence's prompt to the draft), then each arm MIN_TRIES
 * times (plain measured again, its warm-up dropped), unless `plain` is best in the nearest smaller settled bucket (then they are
 * only explored). A drafting round's time carries its sequences' prompt feeds spread over the
 * tokens they may emit, not the burst of the first round.
 *
 * This measures the decision directly: the pass-cost lines above cannot tell a token's cost
 * from a sequence's in a batch (a verification's attention reads every sequence's cache), so the
 * rounds, not the model, decide whether and how a batch drafts (the measurements behind this:
 * docs/decisions/2026-11-30-auto-threshold-measured-arms.md).
 */
class RoundArms {
  private readonly buckets: Bucket[] = [];

  private bucket(batch: number): Bucket {
    const i = Math.ceil(Math.log2(Math.max(1, batch)));
    let bucket = this.buckets[i];
    if (!bucket) {
      // A bucket starts plain, then tries the drafting arms, unless plain is best in the nearest
      // smaller bucket that has settled (drafting pays less as a batch grows): a first drafting
      // round feeds every sequence's prompt to the draft, which costs the most in a large batch.
      const j = this.buckets.slice(0, i).findLastIndex((b) => b !== undefined && !b.warmup);
      const tries = j < 0 || bestArm(this.buckets[j]!.arms, 2 ** j) !== PLAIN;
      bucket = this.buckets[i] = { arms: ROUND_ARMS.map(() => new Arm()), warmup: [], tries, explored: 0 };
    }
    return bucket;
  }

  /** The arm a round of `batch` sequences plays: `plain` for the first MIN_ARM_ROUNDS, then each arm MIN_TRIES times (where tried), then the best, the others explored (class comment). */
  choose(batch: number): RoundArm {
    const { arms, tries, explored, warmup } = this.bucket(batch);
    if (warmup) return 'plain';
    // An arm played fewer than MIN_TRIES times is played before anything is weighed against it.
    const untried = arms.findIndex((x) => x.count < MIN_TRIES);
    if (tries && untried >= 0) return ROUND_ARMS[untried]!;
    const best = bestArm(arms, batch);
    const weight = arms.reduce((n, x) => n + x.weight, 0);
    const time = arms.reduce((n, x) => n + x.time, 0);
    // Explore only where a round more (at worst, a round's time lost) stays within the budget.
    if (explored + arms[best]!.msAt(batch) > EXPLORE_COST * time) return ROUND_ARMS[best]!;
    let explore: number | undefined;
    for (const [i, arm] of arms.entries()) {
      if (i === best || arm.weight >= EXPLORE_SHARE * weight) continue;
      if (explore === undefined || arm.weight < arms[explore]!.weight) explore = i;
    }
    return ROUND_ARMS[explore ?? best]!;
  }

  /** A round of `batch` sequences that played `arm`: `tokens` emitted in `ms` (catching up aside), and `switchMs` spent catching up. */
  observe(batch: number, arm: RoundArm, tokens: number, ms: number, switchMs: number): void {
    const bucket = this.bucket(batch);
    const round = { arm: ROUND_ARMS.indexOf(arm), batch, tokens, ms, switchMs };
    if (!bucket.warmup) {
      // An arm other than the best explored: what that cost (its shortfall in rate, and the switch).
      const best = bucket.arms[bestArm(bucket.arms, batch)]!;
      const played = bucket.arms[round.arm]!;
      if (played !== best) bucket.explored += ms * Math.max(0, 1 - played.rate(batch) / best.rate(batch)) + switchMs;
    }
    record(bucket, round);
    if (!bucket.warmup) return;
    bucket.warmup.push(round);
    if (bucket.arms[PLAIN]!.count < MIN_ARM_ROUNDS) return;
    // The first rounds decide nothing by their rates. Where the drafting arms are tried next,
    // plain is measured again after them (MIN_TRIES rounds, like theirs) and the warm-up's plain
    // rounds are dropped: a new bucket's first rounds can stall (a new batch shape's buffers, the
    // caches growing), and a stalled plain arm that loses is seldom explored again. Else (plain
    // plays on) they are replayed, a stall (over OUTLIER_FACTOR times the median time per
    // sequence of its arm) counted at the median; so are rounds of other arms played meanwhile.
    const warmup = bucket.warmup;
    const perSequence = ROUND_ARMS.map((_, i) => median(warmup.filter((r) => r.arm === i).map((r) => r.ms / r.batch)));
    Object.assign(bucket, { arms: ROUND_ARMS.map(() => new Arm()), warmup: undefined });
    for (const r of warmup) {
      if (bucket.tries && r.arm === PLAIN) continue;
      const expected = r.batch * perSequence[r.arm]!;
      record(bucket, { ...r, ms: r.ms > OUTLIER_FACTOR * expected ? expected : r.ms });
    }
  }

  /** Per bucket (bucket i: batches up to 2^i), each arm's tokens per millisecond at 2^i sequences and recency-weighted share of rounds, for reports. */
  snapshot(): { batchUpTo: number; arms: Record<RoundArm, { tokensPerMs: number; share: number }> }[] {
    return this.buckets.flatMap((b, i) => {
      if (!b) return [];
      const weight = b.arms.reduce((n, x) => n + x.weight, 0);
      const arms = Object.fromEntries(ROUND_ARMS.map((name, j) => [name, { tokensPerMs: b.arms[j]!.rate(2 ** i), share: b.arms[j]!.weight / weight }]));
      return [{ batchUpTo: 2 ** i, arms: arms as Record<RoundArm, { tokensPerMs: number; share: number }> }];
    });
  }
}

/**
 * One batch-size bucket: its arms (ROUND_ARMS' order), its first rounds until `plain` has
 * MIN_ARM_ROUNDS, and what exploring has cost (ms, recency-weighted).
 */
interface Bucket {
  arms: Arm[];
  warmup?: BatchRound[];
  /** Whether each arm is tried MIN_TRIES times after the plain rounds (else only explored). */
  tries: boolean;
  explored: number;
}

interface BatchRound {
  /** Index into ROUND_ARMS. */
  arm: number;
  batch: number;
  tokens: number;
  ms: number;
  switchMs: number;
}

function record(bucket: Bucket, r: BatchRound): void {
  bucket.explored *= DECAY;
  for (const arm of bucket.arms) arm.decay();
  bucket.arms[r.arm]!.add(r.batch, r.tokens, r.ms, r.switchMs);
}

/** The index of the arm with the most tokens per millisecond at `batch` sequences. */
function bestArm(arms: Arm[], batch: number): number {
  return arms.reduce((a, x, i) => (x.rate(batch) > arms[a]!.rate(batch) ? i : a), 0);
}

function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[sorted.length >> 1] ?? Infinity;
}

/**
 * Rounds of one arm in one bucket, recency-weighted: the tokens each sequence emitted, and a
 * round's time as a line over its batch size (a bucket spans batch sizes up to 2x apart, and an
 * arm explored now and then must be compared with the best at the same size).
 */
class Arm {
  count = 0;
  switchMs = 0;
  private tokens = 0;
  /** Round time (ms) over batch size; with one batch size seen, proportional to it (every arm compared at the same size then keeps its measured rate). */
  private readonly roundMs = new RecentLine({ flat: 'proportional', minSpread: 1e-6 });

  decay(): void {
    this.roundMs.decay();
    this.switchMs *= DECAY;
    this.tokens *= DECAY;
  }

  /**
   * Once the arm has a rate, a round over OUTLIER_FACTOR times the arm's usual time at its batch
   * size (a cache resize, a collection, a stall elsewhere on the machine) counts as the usual time.
   */
  add(batch: number, tokens: number, ms: number, switchMs: number): void {
    const usual = this.count >= MIN_ARM_ROUNDS ? this.msAt(batch) : Infinity;
    this.roundMs.add(batch, ms > OUTLIER_FACTOR * usual ? usual : ms);
    this.switchMs += switchMs;
    this.tokens += tokens;
    this.count++;
  }

  /** Recency-weighted rounds. */
  get weight(): number {
    return this.roundMs.weight;
  }

  /** Milliseconds of rounds and of catching up, for the exploration budget. */
  get time(): number {
    return this.roundMs.sumY + this.switchMs;
  }

  /** A round's time at `batch` sequences, in ms (Infinity before any round). */
  msAt(batch: number): number {
    return this.weight > 0 ? this.roundMs.at(batch) : Infinity;
  }

  /** Tokens per millisecond at `batch` sequences (0 before any round). */
  rate(batch: number): number {
    if (this.roundMs.sumX <= 0) return 0;
    return ((this.tokens / this.roundMs.sumX) * batch) / this.msAt(batch);
  }
}

export class PassCostModel {
  private readonly verify = new RecentLine();
  /** Verifications alone (no prompt pieces): a pass's time over the rows it feeds. */
  private readonly verifyRows = new RecentLine();
  private readonly draftStep = new RecentLine();
  private readonly acceptance = new RecentMean();
  /** Per draft position i (0-based): how often candidate i + 1 was accepted when the target judged it. */
  private readonly positions = Array.from({ length: MAX_MODELLED_DRAFT }, () => new RecentMean());
  private readonly arms = new RoundArms();
  private rounds = 0;

  /**
   * A verification (or, with `promptPiece`, a prompt piece's target pass) over `sequences`
   * sequences feeding `tokens` tokens took `ms` (the sequence count is not modelled). Both
   * lines are fitted over the padded rows: the batch's attention computes `sequences` x its
   * longest input (model.ts `forwardBatch`), which the time follows where drafts differ in
   * length, and a batch drafting k candidates each, as the model predicts, feeds B (k + 1) of both.
   * @param paddedRows `sequences` x the longest input; `tokens` when not given (one sequence, or
   *   inputs of one length)
   */
  observeVerify(_sequences: number, tokens: number, ms: number, promptPiece = false, paddedRows = tokens): void {
    this.verify.observe(paddedRows, ms);
    if (!promptPiece) this.verifyRows.observe(paddedRows, ms);
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
    for (let i = 0; i < Math.min(judged, MAX_MODELLED_DRAFT); i++) this.positions[i]!.observe(i < accepted ? 1 : 0);
  }

  /**
   * A round over `batch` sequences that played `arm` (as {@link roundArm} said) emitted
   * `tokens` tokens in all and took `ms` milliseconds (draft steps, verification, acceptance),
   * besides `catchUpMs` in which the drafts caught up with tokens they had not seen.
   */
  observeBatchRound(batch: number, arm: RoundArm, tokens: number, ms: number, catchUpMs = 0): void {
    this.arms.observe(batch, arm, tokens, ms, catchUpMs);
  }

  /** Whether enough has been measured to adapt. */
  get ready(): boolean {
    return this.verify.count >= MIN_OBSERVATIONS && this.draftStep.count >= MIN_OBSERVATIONS && this.rounds >= MIN_OBSERVATIONS;
  }

  /**
   * c(B) and v(B) of the module comment: with each candidate accepted with probability a (the
   * live rate), k candidates emit (1 - a^(k+1)) / (1 - a) tokens per sequence for
   * [T(B (k + 1)) + k D(B)] / B of time, and v(B) is that time per token at the best k.
   */
  private atBatch(batch: number): { c: number; v: number } {
    const a = Math.min(this.acceptance.value, 0.999);
    const d = this.draftStep.at(batch);
    let v = Infinity;
    for (let k = 0; k <= MAX_MODELLED_DRAFT; k++) {
      const tokens = (1 - a ** (k + 1)) / (1 - a);
      v = Math.min(v, (this.verify.at(batch * (k + 1)) + k * d) / batch / tokens);
    }
    return { c: this.verify.slope + d / batch, v };
  }

  /**
   * How a round of `batch` sequences under the auto threshold drafts (once per round; RoundArms'
   * comment): alone always with the anchor, which the head's build found to pay for this pair
   * alone (a plain round alone would leave no draft step to measure whether drafting pays again);
   * in a batch, plain where the measured costs say no draft pays (`draftDepth` 0), else as the
   * rounds of that batch size delivered.
   * @param batch sequences in the round (>= 1)
   */
  roundArm(batch: number): RoundArm {
    if (batch <= 1) return 'anchor';
    return this.draftDepth(batch) === 0 ? 'plain' : this.arms.choose(batch);
  }

  /**
   * How many candidates per sequence a round of `batch` sequences should draft at most: the k
   * in [0, kMax] with the most tokens per millisecond predicted from what was measured,
   *
   *   rate(k) = B (1 + S_1 + ... + S_k) / (V(B (k + 1)) + k D(B)),
   *
   * where S_i is the live probability that the first i candidates all survive (the product of
   * each position's measured acceptance, the overall rate where a position has too little
   * history), V(n) a verification over n rows and D(B) a draft step over B sequences (module
   * comment; the expected-tokens form is Leviathan et al. 2023, arXiv 2211.17192, eq. 1, with
   * per-position rates). V is fitted to verifications alone over their padded rows (sequences x
   * the longest input: a batch's attention is padded to it, so drafts of unequal lengths cost
   * what the longest costs for every sequence, and k candidates each are B (k + 1) rows), whose
   * rows read every sequence's cache; its slope is at least the prompt pieces' (a prompt token reads less than a verified
   * row), which pins it while the rows of the verifications hardly vary. 0 means drafting does
   * not pay at this batch size (`roundArm` then plays plain rounds); ties go to the shorter draft.
   * @param batch sequences in the round (>= 1)
   * @param kMax the longest draft considered (at most 16)
   * @returns k, or undefined until enough is measured
   */
  draftDepth(batch: number, kMax = MAX_MODELLED_DRAFT): number | undefined {
    const a = this.acceptance.value;
    if (!this.ready || this.verifyRows.count < MIN_OBSERVATIONS || !(a >= 0)) return undefined;
    const rows = this.verifyRows.meanX;
    const atRows = this.verifyRows.at(rows);
    const slope = Math.max(this.verifyRows.slope, this.verify.slope);
    const verifyMs = (n: number) => (atRows - slope * rows >= 0 ? atRows + slope * (n - rows) : (atRows * n) / rows);
    const draftMs = this.draftStep.at(batch);
    let best = 0;
    let bestRate = batch / verifyMs(batch);
    let tokens = 1;
    let survive = 1;
    for (let k = 1; k <= Math.min(kMax, MAX_MODELLED_DRAFT); k++) {
      const position = this.positions[k - 1]!;
      survive *= position.weight >= MIN_OBSERVATIONS ? position.value : Math.min(a, 0.999);
      tokens += survive;
      const rate = (batch * tokens) / (verifyMs(batch * (k + 1)) + k * draftMs);
      if (rate > bestRate) [best, bestRate] = [k, rate];
    }
    return best;
  }

  /**
   * The specdec++ threshold h for a round of `batch` sequences that drafts, from the anchor h_1
   * (the head's recommended threshold, right for a sequence decoding alone); h_1 until enough
   * is measured.
   * @param anchor h_1 in [0, 1]
   * @param batch sequences in the round (>= 1)
   */
  threshold(anchor: number, batch: number): number {
    if (!this.ready || !Number.isFinite(this.acceptance.value)) return anchor;
    const here = this.atBatch(batch);
    const alone = this.atBatch(1);
    const rho = here.c / here.v / (alone.c / alone.v);
    const threshold = Math.min(1, Math.max(0, 1 - (1 - anchor) * rho));
    return Number.isFinite(threshold) ? threshold : anchor;
  }

  /**
   * The specdec++ threshold for a sequence decoding alone, from the measured costs: a candidate
   * pays while P_s > c(1) / (a v(1)) (module comment), so h = 1 - c(1) / (a v(1)), clamped to
   * [ALONE_H_MIN, ALONE_H_MAX]; the anchor (the head's recommended h, fitted offline at the
   * costs of its build) is the prior until enough is measured.
   * @param anchor h_1 in [0, 1]
   */
  aloneThreshold(anchor: number): number {
    const a = this.acceptance.value;
    if (!this.ready || !(a > 0)) return anchor;
    const { c, v } = this.atBatch(1);
    const h = 1 - c / (Math.min(a, 0.999) * v);
    return Number.isFinite(h) ? Math.min(ALONE_H_MAX, Math.max(ALONE_H_MIN, h)) : anchor;
  }

  /** A verification pass feeding `tokens` tokens, ms, as measured; undefined until enough is measured. */
  verifyMs(tokens: number): number | undefined {
    return this.ready ? this.verify.at(tokens) : undefined;
  }

  /** A draft step of one sequence, ms, as measured; undefined until enough is measured. */
  get draftStepMs(): number | undefined {
    return this.ready ? this.draftStep.at(1) : undefined;
  }

  /** The measured quantities, for reports. */
  snapshot(): {
    verifyMsPerPass: number;
    verifyMsPerToken: number;
    draftMsPerStep: number;
    acceptance: number;
    rounds: number;
    roundArms: ReturnType<RoundArms['snapshot']>;
  } {
    return {
      verifyMsPerPass: this.verify.at(0),
      verifyMsPerToken: this.verify.slope,
      draftMsPerStep: this.draftStep.at(1),
      acceptance: this.acceptance.value,
      rounds: this.rounds,
      roundArms: this.arms.snapshot(),
    };
  }
}
