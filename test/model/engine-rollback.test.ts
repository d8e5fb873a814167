/**
 * KV rollback: after `KVCache.crop(n)` a model continues exactly as if it had only ever seen
 * the first n tokens. Every forward pass is compared with one fresh prefill of the whole
 * sequence, on the bundled target and on fixtures (fp32 GPT-2, fp16-KV Llama with GQA).
 * The crop compacts ORT's output buffers in place, so the tests also run many rounds of
 * feed + crop (including consecutive crops and crops back into verified tokens) on long
 * sequences and check that earlier outputs and the cached keys/values stay intact.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { InferenceSession } from 'onnxruntime-node';
import type * as ort from 'onnxruntime-node';
import type { KVCache } from '../../src/engine/kv-cache.js';
import { PooledKVCache } from '../../src/engine/kv-pool.js';
import { DecoderModel, float16ToFloat32 } from '../../src/engine/model.js';
import { writeFixtureModelDir } from '../../src/testing/decoder-fixture.js';
import { GraphBuilder } from '../../src/onnx/graph-builder.js';
import { BUNDLED_TARGET, DATASETS_DIR } from '../../src/paths.js';
import { TextTokenizer } from '../../src/text/tokenizer.js';
import { webgpuSkip } from '../support/webgpu.js';
import { maxAbsDiff } from '../support/tensors.js';

/**
 * A GPU tensor's contents, through an Identity graph on the WebGPU provider whose output is
 * placed in host memory (onnxruntime-node 1.30 aborts the process on `getData()` of a GPU tensor).
 */
async function download(t: ort.Tensor): Promise<ort.Tensor['data']> {
  const g = new GraphBuilder({ opset: 17 });
  const dtype = t.type as 'float32' | 'float16';
  g.output(g.op('Identity', [g.input('x', dtype, [...t.dims])]), 'y', dtype, [...t.dims]);
  const session = await InferenceSession.create(g.toBytes(), { executionProviders: ['webgpu'], preferredOutputLocation: 'cpu' });
  try {
    return ((await session.run({ x: t })).y as ort.Tensor).data;
  } finally {
    await session.release();
  }
}

/**
 * The positions the cache covers (via its public feed interface), as float32 copies (downloaded
 * when they live on a GPU): [batch, heads, length, dim] whatever the capacity of the buffers
 * behind them (a cache written in place has room for more).
 */
async function kvSnapshot(cache: KVCache): Promise<Record<string, { dims: readonly number[]; data: Float32Array }>> {
  const feeds: Record<string, ort.Tensor> = {};
  cache.addFeeds(feeds, cache.length);
  const out: Record<string, { dims: readonly number[]; data: Float32Array }> = {};
  for (const [name, t] of Object.entries(feeds)) {
    const raw = t.location === 'gpu-buffer' ? await download(t) : t.data;
    const all = t.type === 'float16' ? float16ToFloat32(raw as Uint16Array) : Float32Array.from(raw as Float32Array);
    // A pooled cache keeps its keys transposed: [batch, heads, dim, capacity].
    const transposed = cache instanceof PooledKVCache && name.endsWith('.key');
    const [batch, heads, a, b] = t.dims as [number, number, number, number];
    const [capacity, dim] = transposed ? [b, a] : [a, b];
    const data = new Float32Array(batch * heads * cache.length * dim);
    for (let r = 0; r < batch * heads; r++) {
      for (let p = 0; p < cache.length; p++) {
        for (let d = 0; d < dim; d++) data[(r * cache.length + p) * dim + d] = all[transposed ? (r * dim + d) * capacity + p : (r * capacity + p) * dim + d]!;
      }
    }
    out[name] = { dims: [batch, heads, cache.length, dim], data };
  }
  return out;
}

/** A tiny deterministic PRNG for "rejected candidate" tokens and round sizes. */
function lcg(seed: number): (n: number) => number {
  let s = seed >>> 0;
  return (n) => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s % n;
  };
}

interface Subject {
  label: string;
  model: DecoderModel;
  seq: number[];
  /** Logits of one fresh prefill of `seq`: [seq.length, vocab]. */
  ref: Float32Array;
  tol: number;
}

/** The rollback suite, shared by every model. */
function rollbackSuite(load: () => Promise<Omit<Subject, 'ref'>>): void {
  let s: Subject;
  let V: number;
  const rows = (from: number, to: number) => s.ref.subarray(from * V, to * V);
  const close = (got: Float32Array, from: number, to: number, what: string) => {
    const d = maxAbsDiff(got, rows(from, to));
    assert.ok(d <= s.tol, `${s.label}: ${what}: logits differ from a fresh prefill by ${d}`);
    return d;
  };

  before(async () => {
    const base = await load();
    const ref = Float32Array.from(await base.model.forward(base.model.newCache(), base.seq));
    s = { ...base, ref };
    V = s.model.info.vocabSize;
  });
  after(() => s?.model.release());

  test('prefix + rejected tokens, crop, then the real tokens: same logits as a fresh prefill', async () => {
    const { model, seq } = s;
    const rnd = lcg(1);
    for (const n of [1, 7, Math.floor(seq.length / 2)]) {
      const cache = model.newCache();
      const first = await model.forward(cache, seq.slice(0, n));
      close(first, 0, n, `prefix ${n}`);
      const wrong = Array.from({ length: 5 }, () => rnd(V));
      await model.forward(cache, [...seq.slice(n, n + 2), ...wrong]);
      assert.equal(cache.length, n + 7);
      await cache.crop(n);
      assert.equal(cache.length, n);
      const rest = await model.forward(cache, seq.slice(n));
      close(rest, n, seq.length, `crop to ${n} and continue`);
    }
  });

  test('many rounds of feed + crop on a long sequence (speculation pattern)', async (t: TestContext) => {
    const { model, seq } = s;
    const rnd = lcg(2);
    const cache = model.newCache();
    const kept: { logits: Float32Array; copy: Float32Array; from: number; to: number }[] = [];
    let pos = 0;
    let rounds = 0;
    let worst = 0;
    while (pos < seq.length) {
      // Feed some verified tokens plus some "candidates": a few correct, the rest rejected.
      const real = Math.min(1 + rnd(4), seq.length - pos);
      const good = Math.min(rnd(3), seq.length - pos - real);
      const bad = rnd(5);
      const feed = [...seq.slice(pos, pos + real + good), ...Array.from({ length: bad }, () => rnd(V))];
      const logits = await model.forward(cache, feed);
      worst = Math.max(worst, close(logits.subarray(0, (real + good) * V), pos, pos + real + good, `round ${rounds} at ${pos}`));
      kept.push({ logits, copy: Float32Array.from(logits), from: pos, to: pos + real + good });
      pos += real + good;
      if (bad > 0 || rnd(2) === 0) await cache.crop(pos);
      // Now and then roll back further, into tokens already verified, in two consecutive crops.
      if (rounds % 7 === 3 && pos > 3) {
        await cache.crop(pos - 1);
        await cache.crop(pos - 3);
        pos -= 3;
      }
      assert.equal(cache.length, pos);
      rounds++;
    }
    assert.ok(rounds > seq.length / 5, `${rounds} rounds`);
    // Outputs handed out earlier were not touched by the in-place crops that followed.
    for (const [i, k] of kept.entries()) assert.deepEqual(k.logits, k.copy, `logits of round ${i} changed after later crops`);
    // The cache holds what a fresh prefill of the sequence holds.
    const fresh = model.newCache();
    await model.forward(fresh, seq);
    const a = (await kvSnapshot(cache));
    const b = (await kvSnapshot(fresh));
    assert.deepEqual(Object.keys(a), Object.keys(b));
    for (const name of Object.keys(a)) {
      assert.deepEqual(a[name]!.dims, b[name]!.dims, name);
      const d = maxAbsDiff(a[name]!.data, b[name]!.data);
      assert.ok(d <= s.tol, `${s.label}: ${name} differs from a fresh prefill by ${d}`);
    }
    t.diagnostic(`${s.label}: ${rounds} rounds over ${seq.length} tokens, worst logit difference ${worst.toExponential(2)}`);
  });

  test('crop to 0 restarts the sequence', async () => {
    const { model, seq } = s;
    const cache = model.newCache();
    await model.forward(cache, seq.slice(0, 20));
    await cache.crop(0);
    assert.equal(cache.length, 0);
    for (const d of Object.values((await kvSnapshot(cache)))) assert.equal(d.dims[2], 0);
    close(await model.forward(cache, seq), 0, seq.length, 'after crop to 0');
    // And again after a round trip through a long sequence.
    await cache.crop(0);
    close(await model.forward(cache, seq.slice(0, 9)), 0, 9, 'second crop to 0');
  });

  test('crop rejects lengths outside [0, length]; crop(length) is a no-op', async () => {
    const { model, seq } = s;
    const cache = model.newCache();
    await assert.rejects(cache.crop(1), /cannot crop a KV cache of length 0 to 1/);
    await model.forward(cache, seq.slice(0, 6));
    await assert.rejects(cache.crop(7), (err: Error) => err instanceof RangeError && /length 6 to 7/.test(err.message));
    await assert.rejects(cache.crop(-1), RangeError);
    assert.equal(cache.length, 6, 'a failed crop leaves the cache alone');
    const before = (await kvSnapshot(cache));
    await cache.crop(6);
    assert.deepEqual((await kvSnapshot(cache)), before);
    close(await model.forward(cache, seq.slice(6, 12)), 6, 12, 'after failed crops');
  });
}

// inplace: the cache written in place (kv-pool.ts), the CPU's default; exported: present.* copied at every pass.
for (const graph of ['inplace', 'exported'] as const) {
describe(`KV rollback: bundled specd-pair target (${graph} graph)`, () => {
  rollbackSuite(async () => {
    const tokenizer = await TextTokenizer.fromDir(BUNDLED_TARGET);
    // Two GSM8K exchanges as one chat: a sequence of ~500 tokens.
    const lines = readFileSync(join(DATASETS_DIR, 'gsm8k', 'test.jsonl'), 'utf8').split('\n').slice(2, 4);
    const seq = tokenizer.encodeChat(
      lines.flatMap((line) => {
        const { question, answer } = JSON.parse(line) as { question: string; answer: string };
        return [
          { role: 'user', content: question },
          { role: 'assistant', content: answer },
        ];
      }),
    );
    assert.ok(seq.length > 400, `sequence of ${seq.length} tokens`);
    const model = await DecoderModel.load(BUNDLED_TARGET, { threads: 2, graph });
    assert.equal(model.kvInPlace, graph === 'inplace');
    return { label: `specd-pair-target (${graph})`, model, seq, tol: 1e-4 };
  });
});
}

const fixtures = [
  { label: 'GPT-2 fixture (fp32 KV)', options: { style: 'gpt2', seed: 21 } },
  { label: 'Llama GQA fixture (fp16 KV)', options: { style: 'llama', seed: 22, heads: 4, kvHeads: 2, kvDtype: 'float16' } },
] as const;

// On WebGPU the cache stays in GPU buffers and the crop is a Slice graph on the GPU (gpu-kv-cache.ts);
// on the CPU both fixtures run rebuilt with the cache written in place (the default) and as exported.
for (const device of ['cpu', 'webgpu'] as const) {
 for (const { label, options } of fixtures) {
  for (const graph of device === 'cpu' ? (['inplace', 'exported'] as const) : ([undefined] as const)) {
  describe(`KV rollback: ${label}${device === 'webgpu' ? ', on the GPU (WebGPU)' : `, ${graph} graph`}`, { skip: device === 'webgpu' && webgpuSkip }, () => {
    const root = mkdtempSync(join(tmpdir(), 'specd-'));
    after(() => rmSync(root, { recursive: true, force: true }));
    rollbackSuite(async () => {
      const cfg = writeFixtureModelDir(root, { ...options, maxPositions: 128 });
      const model = await DecoderModel.load(root, { threads: 1, device, graph });
      assert.equal(model.kvInPlace, graph === 'inplace');
      // The in-place cache is float32 (an fp16 export's keys and values are rounded to fp16 as they are written).
      assert.equal(model.info.dtype, model.kvInPlace ? 'float32' : cfg.kvDtype);
      const rnd = lcg(3);
      const seq = Array.from({ length: 120 }, () => rnd(cfg.vocabSize));
      // fp16 KV: every path rounds K/V the same way, but fp32 noise can flip an fp16 ulp.
      return { label, model, seq, tol: cfg.kvDtype === 'float16' ? 1e-3 : 1e-4 };
    });
  });
  }
}
}
