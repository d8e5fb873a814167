/**
 * The KV cache written in place (engine/kv-pool.ts): sequences in different slots of one pool do
 * not disturb each other, the capacity follows the longest live sequence, and a released cache
 * gives its slot back.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CAPACITY_STEP } from '../../src/engine/kv-pool.js';
import { DecoderModel, INPLACE_PREFILL_CHUNK } from '../../src/engine/model.js';
import { writeFixtureModelDir } from '../../src/testing/decoder-fixture.js';
import { maxAbsDiff } from '../support/tensors.js';

describe('KV slot pool (in-place graph)', () => {
  const root = mkdtempSync(join(tmpdir(), 'specd-pool-'));
  let model: DecoderModel;
  let exported: DecoderModel;
  const vocab = 48;
  const seqA = Array.from({ length: 300 }, (_, i) => (i * 7 + 3) % vocab);
  const seqB = Array.from({ length: 90 }, (_, i) => (i * 11 + 5) % vocab);

  before(async () => {
    writeFixtureModelDir(root, { style: 'gpt2', seed: 31, maxPositions: 600, vocabSize: vocab });
    model = await DecoderModel.load(root, { threads: 1 });
    exported = await DecoderModel.load(root, { threads: 1, graph: 'exported' });
  });
  after(async () => {
    await model?.release();
    await exported?.release();
    rmSync(root, { recursive: true, force: true });
  });

  test('the CPU default writes the cache in place; the exported graph does not', () => {
    assert.equal(model.kvInPlace, true);
    assert.equal(exported.kvInPlace, false);
  });

  test('two sequences in two slots, fed in turn, each equal the exported graph fed alone', async () => {
    const pool = model.kvPool!;
    const a = model.newCache();
    const b = model.newCache();
    assert.equal(pool.slotsInUse, 2);
    const got = { a: [] as Float32Array[], b: [] as Float32Array[] };
    // Feed both in interleaved pieces of different sizes, with rejected tokens rolled back in between.
    let pa = 0;
    let pb = 0;
    while (pa < seqA.length || pb < seqB.length) {
      if (pa < seqA.length) {
        const n = Math.min(7, seqA.length - pa);
        got.a.push(await model.forward(a, [...seqA.slice(pa, pa + n), 1, 2]));
        await a.crop(pa + n);
        pa += n;
      }
      if (pb < seqB.length) {
        const n = Math.min(3, seqB.length - pb);
        got.b.push(await model.forward(b, seqB.slice(pb, pb + n)));
        pb += n;
      }
    }
    const joinRows = (parts: Float32Array[], rows: number[]) => {
      const out: number[] = [];
      parts.forEach((p, i) => out.push(...p.subarray(0, rows[i]! * vocab)));
      return Float32Array.from(out);
    };
    const rowsA = got.a.map((_, i) => Math.min(7, seqA.length - 7 * i));
    const rowsB = got.b.map((_, i) => Math.min(3, seqB.length - 3 * i));
    const refA = await exported.score(seqA);
    const refB = await exported.score(seqB);
    assert.ok(maxAbsDiff(joinRows(got.a, rowsA), refA.logits) < 1e-4, 'sequence A');
    assert.ok(maxAbsDiff(joinRows(got.b, rowsB), refB.logits) < 1e-4, 'sequence B');
    // Up to 302 positions (300 and two rejected tokens): the capacity grew step by step, and the sequences kept their rows.
    assert.equal(pool.capacity, Math.ceil(302 / CAPACITY_STEP) * CAPACITY_STEP);
    a.release();
    b.release();
    a.release(); // idempotent
    assert.equal(pool.slotsInUse, 0);
    assert.equal(pool.capacity, CAPACITY_STEP, 'back to one step once no cache is live');
  });

  test('a released slot is reused; a released cache cannot be fed', async () => {
    const pool = model.kvPool!;
    const a = model.newCache();
    a.release();
    const b = model.newCache();
    assert.equal(pool.slotsInUse, 1);
    await assert.rejects(model.forward(a, [1, 2]), /released/);
    await model.forward(b, [1, 2, 3]);
    assert.equal(b.length, 3);
    b.release();
  });

  test('one batched pass over sequences in several slots equals each sequence fed alone', async () => {
    const caches = [model.newCache(), model.newCache(), model.newCache()];
    assert.deepEqual(caches.map((c) => (c as unknown as { slot: number }).slot), [0, 1, 2]);
    // Different pasts (one empty), different numbers of new tokens (padding), rolled back candidates in between.
    await model.forward(caches[0]!, seqA.slice(0, 40));
    await model.forward(caches[1]!, seqB.slice(0, 9));
    const inputs = [seqA.slice(40, 45), seqB.slice(9, 10), seqA.slice(0, 7)];
    const got = (await model.forwardBatch(caches, inputs)).map((o) => o.logits);
    assert.deepEqual(caches.map((c) => c.length), [45, 10, 7]);
    const refA = (await exported.score(seqA.slice(0, 45))).logits;
    const refB = (await exported.score(seqB.slice(0, 10))).logits;
    assert.ok(maxAbsDiff(got[0]!, refA.subarray(40 * vocab)) < 1e-4, 'entry 0');
    assert.ok(maxAbsDiff(got[1]!, refB.subarray(9 * vocab)) < 1e-4, 'entry 1');
    assert.ok(maxAbsDiff(got[2]!, refA.subarray(0, 7 * vocab)) < 1e-4, 'entry 2');
    // A second batched round after a rollback of entry 0: the cache holds exactly what the pass kept.
    await caches[0]!.crop(43);
    const next = (await model.forwardBatch(caches, [seqA.slice(43, 46), seqB.slice(10, 12), seqA.slice(7, 8)])).map((o) => o.logits);
    const refA2 = (await exported.score(seqA.slice(0, 46))).logits;
    assert.ok(maxAbsDiff(next[0]!, refA2.subarray(43 * vocab)) < 1e-4, 'entry 0 after a rollback');
    assert.ok(maxAbsDiff(next[2]!, refA.subarray(7 * vocab, 8 * vocab)) < 1e-4, 'entry 2, second round');
    // Slots 0 and 2 without 1, in reverse order: slot 1 is padding, its cache untouched.
    const gap = (await model.forwardBatch([caches[2]!, caches[0]!], [seqA.slice(8, 10), seqA.slice(46, 47)])).map((o) => o.logits);
    assert.deepEqual(caches.map((c) => c.length), [47, 12, 10]);
    const refA3 = (await exported.score(seqA.slice(0, 47))).logits;
    assert.ok(maxAbsDiff(gap[0]!, refA.subarray(8 * vocab, 10 * vocab)) < 1e-4, 'slot 2 beside a gap');
    assert.ok(maxAbsDiff(gap[1]!, refA3.subarray(46 * vocab)) < 1e-4, 'slot 0 beside a gap');
    const afterGap = (await model.forwardBatch([caches[1]!], [seqB.slice(12, 13)]))[0]!.logits;
    const refB2 = (await exported.score(seqB.slice(0, 13))).logits;
    assert.ok(maxAbsDiff(afterGap, refB2.subarray(12 * vocab)) < 1e-4, 'the skipped slot kept its cache');
    await assert.rejects(model.forwardBatch([caches[0]!, caches[0]!], [[1], [2]]), /twice/);
    // Caches that are not written in place run one after another, with the same results.
    const ex = [exported.newCache(), exported.newCache()];
    const seqOut = await exported.forwardBatch(ex, [seqA.slice(0, 3), seqB.slice(0, 2)]);
    assert.ok(maxAbsDiff(seqOut[1]!.logits, refB.subarray(0, 2 * vocab)) < 1e-4, 'exported graph, entry 1');
    for (const c of ex) c.release();
    for (const c of caches) c.release();
  });

  test(`a prompt longer than ${INPLACE_PREFILL_CHUNK} tokens is fed in pieces with the same logits as the exported graph`, async () => {
    const cache = model.newCache();
    const got = await model.forward(cache, seqA);
    assert.ok(seqA.length > INPLACE_PREFILL_CHUNK);
    assert.equal(cache.length, seqA.length);
    assert.ok(maxAbsDiff(got, (await exported.score(seqA)).logits) < 1e-4);
    cache.release();
  });

  test('a sequence past the context is refused before anything runs', async () => {
    const cache = model.newCache();
    await assert.rejects(model.forward(cache, Array.from({ length: 601 }, () => 1)), /exceeds the model's context of 600/);
    assert.equal(cache.length, 0);
    cache.release();
  });
});
