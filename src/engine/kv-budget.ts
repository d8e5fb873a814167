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
 */
import type { KvLayout } from './kv-cache.js';

/** Bytes one position of one sequence's KV cache takes in a model: layers x (key + value) x kv_heads x head_dim x bytes per value. */
export function kvBytesPerPosition(layout: KvLayout): number {
  return layout.layers * 2 * layout.kvHeads * layout.headDim * (layout.dtype === 'float16' ? 2 : 4);
}

export class KvBudgetError extends RangeError {
  override name = 'KvBudgetError';
}

interface Waiter {
  bytes: number;
  resolve: (release: () => void) => void;
}

export class KvBudget {
  private reserved = 0;
  private readonly queue: Waiter[] = [];

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

  /** Generations waiting for room. */
  get waiting(): number {
    return this.queue.length;
  }

  /**
   * Wait until `bytes` fit beside the reservations before it, then reserve them.
   * @returns a function that gives the reservation back (idempotent)
   * @throws KvBudgetError at once when `bytes` exceed the whole budget (it could never run)
   */
  async reserve(bytes: number): Promise<() => void> {
    if (bytes > this.budgetBytes) {
      throw new KvBudgetError(`the request needs ${formatBytes(bytes)} of KV cache (prompt + max_tokens), more than the server's budget of ${formatBytes(this.budgetBytes)} (--kv-cache-memory-bytes)`);
    }
    return new Promise((resolve) => {
      this.queue.push({ bytes, resolve });
      this.admit();
    });
  }

  private admit(): void {
    while (this.queue.length > 0 && this.reserved + this.queue[0]!.bytes <= this.budgetBytes) {
      const { bytes, resolve } = this.queue.shift()!;
      this.reserved += bytes;
      let given = false;
      resolve(() => {
        if (given) return;
        given = true;
        this.reserved -= bytes;
        this.admit();
      });
    }
  }
}

function formatBytes(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(2)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  return `${n} bytes`;
}
