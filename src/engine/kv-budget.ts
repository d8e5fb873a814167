/**
 * Admission against a KV-cache memory budget: a generation runs only once the KV cache it may
 * need fits beside those already running, so a running sequence never runs out of cache (no
 * preemption). A generation reserves its worst case, min(prompt + max_tokens, context) positions
 * in every model it feeds (target and draft), at their bytes per position (layers x 2 x kv_heads x
 * head_dim x bytes per value), and gives it back when it ends. Generations wait in arrival order
 * (a large one is not overtaken by smaller ones that came later).
 *
 * Usage (vLLM's kv_cache_usage_perc) is the reserved share of the budget. The in-place cache
 * (kv-pool.ts) holds slots x capacity positions, capacity following the longest live sequence,
 * so its memory can exceed the sum of the reservations by up to the spread of live lengths.
 *
 * Prefix caching (prefix-cache.ts) keeps finished sequences' rows in the pools; they count
 * against the budget beside the reservations, and leave least recently used first (across every
 * pool added with `addReclaimable`) whenever a generation waiting in line would not fit otherwise,
 * so cached rows never keep a generation waiting. A generation admitted with its prompt looks its
 * prefix up first (`ReclaimableKv.protect`): the rows it will start from are held for it, outside
 * what may be evicted to make its room, until its caches have taken them (`KvReservation.unprotect`).
 * Held rows count inside its reservation (it takes them over; they leave the reclaimable bytes).
 */
import type { KvLayout } from './kv-cache.js';

/** Bytes one position of one sequence's KV cache takes in a model: layers x (key + value) x kv_heads x head_dim x bytes per value. */
export function kvBytesPerPosition(layout: KvLayout): number {
  return layout.layers * 2 * layout.kvHeads * layout.headDim * (layout.dtype === 'float16' ? 2 : 4);
}

/** KV memory held for later use that the budget may take back (a pool's parked slots, kv-pool.ts). */
export interface ReclaimableKv {
  /** Bytes held now. */
  readonly reclaimableBytes: number;
  /** When the least recently used entry was last used (performance.now()); undefined when nothing is held. */
  readonly oldestUse: number | undefined;
  /** Give the least recently used entry back; returns the bytes freed (0 when nothing was held). */
  evictOldest(): number;
  /** Hold the entry a generation with this prompt will start from, so that it does not leave until the returned function is called. */
  protect?(prompt: readonly number[]): () => void;
}

/**
 * An admitted generation's reservation: call it to give the reservation back (idempotent; it
 * unprotects too). `unprotect()` once the generation's caches exist (they have taken their
 * cached prefix): the rows held for it may leave again.
 */
export interface KvReservation {
  (): void;
  unprotect(): void;
}

export class KvBudgetError extends RangeError {
  override name = 'KvBudgetError';
}

interface Waiter {
  bytes: number;
  prompt?: readonly number[];
  resolve: (reservation: KvReservation) => void;
}

export class KvBudget {
  private reserved = 0;
  private readonly queue: Waiter[] = [];
  private readonly reclaimables: ReclaimableKv[] = [];

  /**
   * @param budgetBytes KV-cache memory the running generations may reserve in all (Infinity: no limit)
   * @throws RangeError when the budget is not positive
   */
  constructor(readonly budgetBytes: number) {
    if (!(budgetBytes > 0)) throw new RangeError(`the KV cache budget must be positive, got ${budgetBytes} bytes`);
  }

  /** Reserved share of the budget, 0..1 (0 with no limit). */
  get usage(): number {
    return Number.isFinite(this.budgetBytes) ? this.reserved / this.budgetBytes : 0;
  }

  /** Bytes the reclaimable caches hold now. */
  get reclaimableBytes(): number {
    return this.reclaimables.reduce((n, r) => n + r.reclaimableBytes, 0);
  }

  /** Count `cache`'s bytes against the budget and take them back, least recently used first, when a generation needs room. */
  addReclaimable(cache: ReclaimableKv): void {
    this.reclaimables.push(cache);
    this.admit();
  }

  /** Generations waiting for room. */
  get waiting(): number {
    return this.queue.length;
  }

  /**
   * Wait until `bytes` fit beside the reservations before it, then reserve them.
   * @param prompt the generation's prompt tokens: when it is admitted, the cached rows it will
   *   start from are held for it (looked up before room is made), until `unprotect()`
   * @returns the reservation: call it to give it back (idempotent)
   * @throws KvBudgetError at once when `bytes` exceed the whole budget (it could never run)
   */
  async reserve(bytes: number, prompt?: readonly number[]): Promise<KvReservation> {
    if (bytes > this.budgetBytes) {
      throw new KvBudgetError(`the request needs ${formatBytes(bytes)} of KV cache (prompt + max_tokens), more than the server's budget of ${formatBytes(this.budgetBytes)} (--kv-cache-memory-bytes)`);
    }
    return new Promise((resolve) => {
      this.queue.push({ bytes, resolve, ...(prompt ? { prompt } : {}) });
      this.admit();
    });
  }

  /**
   * Evict cached rows, least recently used first across the caches, until they fit beside the
   * reservations and `more` bytes.
   */
  private reclaim(more: number): void {
    while (this.reserved + more + this.reclaimableBytes > this.budgetBytes) {
      let oldest: ReclaimableKv | undefined;
      for (const r of this.reclaimables) if (r.oldestUse !== undefined && (oldest === undefined || r.oldestUse < oldest.oldestUse!)) oldest = r;
      if (!oldest || oldest.evictOldest() === 0) return;
    }
  }

  /** Cached rows beyond what the budget leaves beside the reservations are given back (call after caching more). */
  trim(): void {
    this.reclaim(0);
  }

  private admit(): void {
    this.trim();
    while (this.queue.length > 0 && this.reserved + this.queue[0]!.bytes <= this.budgetBytes) {
      const { bytes, prompt, resolve } = this.queue.shift()!;
      // Lookup before admission: the rows this generation starts from are not the room made for it.
      const held = prompt ? this.reclaimables.map((r) => r.protect?.(prompt)) : [];
      this.reclaim(bytes);
      this.reserved += bytes;
      let protecting = held.length > 0;
      const unprotect = () => {
        if (!protecting) return;
        protecting = false;
        for (const release of held) release?.();
        this.trim(); // a prefix copied rather than taken over is reclaimable again
      };
      let given = false;
      const reservation: KvReservation = Object.assign(
        () => {
          if (given) return;
          given = true;
          unprotect();
          this.reserved -= bytes;
          this.admit();
        },
        { unprotect },
      );
      resolve(reservation);
    }
  }
}

function formatBytes(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(2)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  return `${n} bytes`;
}
