/**
 * Top-k and top-p (nucleus) truncation of one logits row without sorting the vocabulary.
 *
 * Tokens are ranked by logit, highest first, ties broken by the lower id (the order a stable
 * sort by probability gives). Both truncations keep a prefix of that ranking:
 * - top-k: the k first, found by a bounded min-heap in one pass over the row (O(V log k));
 * - top-p: the shortest prefix whose probability reaches p. Its last token is found from a
 *   histogram of the weights exp((l - max) / T) over log-spaced buckets filled in the pass that
 *   computes them: whole buckets are kept until the one where the running mass crosses p, and
 *   only that bucket's tokens are ranked (refined by further histograms while it is large, then
 *   sorted). The vocabulary is never sorted, whatever the shape of the distribution. A token's
 *   weight is its bucket's exp(-b / 32) (a table) times exp(-f / 4096) of its step f < 128 of
 *   1/4096 nat in the bucket (a second table) times exp(-d) of the offset d < 1/4096 left (a
 *   Taylor polynomial of degree 3, relative error below d^4 / 4! < 1.6e-16): no `Math.exp` per
 *   token, which was most of the row's time at V = 151,936.
 * Logits of -Infinity (a grammar's mask) and NaN never enter the kept set.
 */

/** Buckets of the first histogram, per unit of (max - l) / T (width 1/32 in log-probability). */
const BUCKETS_PER_NAT = 32;
/**
 * Tokens more than this many nats below the best (weight < e^-48.6 = 2^-53 / 151,936) get weight
 * 0 without an exp: all of them together weigh less than one unit in the last place of the
 * total (>= 1, the best token's weight) for vocabularies up to 280,000, so the total and the
 * nucleus are those of the full sum up to its own rounding.
 */
const NEGLIGIBLE_NATS = 48.6;
/** Width of a first-histogram bucket in nats. */
const BUCKET_NATS = 1 / BUCKETS_PER_NAT;
/** exp(-b / BUCKETS_PER_NAT) for every bucket b a weighed token can fall in (z < NEGLIGIBLE_NATS). */
const BUCKET_WEIGHT = Float64Array.from({ length: Math.ceil(NEGLIGIBLE_NATS * BUCKETS_PER_NAT) }, (_, b) => Math.exp(-b * BUCKET_NATS));
/** Steps of a bucket in expNeg's second table (a power of two: a step index's bucket is a shift away). */
const STEP_SHIFT = 7;
const STEPS_PER_BUCKET = 1 << STEP_SHIFT;
/** Steps per nat: z * STEPS_PER_NAT, floored, is a token's step; its bucket is the step >> STEP_SHIFT (exactly floor(z * BUCKETS_PER_NAT): both scalings are by powers of two). */
const STEPS_PER_NAT = BUCKETS_PER_NAT * STEPS_PER_BUCKET;
const STEP_NATS = 1 / STEPS_PER_NAT;
/** exp(-f / STEPS_PER_NAT) for each step f of a bucket. */
const STEP_WEIGHT = Float64Array.from({ length: STEPS_PER_BUCKET }, (_, f) => Math.exp(-f * STEP_NATS));
/** First-histogram buckets: one per BUCKET_WEIGHT entry, and a last one for the tokens of weight 0 (negligible, masked or NaN). */
const LOG_BUCKETS = BUCKET_WEIGHT.length + 1;
/** Buckets of each refining histogram (linear in weight between the bucket's smallest and largest). */
const REFINE_BUCKETS = 1024;
/** A boundary bucket this small is sorted instead of refined. */
const SORT_BELOW = 256;

/**
 * The k best tokens of a row, best first.
 * @param row logits // [vocab]
 * @param k how many (1 <= k); fewer come back when fewer than k logits are finite or +Infinity
 * @returns token ids ranked by logit, highest first, ties: lower id first // [min(k, finite)]
 */
export function topKIds(row: Float32Array, k: number): Int32Array {
  // Min-heap by rank: heap[0] is the worst kept token (lowest logit; on a tie, the higher id).
  const heapIds = new Int32Array(k);
  const heapLogits = new Float64Array(k);
  let size = 0;
  const worse = (a: number, b: number) => heapLogits[a]! < heapLogits[b]! || (heapLogits[a] === heapLogits[b] && heapIds[a]! > heapIds[b]!);
  const swap = (a: number, b: number) => {
    const id = heapIds[a]!;
    heapIds[a] = heapIds[b]!;
    heapIds[b] = id;
    const l = heapLogits[a]!;
    heapLogits[a] = heapLogits[b]!;
    heapLogits[b] = l;
  };
  const siftDown = (at: number) => {
    for (;;) {
      const left = 2 * at + 1;
      if (left >= size) return;
      let child = left;
      if (left + 1 < size && worse(left + 1, left)) child = left + 1;
      if (!worse(child, at)) return;
      swap(child, at);
      at = child;
    }
  };
  let floor = -Infinity; // the heap root's logit once the heap is full: a later token must beat it strictly (it has a higher id)
  for (let i = 0; i < row.length; i++) {
    const l = row[i]!;
    if (!(l > floor)) continue; // also skips NaN and -Infinity
    if (size < k) {
      heapIds[size] = i;
      heapLogits[size] = l;
      let at = size++;
      while (at > 0) {
        const parent = (at - 1) >> 1;
        if (!worse(at, parent)) break;
        swap(at, parent);
        at = parent;
      }
      if (size === k) floor = heapLogits[0]!;
    } else {
      heapIds[0] = i;
      heapLogits[0] = l;
      siftDown(0);
      floor = heapLogits[0]!;
    }
  }
  // Pop worst first into the back of the result.
  const out = new Int32Array(size);
  for (let n = size - 1; n >= 0; n--) {
    out[n] = heapIds[0]!;
    size--;
    if (size > 0) {
      swap(0, size);
      siftDown(0);
    }
  }
  return out;
}

/** Scratch reused across calls (one row at a time per thread). */
let weightScratch = new Float64Array(0);
let bucketScratch = new Uint16Array(0);
let idScratch = new Int32Array(0);
let memberScratch = new Int32Array(0);

/** The result of `nucleus`: the kept tokens and their unnormalised weights. */
export interface Nucleus {
  /** Kept token ids, ascending. // [n] */
  ids: Int32Array;
  /** exp((l - max) / T) of each kept token. // [n] */
  weights: Float64Array;
  /** Sum of `weights`. */
  mass: number;
}

/**
 * Top-p over a whole row at temperature T: the shortest prefix of the ranking whose mass under
 * softmax(row / T) reaches `topP` (at least one token).
 * @param row logits // [vocab]
 * @param temperature T > 0
 * @param topP in (0, 1]
 * @returns the kept tokens; none when every logit is -Infinity or NaN (a grammar's row after its end)
 */
export function nucleus(row: Float32Array, temperature: number, topP: number): Nucleus {
  const vocab = row.length;
  if (weightScratch.length < vocab) {
    weightScratch = new Float64Array(vocab);
    bucketScratch = new Uint16Array(vocab);
    idScratch = new Int32Array(vocab);
    memberScratch = new Int32Array(vocab);
  }
  const w = weightScratch; // written only for the tokens ranked
  const bucketOf = bucketScratch;
  let max = -Infinity;
  for (let i = 0; i < vocab; i++) if (row[i]! > max) max = row[i]!;
  if (!(max > -Infinity)) return { ids: new Int32Array(0), weights: new Float64Array(0), mass: 0 }; // every token masked
  if (max === Infinity) return keepInfinite(row, topP);

  // One pass: weights and the log-spaced histogram of mass. The total is the histogram's sum:
  // a running total would chain every token's addition on the one before (a floating-point add's
  // latency per token), where the histogram's additions land in different buckets and overlap.
  const histogram = new Float64Array(LOG_BUCKETS);
  const invT = 1 / temperature;
  for (let i = 0; i < vocab; i++) {
    const z = (max - row[i]!) * invT; // >= 0; NaN for NaN logits
    if (!(z < NEGLIGIBLE_NATS)) {
      bucketOf[i] = LOG_BUCKETS - 1;
      continue;
    }
    const step = (z * STEPS_PER_NAT) | 0;
    const bucket = step >> STEP_SHIFT;
    bucketOf[i] = bucket;
    histogram[bucket] = histogram[bucket]! + expNeg(z, step);
  }
  let total = 0;
  for (let b = 0; b < LOG_BUCKETS - 1; b++) total += histogram[b]!;
  const target = topP * total;

  // Whole buckets while the mass stays below the target; the crossing bucket is ranked. One
  // pass over the buckets collects both: tokens of earlier buckets are kept (appended without a
  // branch: every id is written, the count advances for the kept ones), the crossing bucket's
  // are members.
  const [crossing, before] = crossingBucket(histogram, 0, target);
  const ids = idScratch;
  const memberIds = memberScratch;
  let n = 0;
  let memberCount = 0;
  for (let i = 0; i < vocab; i++) {
    const b = bucketOf[i]!;
    ids[n] = i;
    n += (b - crossing) >>> 31; // 1 when b < crossing
    if (b === crossing) {
      memberIds[memberCount++] = i;
      const z = (max - row[i]!) * invT;
      w[i] = expNeg(z, (z * STEPS_PER_NAT) | 0);
    }
  }
  const members = memberIds.subarray(0, memberCount);
  const [lastWeight, lastId] = boundary(Array.from(members), w, before, target);

  // Kept: the earlier buckets' tokens and the members ranked at or before the boundary token
  // (lastWeight, lastId), merged in ascending id order. The mass is the earlier buckets' (from
  // the histogram) and the kept members'.
  const kept = new Int32Array(n + members.length);
  let mass = before;
  let k = 0;
  let j = 0;
  for (const i of members) {
    const wi = w[i]!;
    if (!(wi > lastWeight || (wi === lastWeight && i <= lastId))) continue;
    while (j < n && ids[j]! < i) kept[k++] = ids[j++]!;
    mass += wi;
    kept[k++] = i;
  }
  while (j < n) kept[k++] = ids[j++]!;
  const weights = new Float64Array(k);
  for (let m = 0; m < k; m++) {
    const z = (max - row[kept[m]!]!) * invT;
    weights[m] = expNeg(z, (z * STEPS_PER_NAT) | 0);
  }
  return { ids: kept.subarray(0, k), weights, mass };
}

/** Coefficients of the Taylor polynomial of exp(-d) (expNeg). */
const HALF = 1 / 2;
const THIRD = 1 / 3;

/**
 * exp(-z) for 0 <= z < NEGLIGIBLE_NATS as exp(-b / 32) * exp(-f / 4096) * exp(-d), with
 * step = 128 b + f = floor(z * 4096) and d = z - step / 4096 in [0, 1/4096): two table entries
 * times Taylor's series of exp(-d) to degree 3 in Horner form (relative error below
 * d^4 / 4! < 1.6e-16, the tables' own rounding aside). Every weight of a row comes from here, so
 * ranking and mass agree wherever a token's weight is computed.
 * @param step floor(z * STEPS_PER_NAT)
 */
function expNeg(z: number, step: number): number {
  const d = z - step * STEP_NATS;
  return BUCKET_WEIGHT[step >> STEP_SHIFT]! * STEP_WEIGHT[step & (STEPS_PER_BUCKET - 1)]! * (1 - d * (1 - d * HALF * (1 - d * THIRD)));
}

/**
 * The last kept token among `members` (ascending ids, all in one bucket): walking them in rank
 * order from mass `before`, the first whose running mass reaches `target`; the last member when
 * rounding keeps the mass below it.
 * @returns [its weight, its id]
 */
function boundary(members: number[], w: Float64Array, before: number, target: number): [number, number] {
  for (;;) {
    let lo = Infinity;
    let hi = -Infinity;
    for (const i of members) {
      const wi = w[i]!;
      if (wi < lo) lo = wi;
      if (wi > hi) hi = wi;
    }
    if (members.length <= SORT_BELOW || lo === hi) {
      // Rank by weight, ties by id (members are ascending, so a stable sort keeps ids in order).
      if (lo !== hi) members.sort((a, b) => w[b]! - w[a]! || a - b);
      let mass = before;
      for (const i of members) {
        mass += w[i]!;
        if (mass >= target) return [w[i]!, i];
      }
      const last = members[members.length - 1]!;
      return [w[last]!, last];
    }
    // Refine: a linear histogram over [lo, hi], heaviest bucket first.
    const histogram = new Float64Array(REFINE_BUCKETS);
    const per = (REFINE_BUCKETS - 1) / (hi - lo);
    const sub = new Uint16Array(members.length);
    for (let j = 0; j < members.length; j++) {
      const wi = w[members[j]!]!;
      const b = Math.min(REFINE_BUCKETS - 1, Math.floor((hi - wi) * per));
      sub[j] = b;
      histogram[b] = histogram[b]! + wi;
    }
    let crossing: number;
    [crossing, before] = crossingBucket(histogram, before, target);
    const next: number[] = [];
    for (let j = 0; j < members.length; j++) if (sub[j] === crossing) next.push(members[j]!);
    members = next;
  }
}

/**
 * The bucket where the running mass, starting at `before`, reaches `target`, and the mass before
 * it; the last bucket with mass when rounding keeps the total below the target.
 */
function crossingBucket(histogram: Float64Array, before: number, target: number): [number, number] {
  let last = -1;
  let lastBefore = before;
  for (let b = 0; b < histogram.length; b++) {
    const m = histogram[b]!;
    if (m <= 0) continue;
    if (before + m >= target) return [b, before];
    last = b;
    lastBefore = before;
    before += m;
  }
  return [last, lastBefore];
}

/** Rows with +Infinity logits: softmax puts all mass on them, equally; top-p keeps the lowest ids it needs. */
function keepInfinite(row: Float32Array, topP: number): Nucleus {
  const all: number[] = [];
  for (let i = 0; i < row.length; i++) if (row[i] === Infinity) all.push(i);
  let n = 1;
  while (n < all.length && n < topP * all.length) n++;
  return { ids: Int32Array.from(all.slice(0, n)), weights: new Float64Array(n).fill(1), mass: n };
}
