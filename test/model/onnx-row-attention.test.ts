/**
 * The row-independent in-place attention (src/onnx/inplace-attention.ts), run alone on ONNX
 * Runtime over hand-filled KV buffers: it computes what the split attention computes (batched,
 * grouped-query, long prompt pieces; buffers too small for a pass refused), and a row of any pass
 * comes out bitwise as the one-token pass at its position gives it, alone or beside another
 * sequence's prompt piece, whatever the buffers hold at and after the pass's slots (what int8
 * linear layers need for speculation to stay exact).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { GraphBuilder } from '../../src/onnx/graph-builder.js';
import { inplaceAttention, inplaceInputs, inplaceMasks, type AttentionShape } from '../../src/onnx/inplace-attention.js';
import { maxAbsDiff } from '../support/tensors.js';

const HEAD_DIM = 16;
const CAPACITY = 128;

async function attentionSession(shape: AttentionShape, rowIndependent: boolean): Promise<ort.InferenceSession> {
  const g = new GraphBuilder({ name: rowIndependent ? 'rows' : 'split' });
  inplaceInputs(g, 1, shape);
  const width = (shape.heads + 2 * shape.kvHeads) * shape.headDim;
  const qkv = g.input('qkv', 'float32', [1, 'sequence_length', width]);
  const out = inplaceAttention(g, 0, qkv, shape, inplaceMasks(g, shape.heads / shape.kvHeads, rowIndependent ? shape : undefined));
  g.output(out, 'out', 'float32', [1, 'sequence_length', shape.heads * shape.headDim]);
  return ort.InferenceSession.create(g.toBytes(), { intraOpNumThreads: 2 });
}

function uniform(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 32) * 2 - 1;
  };
}

/**
 * Sequences in one slot each: every position's q/k/v row (`rows[b][p]`), and buffers holding every
 * position's key and value (a pass reads only those below its past length).
 */
function sequences(shape: AttentionShape, lengths: number[], seed: number) {
  const { heads, kvHeads, headDim: D } = shape;
  const width = (heads + 2 * kvHeads) * D;
  const next = uniform(seed);
  const rows = lengths.map((n) => Array.from({ length: n }, () => Float32Array.from({ length: width }, next)));
  const keys = new Float32Array(lengths.length * kvHeads * D * CAPACITY);
  const values = new Float32Array(lengths.length * kvHeads * CAPACITY * D);
  rows.forEach((seq, b) =>
    seq.forEach((row, p) => {
      for (let h = 0; h < kvHeads; h++) {
        for (let d = 0; d < D; d++) {
          keys[((b * kvHeads + h) * D + d) * CAPACITY + p] = row[heads * D + h * D + d]!;
          values[((b * kvHeads + h) * CAPACITY + p) * D + d] = row[(heads + kvHeads) * D + h * D + d]!;
        }
      }
    }),
  );
  return { rows, keys, values };
}

/**
 * One pass: sequence b feeds its rows past[b] .. past[b] + fed[b] - 1 (packed and padded as
 * engine/model.ts lays them out). With `stale`, the buffers' slots from past[b] on hold that value
 * instead of the rows' keys and values (as slots past a sequence's length do in the engine); with
 * `capacity`, the buffers have that many slots (the first ones of each sequence's).
 */
async function pass(
  session: ort.InferenceSession,
  shape: AttentionShape,
  s: ReturnType<typeof sequences>,
  pick: number[],
  past: number[],
  fed: number[],
  options: { stale?: number; capacity?: number } = {},
): Promise<Float32Array[]> {
  const width = (shape.heads + 2 * shape.kvHeads) * shape.headDim;
  const S = Math.max(...fed);
  const T = fed.reduce((a, b) => a + b, 0);
  const qkv = new Float32Array(T * width);
  const positions: number[] = [];
  const padded: number[] = [];
  const packed: number[] = [];
  let at = 0;
  pick.forEach((b, e) => {
    for (let j = 0; j < fed[e]!; j++) {
      qkv.set(s.rows[b]![past[e]! + j]!, (at + j) * width);
      positions.push(past[e]! + j);
      packed.push(e * S + j);
    }
    for (let j = 0; j < S; j++) padded.push(at + Math.min(j, fed[e]! - 1));
    at += fed[e]!;
  });
  const cap = options.capacity ?? CAPACITY;
  const lines = shape.kvHeads * shape.headDim; // rows of a key buffer, columns of a value buffer
  /** Sequence b's buffer as the pass feeds it: [kv_heads, D, cap] keys (slot axis last) or [kv_heads, cap, D] values. */
  const slice = (buffer: Float32Array, slotLast: boolean) => {
    const out = new Float32Array(pick.length * lines * cap);
    pick.forEach((b, e) => {
      for (let h = 0; h < shape.kvHeads; h++) {
        for (let x = 0; x < shape.headDim; x++) {
          for (let t = 0; t < cap; t++) {
            const from = slotLast ? ((b * shape.kvHeads + h) * shape.headDim + x) * CAPACITY + t : ((b * shape.kvHeads + h) * CAPACITY + t) * shape.headDim + x;
            const to = slotLast ? ((e * shape.kvHeads + h) * shape.headDim + x) * cap + t : ((e * shape.kvHeads + h) * cap + t) * shape.headDim + x;
            out[to] = options.stale !== undefined && t >= past[e]! ? options.stale : buffer[from]!;
          }
        }
      }
    });
    return out;
  };
  const i64 = (v: number[], dims: number[]) => new ort.Tensor('int64', BigInt64Array.from(v.map(BigInt)), dims);
  const out = await session.run({
    position_ids: i64(positions, [1, T]),
    past_sequence_length: i64(past, [pick.length]),
    padded_source: i64(padded, [pick.length, S]),
    packed_index: i64(packed, [T]),
    'past_key_values.0.key': new ort.Tensor('float32', slice(s.keys, true), [pick.length, shape.kvHeads, shape.headDim, cap]),
    'past_key_values.0.value': new ort.Tensor('float32', slice(s.values, false), [pick.length, shape.kvHeads, cap, shape.headDim]),
    qkv: new ort.Tensor('float32', qkv, [1, T, width]),
  });
  const data = out.out!.data as Float32Array;
  const n = shape.heads * shape.headDim;
  return Array.from({ length: T }, (_, r) => data.slice(r * n, (r + 1) * n));
}

const SHAPES: [string, AttentionShape][] = [
  ['multi-head', { heads: 4, kvHeads: 4, headDim: HEAD_DIM }],
  ['grouped-query', { heads: 6, kvHeads: 2, headDim: HEAD_DIM }],
  // The head sizes of the bundled target (64) and of Qwen3 / Llama 3.2 (128): a window score is
  // picked from the product against the buffer or against the new keys, which must agree bitwise.
  ['multi-head, head_dim 64', { heads: 6, kvHeads: 6, headDim: 64 }],
  ['grouped-query, head_dim 128', { heads: 4, kvHeads: 2, headDim: 128 }],
];

/** Rows a verification pass may carry and more: a prompt piece. */
const LONG = 50;

describe('row-independent in-place attention', () => {
  for (const [label, shape] of SHAPES) {
    test(`${label}: the same attention as the split one, batched, with long prompt pieces; buffers too small for a pass are refused`, async () => {
      const [split, rows] = [await attentionSession(shape, false), await attentionSession(shape, true)];
      const lengths = [100, 60, 90];
      const s = sequences(shape, lengths, 3);
      for (const [past, fed] of [
        [[0, 20, 40], [LONG + 30, 1, 5]],
        [[50, 0, 3], [2, 60, LONG]],
        [[7, 59, 80], [1, 1, 1]],
      ] as const) {
        const a = await pass(split, shape, s, [0, 1, 2], [...past], [...fed]);
        const b = await pass(rows, shape, s, [0, 1, 2], [...past], [...fed], { stale: 3 });
        a.forEach((row, r) => assert.ok(maxAbsDiff(row, b[r]!) < 1e-5, `past ${past}, fed ${fed}, packed row ${r}: ${maxAbsDiff(row, b[r]!)}`));
      }
      // Buffers without a slot for every new row: an error, not rows attended wrongly.
      await assert.rejects(pass(rows, shape, s, [0], [0], [40], { capacity: 1 }), /out of|bound|range/i);
      await Promise.all([split.release(), rows.release()]);
    });

    test(`${label}: every row of a pass is bitwise that of the one-token pass at its position, alone or beside a prompt piece, whatever the buffers hold from the pass's slots on`, async () => {
      const session = await attentionSession(shape, true);
      const s = sequences(shape, [120, 120], 5);
      for (const [past, fed] of [
        [40, 5],
        [3, 34],
        [90, 17],
        [10, LONG],
      ]) {
        const alone: Float32Array[] = [];
        for (let j = 0; j < fed; j++) alone.push((await pass(session, shape, s, [0], [past + j], [1]))[0]!);
        const together = await pass(session, shape, s, [0], [past], [fed], { stale: -2 });
        // Beside another sequence's long prompt piece (its rows packed after these).
        const beside = (await pass(session, shape, s, [0, 1], [past, 0], [fed, LONG + 20], { stale: 5 })).slice(0, fed);
        for (let j = 0; j < fed; j++) {
          assert.equal(maxAbsDiff(together[j]!, alone[j]!), 0, `past ${past}, row ${j} of ${fed}`);
          assert.equal(maxAbsDiff(beside[j]!, alone[j]!), 0, `past ${past}, row ${j} of ${fed}, beside a prompt piece`);
        }
      }
      await session.release();
    });
  }
});
