/**
 * Automatic prefix caching over an in-place KV pool (kv-pool.ts): which tokens each slot's rows
 * hold, an index of their blocks, and which slots hold the rows of finished sequences.
 *
 * As vLLM's automatic prefix caching (docs: "Automatic Prefix Caching", design/prefix_caching),
 * a slot's tokens are cut into blocks of `PREFIX_BLOCK_SIZE` tokens and each full block is keyed
 * by a hash of the whole prefix up to its end: hash_i = SHA-256(hash_{i-1} || tokens of block i),
 * hash_0 = SHA-256(the model's identity), so equal blocks after different prefixes never match
 * and the rows of one model (graph, dtype) are never served to another. A lookup walks the
 * prompt's block hashes to the longest run some slot holds, then compares tokens (a hash
 * collision cannot serve wrong rows) and extends the match token by token within that slot, as
 * llama.cpp's server compares a slot's last prompt.
 *
 * Slots are live (a running sequence writes them) or parked (the sequence ended and its rows stay
 * for later prompts). Parked slots leave least recently used first: when the pool needs a slot
 * and none is free, or when the KV budget (kv-budget.ts) needs their memory. A pinned slot
 * (`pin`: a generation being admitted will take it over) does not leave until it is unpinned.
 */
import { createHash } from 'node:crypto';

/** Tokens per hashed block: vLLM's default block size. A prompt shares a prefix from one block on; a match then extends token by token. */
export const PREFIX_BLOCK_SIZE = 16;

/** What one slot's rows hold: the tokens at positions 0..tokens.length-1 and the hashes of its full blocks so far. */
interface SlotRecord {
  tokens: number[];
  /** Hash of block i's prefix (tokens [0, (i + 1) * PREFIX_BLOCK_SIZE)), computed lazily for full blocks. */
  hashes: string[];
  /** performance.now() when the slot was last parked or matched; undefined while live. */
  parkedAt?: number;
}

/** The longest cached prefix of a prompt: the slot holding it and how many of its positions match. */
export interface PrefixMatch {
  slot: number;
  /** Positions of the slot whose rows equal the prompt's first `length` tokens. */
  length: number;
  /** Whether the slot is parked (its sequence ended) rather than live. */
  parked: boolean;
  /** Positions the slot holds (>= length). */
  held: number;
}

export class PrefixCache {
  private readonly records = new Map<number, SlotRecord>();
  /** Block hash -> slots holding that prefix. */
  private readonly index = new Map<string, Set<number>>();
  private readonly root: string;
  /** Slot -> how many pins hold it (`pin`). */
  private readonly pins = new Map<number, number>();

  /** @param identity what the rows depend on besides the tokens: the model file, its graph and dtype (never served across them) */
  constructor(readonly identity: string) {
    this.root = createHash('sha256').update(identity).digest('hex');
  }

  /** Start tracking a live slot holding `tokens` (its first positions; e.g. a matched prefix). */
  track(slot: number, tokens: readonly number[]): void {
    this.forget(slot);
    this.records.set(slot, { tokens: [...tokens], hashes: [] });
  }

  /** A live slot's rows grew by `tokens` (written at its end). */
  append(slot: number, tokens: readonly number[]): void {
    const record = this.records.get(slot);
    if (record) for (const t of tokens) record.tokens.push(t);
  }

  /** A slot's rows were cut to their first `n` positions (a rollback): later blocks leave the index. */
  crop(slot: number, n: number): void {
    const record = this.records.get(slot);
    if (!record || n >= record.tokens.length) return;
    record.tokens.length = n;
    const keep = Math.floor(n / PREFIX_BLOCK_SIZE);
    for (let i = keep; i < record.hashes.length; i++) this.unindex(record.hashes[i]!, slot);
    record.hashes.length = Math.min(record.hashes.length, keep);
  }

  /** Positions a tracked slot holds (0 when not tracked). */
  held(slot: number): number {
    return this.records.get(slot)?.tokens.length ?? 0;
  }

  /** The slot's sequence ended: its rows stay, matchable, until evicted. */
  park(slot: number): void {
    const record = this.records.get(slot);
    if (record) record.parkedAt = performance.now();
  }

  /** Whether the slot is parked. */
  isParked(slot: number): boolean {
    return this.records.get(slot)?.parkedAt !== undefined;
  }

  /** A parked slot becomes live again (a new sequence takes its rows over), keeping its first `n` positions. */
  takeOver(slot: number, n: number): void {
    const record = this.records.get(slot);
    if (!record) throw new RangeError(`slot ${slot} holds no cached rows`);
    record.parkedAt = undefined;
    this.crop(slot, n);
  }

  /** Stop tracking a slot (evicted, or freed without caching). */
  forget(slot: number): void {
    const record = this.records.get(slot);
    if (!record) return;
    for (const h of record.hashes) this.unindex(h, slot);
    this.records.delete(slot);
  }

  /** Keep a slot from leaving (`evictableSlots` leaves it out) until as many `unpin` calls. */
  pin(slot: number): void {
    this.pins.set(slot, (this.pins.get(slot) ?? 0) + 1);
  }

  unpin(slot: number): void {
    const n = this.pins.get(slot) ?? 0;
    if (n <= 1) this.pins.delete(slot);
    else this.pins.set(slot, n - 1);
  }

  /** Parked slots, least recently used first. */
  parkedSlots(): number[] {
    return [...this.records.entries()]
      .filter(([, r]) => r.parkedAt !== undefined)
      .sort((a, b) => a[1].parkedAt! - b[1].parkedAt!)
      .map(([slot]) => slot);
  }

  /** Parked slots that are not pinned, least recently used first: those that may leave. */
  evictableSlots(): number[] {
    return this.parkedSlots().filter((slot) => !this.pins.has(slot));
  }

  /** When the least recently used evictable slot was last used (performance.now()), or undefined when none is. */
  get oldestParkedAt(): number | undefined {
    let oldest: number | undefined;
    for (const [slot, r] of this.records) if (r.parkedAt !== undefined && !this.pins.has(slot) && (oldest === undefined || r.parkedAt < oldest)) oldest = r.parkedAt;
    return oldest;
  }

  /** Positions held by parked slots (`pinned`: by pinned ones only; else by the others only). */
  parkedPositions(pinned = false): number {
    let n = 0;
    for (const [slot, r] of this.records) if (r.parkedAt !== undefined && this.pins.has(slot) === pinned) n += r.tokens.length;
    return n;
  }

  /**
   * The longest prefix of `tokens` some slot (live or parked) holds, at least one block long;
   * among slots holding equally long matches, one that can be taken over (`takesOver`), then a
   * parked one. A parked slot matched is touched (LRU).
   * @param tokens the positions a new sequence may take (a prompt without its last token)
   * @param exclude a slot not to match (the asking sequence's own)
   */
  lookup(tokens: readonly number[], exclude?: number): PrefixMatch | undefined {
    for (const [slot, record] of this.records) this.indexBlocks(slot, record);
    let hash = this.root;
    let candidates: Set<number> | undefined;
    for (let end = PREFIX_BLOCK_SIZE; end <= tokens.length; end += PREFIX_BLOCK_SIZE) {
      hash = blockHash(hash, tokens, end);
      const holders = this.index.get(hash);
      if (!holders) break;
      candidates = holders;
    }
    if (!candidates) return undefined;
    let best: PrefixMatch | undefined;
    for (const slot of candidates) {
      if (slot === exclude) continue;
      const record = this.records.get(slot)!;
      const length = commonPrefix(record.tokens, tokens);
      if (length < PREFIX_BLOCK_SIZE) continue; // a hash collision: never trust a hash alone
      const match: PrefixMatch = { slot, length, parked: record.parkedAt !== undefined, held: record.tokens.length };
      if (!best || better(match, best)) best = match;
    }
    if (best?.parked) this.records.get(best.slot)!.parkedAt = performance.now();
    return best;
  }

  /** Hash a slot's full blocks not hashed yet and add them to the index. */
  private indexBlocks(slot: number, record: SlotRecord): void {
    const full = Math.floor(record.tokens.length / PREFIX_BLOCK_SIZE);
    for (let i = record.hashes.length; i < full; i++) {
      const h = blockHash(i === 0 ? this.root : record.hashes[i - 1]!, record.tokens, (i + 1) * PREFIX_BLOCK_SIZE);
      record.hashes.push(h);
      let holders = this.index.get(h);
      if (!holders) this.index.set(h, (holders = new Set()));
      holders.add(slot);
    }
  }

  private unindex(hash: string, slot: number): void {
    const holders = this.index.get(hash);
    holders?.delete(slot);
    if (holders?.size === 0) this.index.delete(hash);
  }
}

/** The hash of the prefix ending at `end` (a multiple of PREFIX_BLOCK_SIZE), from the hash of the prefix before its last block. */
function blockHash(previous: string, tokens: readonly number[], end: number): string {
  const block = Int32Array.from(tokens.slice(end - PREFIX_BLOCK_SIZE, end));
  return createHash('sha256').update(previous).update(new Uint8Array(block.buffer)).digest('hex');
}

function commonPrefix(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

/**
 * Whether a new sequence takes the matched slot over (no copy) rather than copying the matched
 * rows into a slot of its own: when the slot is parked and what the new sequence would overwrite
 * of it (its rows past the match) is less than a block. So a conversation's next turn continues
 * in its last turn's slot, while a prompt sharing only a system prompt with a parked
 * conversation copies that prefix and leaves the conversation cached.
 */
export function takesOver(match: PrefixMatch): boolean {
  return match.parked && match.held - match.length < PREFIX_BLOCK_SIZE;
}

/** Longer first; then one taken over for free; then parked over live (no copy from a slot being written). */
function better(a: PrefixMatch, b: PrefixMatch): boolean {
  if (a.length !== b.length) return a.length > b.length;
  if (takesOver(a) !== takesOver(b)) return takesOver(a);
  return a.parked && !b.parked;
}
