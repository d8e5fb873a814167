/**
 * The KV cache written in place: one preallocated buffer per layer and kind (key, value) for all
 * the sequences of a model, laid out in slots, and a sequence's cache = a slot and a length.
 *
 * Layout, row-major: keys [slots, kv_heads, head_dim, capacity] (transposed, so that the
 * attention's scores are one MatMul of the queries with the buffer as it lies), values [slots,
 * kv_heads, capacity, head_dim]. Slot s is the contiguous block [s, ...], which a forward pass
 * sees as a tensor with a batch of 1 (a view: ONNX Runtime reads input tensors where they lie);
 * slots s..s+b-1 are contiguous too, so a batched pass sees the range of slots from the lowest to
 * the highest of its sequences as one view with a batch of b (slots of the range not in the batch
 * are padding there; new caches take the lowest free slot, so live slots stay together). The in-place graphs (onnx/inplace-attention.ts: GPT-2 and Llama-family rebuilds) attend over
 * the first `length` positions of each slot and output only the pass's new rows (`kv_rows.*`,
 * the layer's packed queries, keys and values), which `update` writes at positions length..length+n-1.
 *
 * - No per-pass copy of the past and no per-pass allocation: a pass reads the buffers once.
 * - Rollback (`crop`) is a length change: rows past the length are stale and get overwritten by
 *   the next pass.
 * - Capacity: a pass reads each buffer whole (inplace-attention.ts), so the capacity follows the
 *   longest live sequence in steps of `CAPACITY_STEP` positions, up to the model's context:
 *   growing copies what the live slots hold (every `CAPACITY_STEP` tokens: a small share of a token's cost),
 *   and when the last live cache is released the pool goes back to one step (or to what parked
 *   slots hold). The slot count doubles when every slot is taken and none is parked; slots are
 *   kept for later sequences.
 * - Prefix caching (prefix-cache.ts), when the pool is given a model identity: a released cache's
 *   slot is parked with its rows, and a new cache starts from the longest prefix of its prompt
 *   that a slot holds, taking a parked slot over (no copy) or copying the rows into its own slot
 *   (`copyPositions`, a few ms for a long prompt against a prefill's hundreds). Parked slots
 *   leave least recently used first, when a new cache needs a slot and none is free, or when the
 *   KV budget takes their memory back (`evictOldest`, kv-budget.ts).
 */
import * as ort from 'onnxruntime-node';
import { kvRowsOutput } from '../onnx/inplace-attention.js';
import { kvBytesPerPosition, type ReclaimableKv } from './kv-budget.js';
import { addKvFeeds, checkCrop, type KVCache, type KvLayout } from './kv-cache.js';
import { PREFIX_BLOCK_SIZE, PrefixCache, takesOver } from './prefix-cache.js';

/** Positions a slot's capacity grows by: a pass reads the whole capacity, so a small step keeps it close to the length (64: at most 6% over it at 1,000 positions), and growing copies the buffers once per step (the bundled target: ~1.2 MB per step of a slot). */
export const CAPACITY_STEP = 64;
/** A replaced store is this much larger than what it must hold (address space: its pages are touched only as they are written), so that later growth happens in place. */
const STORE_GROWTH = 4;
/**
 * Stores of at most this many bytes in all (every layer's keys and values) are kept when the
 * pool goes idle, their capacity re-strided in place: giving them back made every request of a
 * sequence-at-a-time load allocate, zero and first-touch its stores again (bundled pair, 2-core
 * CPU: 5 resizes of ~8 ms per sequence and model, 3% of decoding time). Larger ones (a burst of
 * many slots, a large model) are given back.
 */
const IDLE_KEEP_BYTES = 64 * 1024 * 1024;
/**
 * Parked slots (prefix caching) a pool keeps at least before a new sequence takes the least
 * recently used one's slot instead of the pool growing: max(this, live slots). 8: a few
 * conversations' turns apart on a lightly loaded server; under load, as many as are running.
 * Their rows also count against the KV budget (kv-budget.ts), which evicts them by memory.
 */
export const MIN_PARKED_SLOTS = 8;

export class KvSlotPool implements ReclaimableKv {
  /** Buffers in layer order: layer i's keys at 2i ([slots, kvHeads, headDim, capacity]), values at 2i + 1 ([slots, kvHeads, capacity, headDim]). */
  private buffers: Float32Array[] = [];
  /** The memory under each buffer (the buffer is its prefix). */
  private stores: Float32Array[] = [];
  private slotCount = 0;
  private cap: number;
  private readonly free: number[] = [];
  /** The live cache of each slot (what a resize must keep: its first `length` positions). */
  private readonly caches: (PooledKVCache | undefined)[] = [];
  /** Views of each slot in buffer order (a batch of 1), rebuilt when the buffers move. */
  private views: ort.Tensor[][] = [];
  private empty?: ort.Tensor[];
  /** With prefix caching: what each slot's rows hold and which slots are parked. */
  readonly prefix?: PrefixCache;

  /**
   * @param layout the model's KV geometry (float32: the in-place graph is built in float32)
   * @param maxCapacity positions one sequence may reach (the model's context); Infinity is allowed
   * @param prefixIdentity turns prefix caching on: what the rows depend on besides the tokens
   *   (model file, graph, dtype), so that they are never served to another model
   * @throws RangeError for another KV type
   */
  constructor(
    readonly layout: KvLayout,
    readonly maxCapacity: number,
    prefixIdentity?: string,
    /** The graph's attention is the row-independent one (inplace-attention.ts), which needs a slot for every row of a pass: a prompt gets its slot's buffers, not the one-slot empty ones. */
    readonly rowIndependent = false,
  ) {
    if (layout.dtype !== 'float32') throw new RangeError(`an in-place KV cache is float32, not ${layout.dtype}`);
    this.cap = Math.min(CAPACITY_STEP, maxCapacity);
    if (prefixIdentity !== undefined) this.prefix = new PrefixCache(prefixIdentity);
  }

  /** Positions each slot holds now. */
  get capacity(): number {
    return this.cap;
  }


  /** Slots held by live caches and parked ones. */
  get slotsInUse(): number {
    return this.slotCount - this.free.length;
  }

  /** Slots in the pool (free, live and parked). */
  get slots(): number {
    return this.slotCount;
  }

  /** Slots parked with a finished sequence's rows (prefix caching). */
  get parkedSlots(): number {
    return this.prefix?.parkedSlots().length ?? 0;
  }

  /**
   * Bytes of KV rows held by parked slots (positions x kvBytesPerPosition) that are not protected
   * (`protect`): what the budget may take back. A protected slot's rows are a generation's own,
   * inside its reservation.
   */
  get reclaimableBytes(): number {
    return (this.prefix?.parkedPositions() ?? 0) * kvBytesPerPosition(this.layout);
  }

  /** When the least recently used unprotected parked slot was last used (performance.now()); undefined when none is. */
  get oldestUse(): number | undefined {
    return this.prefix?.oldestParkedAt;
  }

  /**
   * Keep the parked slot a new cache for `prompt` would take over (`acquire`: the longest cached
   * prefix, when the slot holds less than a block past it) from leaving, for the budget or for
   * another sequence's slot, until the returned function is called (idempotent). The budget
   * protects a generation's prefix this way while admitting it, so that making room for it never
   * evicts the rows it starts from. A prefix it would copy rather than take over is not held.
   */
  protect(prompt: readonly number[]): () => void {
    const match = this.prefix && prompt.length > 1 ? this.prefix.lookup(prompt.slice(0, -1)) : undefined;
    if (!match || !takesOver(match)) return () => {};
    const prefix = this.prefix!;
    prefix.pin(match.slot);
    let held = true;
    return () => {
      if (held) prefix.unpin(match.slot);
      held = false;
    };
  }

  /**
   * A new cache for a sequence whose prompt is `prompt`. With prefix caching it starts from the
   * longest prefix of the prompt but its last token (which the first round feeds for its logits)
   * that a slot holds: its `length` is then the positions matched (0 without a match, or without
   * prefix caching) and the sequence's passes continue from there.
   * @param prompt the sequence's first tokens (default: none, an empty cache)
   */
  acquire(prompt: readonly number[] = []): PooledKVCache {
    const match = this.prefix && prompt.length > 1 ? this.prefix.lookup(prompt.slice(0, -1)) : undefined;
    let slot: number;
    if (match && takesOver(match)) {
      slot = match.slot;
      this.prefix!.takeOver(slot, match.length);
    } else {
      slot = this.freeSlot(match?.slot);
      this.prefix?.track(slot, match ? prompt.slice(0, match.length) : []);
      if (match) this.copyPositions(match.slot, slot, match.length);
    }
    const cache = new PooledKVCache(this, slot, match?.length ?? 0);
    this.caches[slot] = cache;
    return cache;
  }

  /**
   * A free slot: the lowest one; else, when MIN_PARKED_SLOTS or as many as the live ones are
   * parked, the least recently used unprotected parked one's (not `keep`'s); else one of a pool twice as large.
   */
  private freeSlot(keep?: number): number {
    if (this.free.length === 0) {
      const parked = this.prefix?.parkedSlots() ?? [];
      const lru = this.prefix?.evictableSlots().find((s) => s !== keep);
      const live = this.slotCount - parked.length;
      if (lru !== undefined && parked.length >= Math.max(MIN_PARKED_SLOTS, live)) this.unpark(lru);
      else this.resize(Math.max(1, this.slotCount * 2), this.cap);
    }
    return this.free.pop()!;
  }

  /**
   * Copy positions [start, n) of slot `from` into slot `to` in every layer (keys and values), the
   * rows a sequence shares with another. Cost: (n - start) x kvBytesPerPosition bytes, in runs of
   * n - start values (keys, per head and dim) and of (n - start) x head_dim (values, per head).
   */
  copyPositions(from: number, to: number, n: number, start = 0): void {
    if (n > this.cap) throw new RangeError(`cannot copy ${n} positions from slots of ${this.cap}`);
    const { kvHeads, headDim } = this.layout;
    const cap = this.cap;
    this.buffers.forEach((buffer, b) => {
      const [rows, stride, unit] = b % 2 === 0 ? [kvHeads * headDim, cap, 1] : [kvHeads, cap * headDim, headDim];
      for (let r = 0; r < rows; r++) {
        const src = (from * rows + r) * stride + start * unit;
        buffer.copyWithin((to * rows + r) * stride + start * unit, src, src + (n - start) * unit);
      }
    });
  }

  /**
   * Give the least recently used parked slot that is not protected back (the KV budget needs its memory).
   * @returns the bytes its rows held (0 when none is parked)
   */
  evictOldest(): number {
    const lru = this.prefix?.evictableSlots()[0];
    if (lru === undefined) return 0;
    const bytes = this.prefix!.held(lru) * kvBytesPerPosition(this.layout);
    this.unpark(lru);
    this.shrinkWhenIdle();
    return bytes;
  }

  /** Drop a parked slot's rows and free it. */
  private unpark(slot: number): void {
    this.prefix!.forget(slot);
    this.free.push(slot);
    this.free.sort((a, b) => b - a);
  }

  /** @internal Give a slot back: parked with its rows under prefix caching (when it holds a block), else free. */
  releaseSlot(slot: number): void {
    this.caches[slot] = undefined;
    if (this.prefix && this.prefix.held(slot) >= PREFIX_BLOCK_SIZE) this.prefix.park(slot);
    else {
      this.prefix?.forget(slot);
      this.free.push(slot);
    }
    this.shrinkWhenIdle();
  }

  /** With no live cache, the capacity goes back to one step, or to what the parked slots hold. */
  private shrinkWhenIdle(): void {
    if (this.caches.some((c) => c !== undefined)) return;
    const parked = this.prefix?.parkedSlots() ?? [];
    const held = Math.max(0, ...parked.map((s) => this.prefix!.held(s)));
    const cap = Math.min(Math.max(1, Math.ceil(held / CAPACITY_STEP)) * CAPACITY_STEP, this.maxCapacity);
    if (this.cap > cap) this.resize(this.slotCount, cap);
  }

  /** Make every slot hold at least `positions` positions (in steps of CAPACITY_STEP); RangeError past the context. */
  reserve(positions: number): void {
    if (positions <= this.cap) return;
    if (positions > this.maxCapacity) throw new RangeError(`a KV cache of ${positions} positions exceeds the model's context of ${this.maxCapacity}`);
    this.resize(this.slotCount, Math.min(Math.ceil(positions / CAPACITY_STEP) * CAPACITY_STEP, this.maxCapacity));
  }

  /**
   * Views of `count` adjacent slots from `first` (a batch), in layer order: keys [count, kvHeads,
   * headDim, capacity], values [count, kvHeads, capacity, headDim].
   */
  batchTensors(first: number, count: number): ort.Tensor[] {
    if (first < 0 || count < 1 || first + count > this.slotCount) throw new RangeError(`slots ${first}..${first + count - 1} are not in a pool of ${this.slotCount}`);
    const { kvHeads, headDim, dtype } = this.layout;
    const per = kvHeads * this.cap * headDim;
    return this.buffers.map(
      (buffer, b) => new ort.Tensor(dtype, buffer.subarray(first * per, (first + count) * per), b % 2 === 0 ? [count, kvHeads, headDim, this.cap] : [count, kvHeads, this.cap, headDim]),
    );
  }

  /**
   * One-position tensors of zeros in layer order (keys [1, kvHeads, headDim, 1], values [1,
   * kvHeads, 1, headDim]): the past of an empty sequence, its one position masked by its length 0
   * (one, not none: a buffer of no slots is not worth a special case in the graphs).
   */
  get emptyTensors(): ort.Tensor[] {
    if (!this.empty) {
      const { kvHeads, headDim, layers, dtype } = this.layout;
      const zeros = new Float32Array(kvHeads * headDim);
      this.empty = Array.from({ length: layers * 2 }, (_, b) => new ort.Tensor(dtype, zeros, b % 2 === 0 ? [1, kvHeads, headDim, 1] : [1, kvHeads, 1, headDim]));
    }
    return this.empty;
  }

  /** The views of slot `slot` in layer order: keys [1, kvHeads, headDim, capacity], values [1, kvHeads, capacity, headDim]. */
  slotTensors(slot: number): ort.Tensor[] {
    return this.views[slot]!;
  }

  /**
   * Write `n` new positions of layer `layer` into slot `slot` from a pass's packed QKV rows.
   * @param rows [n, width] row-major: queries first (width - 2 * kv_width values), then the
   *   keys and the values, kv_heads * head_dim each, head-major
   * @param from the first position written
   */
  writeRows(slot: number, layer: number, from: number, n: number, rows: Float32Array, width: number): void {
    const { kvHeads, headDim } = this.layout;
    const cap = this.cap;
    const kvWidth = kvHeads * headDim;
    const keys = this.buffers[2 * layer]!;
    const values = this.buffers[2 * layer + 1]!;
    const qWidth = width - 2 * kvWidth;
    for (let s = 0; s < n; s++) {
      const pos = from + s;
      for (let h = 0; h < kvHeads; h++) {
        const at = s * width + qWidth + h * headDim;
        // keys[slot, h, d, pos]
        const keyBase = (slot * kvHeads + h) * headDim * cap + pos;
        for (let d = 0; d < headDim; d++) keys[keyBase + d * cap] = rows[at + d]!;
        values.set(rows.subarray(at + kvWidth, at + kvWidth + headDim), ((slot * kvHeads + h) * cap + pos) * headDim);
      }
    }
  }

  /**
   * Re-lay the buffers out for `slots` slots of `cap` positions, keeping what the live slots hold
   * (their first `length` positions). Each buffer lives in a larger store, re-strided in place
   * while it fits: first touches of fresh memory cost several times a copy within touched memory,
   * so a store is only replaced, STORE_GROWTH x larger than needed, when it is too small
   * (measured in docs/decisions/2026-11-30-kv-cache-written-in-place.md).
   */
  private resize(slots: number, cap: number): void {
    const { kvHeads, headDim, layers } = this.layout;
    const size = slots * kvHeads * cap * headDim;
    // Runs of a live slot to move: keys one per (head, dim) of `keep` positions, values one per head of keep x headDim.
    const held = (slot: number) => this.caches[slot]?.length ?? (this.prefix?.isParked(slot) ? this.prefix.held(slot) : 0);
    const live = [...Array(this.slotCount).keys()].map((slot) => ({ slot, keep: Math.min(held(slot), cap) })).filter((s) => s.keep > 0);
    // A new store when this one is too small, or (nothing live) much too large and not small enough to keep: the memory of a burst is given back.
    const current = this.stores[0]?.length ?? 0;
    const kept = current * layers * 2 * Float32Array.BYTES_PER_ELEMENT <= IDLE_KEEP_BYTES;
    const fresh = size > current || (live.length === 0 && size * STORE_GROWTH < current && !kept);
    const stores = fresh ? Array.from({ length: layers * 2 }, () => new Float32Array(Math.ceil(size * STORE_GROWTH))) : this.stores;
    for (let b = 0; b < layers * 2; b++) {
      const from = this.stores[b];
      const into = stores[b]!;
      const [perSlot, oldStride, newStride, unit] = b % 2 === 0 ? [kvHeads * headDim, this.cap, cap, 1] : [kvHeads, this.cap * headDim, cap * headDim, headDim];
      const runs = live.flatMap(({ slot, keep }) => Array.from({ length: perSlot }, (_, i) => ({ r: slot * perSlot + i, len: keep * unit })));
      if (from === undefined) continue;
      if (from !== into) {
        for (const { r, len } of runs) into.set(from.subarray(r * oldStride, r * oldStride + len), r * newStride);
      } else if (newStride > oldStride) {
        // In place, growing: move the last run first, so no run is overwritten before it moves.
        for (let k = runs.length - 1; k >= 0; k--) into.copyWithin(runs[k]!.r * newStride, runs[k]!.r * oldStride, runs[k]!.r * oldStride + runs[k]!.len);
      } else if (newStride < oldStride) {
        for (const { r, len } of runs) into.copyWithin(r * newStride, r * oldStride, r * oldStride + len);
      }
    }
    this.stores = stores;
    for (let s = this.slotCount; s < slots; s++) this.free.push(s);
    this.free.sort((a, b) => b - a); // the lowest free slot is taken first (pop)
    this.buffers = stores.map((store) => store.subarray(0, size));
    this.slotCount = slots;
    this.cap = cap;
    this.views = Array.from({ length: slots }, (_, slot) => this.batchTensors(slot, 1));
  }
}

/** One sequence's cache in a pool slot: fed as past and bound as present (written in place), cropped by its length. */
export class PooledKVCache implements KVCache {
  private released = false;

  constructor(
    private readonly pool: KvSlotPool,
    /** The slot; fixed for the cache's life. */
    readonly slot: number,
    /** Positions the slot already holds for this sequence (a cached prefix). */
    private len = 0,
  ) {}

  get length(): number {
    return this.len;
  }

  addFeeds(feeds: Record<string, ort.Tensor>, total: number): void {
    if (this.released) throw new Error('the KV cache was released');
    this.pool.reserve(total);
    // Nothing to attend to yet (a prompt): empty buffers, so that the pass does not read a whole capacity of masked positions.
    addKvFeeds(feeds, this.len === 0 && !this.pool.rowIndependent ? this.pool.emptyTensors : this.pool.slotTensors(this.slot));
  }

  /** Write the pass's new rows (`kv_rows.{i}` [1, n, q_width + 2 * kv_width]) of `tokens` at positions length..length+n-1. */
  update(outputs: Record<string, ort.OnnxValue>, length: number, tokens: readonly number[]): void {
    if (tokens.length !== length - this.len) throw new RangeError(`${tokens.length} tokens for ${length - this.len} new positions`);
    this.append(outputs, 0, tokens);
  }

  /**
   * Write the rows of `tokens` (n of them) from a pass's `kv_rows.{i}` ([1, T, width], the
   * pass's tokens packed), from packed row `from`, at positions length..length+n-1, and extend
   * the length by n. The tokens are what prefix caching matches later prompts against.
   */
  append(outputs: Record<string, ort.OnnxValue>, from: number, tokens: readonly number[]): void {
    if (this.released) throw new Error('the KV cache was released');
    const n = tokens.length;
    for (let i = 0; i < this.pool.layout.layers; i++) {
      const rows = outputs[kvRowsOutput(i)] as ort.Tensor;
      const width = rows.dims.at(-1)!;
      const data = (rows.data as Float32Array).subarray(from * width, (from + n) * width);
      this.pool.writeRows(this.slot, i, this.len, n, data, width);
    }
    this.len += n;
    this.pool.prefix?.append(this.slot, tokens);
  }

  /**
   * With prefix caching: take the rows of `tokens` past this cache's length that another slot
   * now holds (a prefix a concurrent sequence has computed since this one started), copied
   * instead of computed, up to `limit` positions.
   * @param tokens the tokens this cache's rows are to hold (a prompt's, without its last token)
   * @returns the positions gained (0 without prefix caching or a longer match)
   */
  adoptPrefix(tokens: readonly number[], limit = tokens.length): number {
    const prefix = this.pool.prefix;
    if (!prefix || this.released || this.len >= Math.min(limit, tokens.length)) return 0;
    const match = prefix.lookup(tokens, this.slot);
    const n = Math.min(match?.length ?? 0, limit);
    if (!match || n <= this.len) return 0;
    const gained = n - this.len;
    this.pool.copyPositions(match.slot, this.slot, n, this.len);
    prefix.append(this.slot, tokens.slice(this.len, n));
    this.len = n;
    return gained;
  }

  /** The pool this cache's slot belongs to. */
  get slotPool(): KvSlotPool {
    return this.pool;
  }

  async crop(n: number): Promise<void> {
    checkCrop(this.len, n);
    this.len = n;
    this.pool.prefix?.crop(this.slot, n);
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.len = 0;
    this.pool.releaseSlot(this.slot);
  }
}
