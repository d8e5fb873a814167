/**
 * What the in-place KV pool (src/engine/kv-pool.ts) does with its memory when its last sequence
 * ends: the capacity goes back to one step either way; stores of at most 64 MiB in all stay
 * (the next request grows in place instead of allocating and zeroing new memory), larger ones
 * are given back.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CAPACITY_STEP, KvSlotPool } from '../../src/engine/kv-pool.js';

/** The memory under slot 0's first buffer (layer 0's keys). */
const storeOf = (pool: KvSlotPool) => (pool.slotTensors(0)[0]!.data as Float32Array).buffer;

test('a small pool keeps its stores when it goes idle, and the next sequence grows in them', () => {
  const pool = new KvSlotPool({ layers: 2, kvHeads: 2, headDim: 4, dtype: 'float32' }, 1024);
  const first = pool.acquire();
  pool.reserve(300);
  const store = storeOf(pool);
  first.release();
  assert.equal(pool.capacity, CAPACITY_STEP, 'idle: back to one step of capacity');
  assert.equal(storeOf(pool), store, 'the same memory');
  const second = pool.acquire();
  pool.reserve(300);
  assert.equal(storeOf(pool), store, 'grown in place, not allocated again');
  second.release();
});

test('a pool whose stores exceed 64 MiB gives them back when it goes idle', () => {
  // 1 layer x 8 KV heads x 128 dims x 4,096 positions, kept 4x larger than needed: 128 MiB of keys and values.
  const pool = new KvSlotPool({ layers: 1, kvHeads: 8, headDim: 128, dtype: 'float32' }, 4096);
  const cache = pool.acquire();
  pool.reserve(4096);
  const store = storeOf(pool);
  cache.release();
  assert.equal(pool.capacity, CAPACITY_STEP);
  assert.notEqual(storeOf(pool), store, 'new, smaller memory');
  assert.ok(storeOf(pool).byteLength < store.byteLength);
});
