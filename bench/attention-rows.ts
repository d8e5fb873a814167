/**
 * Whether a query row's attention output is bitwise the same in a verification pass (the row
 * among S new rows, the rows before it in the pass) and in a one-token pass (the rows before it
 * already in the KV buffer): what speculation's exactness needs once the linear layers compute in
 * int8 (MatMulNBits accuracy_level 4), where a 1e-5 difference in an activation can move its
 * quantized value.
 *
 * Two attentions over the same buffer layout (keys [H, D, C] transposed, values [H, C, D]):
 *
 * - `split` (src/onnx/inplace-attention.ts, the one the in-place graphs run): the queries against
 *   the whole buffer (positions past the sequence's length masked) and, apart, against the pass's
 *   own new keys; one softmax over both. A key written in the same pass is summed in the second
 *   part, a key from an earlier pass in the first, so the additions group differently.
 * - `window`: every row sees the buffer only below its anchor a = p - W + 1 (p its position, W
 *   the longest pass of new rows), and its last W positions p - W + 1 .. p through a window
 *   gathered per row from the buffer or the pass's new rows, whichever holds them. A row's
 *   scores, softmax row and sums are then the same values in the same places in either pass.
 *   (A prompt longer than W needs a third part, the new rows below the anchor; not built here.)
 *   ONNX Runtime's MatMul with a right side that is not a constant computes one left row by
 *   another kernel than two or more (rows of 2-8 come out bitwise the same as in any larger
 *   pass); so the buffer MatMuls get a copy of the first row added, dropped after.
 *   `window-1-row` is the same without that row, `split-2-row` the split attention with it.
 *
 * For one buffer of past length L and S new rows it runs the verification pass and the S
 * one-token passes, and counts the output values that differ, with the largest difference; then
 * times a pass of each at 1 and S rows.
 *
 *   npm run build && node dist/bench/attention-rows.js [--capacity 1024] [--past 300]
 *     [--rows 5] [--window 9] [--heads 6] [--head-dim 64] [--threads 2] [--reps 200] [--json FILE]
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { machineInfo } from '../src/bench/serve/report.js';
import { GraphBuilder } from '../src/onnx/graph-builder.js';
import { inplaceAttention, inplaceInputs, inplaceMasks, MASKED, PACKED_INDEX_INPUT, PADDED_SOURCE_INPUT, PAST_LENGTH_INPUT, POSITION_IDS_INPUT } from '../src/onnx/inplace-attention.js';

const { values: a } = parseArgs({
  options: {
    capacity: { type: 'string', default: '1024' },
    past: { type: 'string', default: '300' },
    rows: { type: 'string', default: '5' },
    window: { type: 'string', default: '9' },
    heads: { type: 'string', default: '6' },
    'head-dim': { type: 'string', default: '64' },
    threads: { type: 'string', default: '2' },
    reps: { type: 'string', default: '200' },
    seed: { type: 'string', default: '1' },
    json: { type: 'string' },
  },
});
const C = Number(a.capacity);
const L = Number(a.past);
const S = Number(a.rows);
const W = Number(a.window);
const H = Number(a.heads);
const D = Number(a['head-dim']);
if (S > W) throw new Error(`--rows ${S} exceeds --window ${W}`);
if (L + S > C) throw new Error(`--past ${L} + --rows ${S} exceeds --capacity ${C}`);
const shape = { heads: H, kvHeads: H, headDim: D };
const QKV = 3 * H * D;

/** `split`: the in-place graphs' attention as it is, over layer 0's buffers. */
function splitGraph(): GraphBuilder {
  const g = new GraphBuilder({ name: 'split' });
  inplaceInputs(g, 1, shape);
  const qkv = g.input('qkv', 'float32', [1, 'sequence_length', QKV]);
  const out = inplaceAttention(g, 0, qkv, shape, inplaceMasks(g, 1));
  g.output(out, 'out', 'float32', [1, 'sequence_length', H * D]);
  return g;
}

/**
 * `split-2-row`: the same two-part attention for one sequence, its two buffer MatMuls given a copy
 * of the first row as `window` has (module comment), to tell the two causes apart.
 */
function splitPaddedGraph(): GraphBuilder {
  const g = new GraphBuilder({ name: 'split-2-row' });
  inplaceInputs(g, 1, shape);
  const qkv = g.input('qkv', 'float32', [1, 'sequence_length', QKV]);
  const i64 = (v: number[], dims?: number[]) => g.constant('int64', v, dims);
  const [q, k, v] = g.opN('Split', [qkv, i64([H * D, H * D, H * D])], 3, { attrs: { axis: -1 } });
  const heads = (t: string, perm = [0, 2, 1, 3]) => g.op('Transpose', [g.op('Reshape', [t, i64([0, 0, H, D])])], { attrs: { perm } });
  const query = heads(q!);
  const rowsOf = (t: string) => g.op('Slice', [g.op('Shape', [t]), i64([2]), i64([3])]);
  const padRow = (t: string) => g.op('Concat', [t, g.op('Slice', [t, i64([0]), i64([1]), i64([2])])], { attrs: { axis: 2 } });
  const unpad = (t: string) => g.op('Slice', [t, i64([0]), rowsOf(query), i64([2])]);
  const masks = inplaceMasks(g, 1).split!;
  const pastScores = g.op('Add', [unpad(g.op('MatMul', [padRow(query), 'past_key_values.0.key'])), masks.past]);
  const newScores = g.op('Add', [g.op('MatMul', [query, heads(k!, [0, 2, 3, 1])]), masks.causal]);
  const probs = g.op('Softmax', [g.op('Concat', [pastScores, newScores], { attrs: { axis: -1 } })], { attrs: { axis: -1 } });
  const [pastProbs, newProbs] = g.opN('Split', [probs, masks.parts], 2, { attrs: { axis: -1 } });
  const context = g.op('Add', [unpad(g.op('MatMul', [padRow(pastProbs!), 'past_key_values.0.value'])), g.op('MatMul', [newProbs!, heads(v!)])]);
  g.output(g.op('Reshape', [g.op('Transpose', [context], { attrs: { perm: [0, 2, 1, 3] } }), i64([1, -1, H * D])]), 'out', 'float32', [1, 'sequence_length', H * D]);
  return g;
}

/** `window` (module comment), one sequence: the same inputs as `split`. */
function windowGraph(padded: boolean): GraphBuilder {
  const g = new GraphBuilder({ name: padded ? 'window' : 'window-1-row' });
  inplaceInputs(g, 1, shape);
  const qkv = g.input('qkv', 'float32', [1, 'sequence_length', QKV]);
  const i64 = (v: number[], dims?: number[]) => g.constant('int64', v, dims);
  const [q, k, v] = g.opN('Split', [qkv, i64([H * D, H * D, H * D])], 3, { attrs: { axis: -1 } });
  const heads = (t: string) => g.op('Transpose', [g.op('Reshape', [t, i64([0, 0, H, D])])], { attrs: { perm: [0, 2, 1, 3] } }); // [1, H, S, D]
  const [query, newK, newV] = [heads(q!), heads(k!), heads(v!)];
  const pos = g.op('Squeeze', [POSITION_IDS_INPUT, i64([0])]); // [S]
  const past = PAST_LENGTH_INPUT; // [1]
  // Window positions [S, W]: p - W + 1 + i.
  const offsets = g.op('Range', [i64([-(W - 1)], []), i64([1], []), i64([1], [])]);
  const wpos = g.op('Add', [g.op('Unsqueeze', [pos, i64([1])]), g.op('Unsqueeze', [offsets, i64([0])])]);
  const valid = g.op('GreaterOrEqual', [wpos, i64([0], [])]);
  const inBuffer = g.op('Less', [wpos, past]);
  const capacity = g.op('Sub', [g.op('Squeeze', [g.op('Slice', [g.op('Shape', ['past_key_values.0.value']), i64([2]), i64([3])]), i64([0])]), i64([1], [])]);
  const bufIndex = g.op('Clip', [wpos, i64([0], []), capacity]);
  const lastNew = g.op('Sub', [g.op('Squeeze', [g.op('Shape', [pos]), i64([0])]), i64([1], [])]);
  const newIndex = g.op('Clip', [g.op('Sub', [wpos, past]), i64([0], []), lastNew]);
  // Window keys and values [1, H, S, W, D], from the buffer or the new rows.
  const fromBufK = g.op('Transpose', [g.op('Gather', ['past_key_values.0.key', bufIndex], { attrs: { axis: 3 } })], { attrs: { perm: [0, 1, 3, 4, 2] } });
  const fromBufV = g.op('Gather', ['past_key_values.0.value', bufIndex], { attrs: { axis: 2 } });
  const pick = g.op('Unsqueeze', [inBuffer, i64([0, 1, 4])]);
  const winK = g.op('Where', [pick, fromBufK, g.op('Gather', [newK, newIndex], { attrs: { axis: 2 } })]);
  const winV = g.op('Where', [pick, fromBufV, g.op('Gather', [newV, newIndex], { attrs: { axis: 2 } })]);
  // Scores: the buffer below each row's anchor, and the window.
  const anchor = g.op('Add', [pos, i64([-(W - 1)], [])]); // [S]
  const slots = g.op('Range', [i64([0], []), g.op('Add', [capacity, i64([1], [])]), i64([1], [])]);
  const below = g.op('Less', [g.op('Unsqueeze', [slots, i64([0])]), g.op('Unsqueeze', [anchor, i64([1])])]); // [S, C]
  const zero = g.constant('float32', [0], []);
  const masked = g.constant('float32', [MASKED], []);
  // ONNX Runtime's MatMul of a non-constant right side computes a single left row by another
  // kernel than two or more (whose rows do not depend on each other): the buffer MatMuls get one
  // more row (a copy of the first), dropped after.
  const rowsOf = (t: string) => g.op('Slice', [g.op('Shape', [t]), i64([2]), i64([3])]);
  const padRow = (t: string) => (!padded ? t : g.op('Concat', [t, g.op('Slice', [t, i64([0]), i64([1]), i64([2])])], { attrs: { axis: 2 } }));
  const unpad = (t: string, like: string) => (!padded ? t : g.op('Slice', [t, i64([0]), rowsOf(like), i64([2])]));
  const bufScores = g.op('Add', [unpad(g.op('MatMul', [padRow(query), 'past_key_values.0.key']), query), g.op('Where', [below, zero, masked])]); // [1, H, S, C]
  const winScores = g.op('Add', [g.op('Squeeze', [g.op('MatMul', [g.op('Unsqueeze', [query, i64([3])]), g.op('Transpose', [winK], { attrs: { perm: [0, 1, 2, 4, 3] } })]), i64([3])]), g.op('Where', [valid, zero, masked])]); // [1, H, S, W]
  const probs = g.op('Softmax', [g.op('Concat', [bufScores, winScores], { attrs: { axis: -1 } })], { attrs: { axis: -1 } });
  const [bufProbs, winProbs] = g.opN('Split', [probs, g.op('Concat', [g.op('Add', [g.op('Unsqueeze', [capacity, i64([0])]), i64([1])]), i64([W])], { attrs: { axis: 0 } })], 2, { attrs: { axis: -1 } });
  const context = g.op('Add', [unpad(g.op('MatMul', [padRow(bufProbs!), 'past_key_values.0.value']), query), g.op('Squeeze', [g.op('MatMul', [g.op('Unsqueeze', [winProbs!, i64([3])]), winV]), i64([3])])]); // [1, H, S, D]
  const out = g.op('Reshape', [g.op('Transpose', [context], { attrs: { perm: [0, 2, 1, 3] } }), i64([1, -1, H * D])]);
  g.output(out, 'out', 'float32', [1, 'sequence_length', H * D]);
  return g;
}

/** A seeded uniform source in [-1, 1). */
function uniform(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 32) * 2 - 1;
  };
}

const rand = uniform(Number(a.seed));
const rows = Array.from({ length: S }, () => Float32Array.from({ length: QKV }, () => rand())); // q (scaled), k, v of positions L .. L + S - 1
const baseK = new Float32Array(H * D * C);
const baseV = new Float32Array(H * C * D);
for (let t = 0; t < L; t++) for (let h = 0; h < H; h++) for (let d = 0; d < D; d++) {
  baseK[(h * D + d) * C + t] = rand();
  baseV[(h * C + t) * D + d] = rand();
}

/** The buffers with rows 0 .. n - 1 of this test written at L .. L + n - 1, as the engine writes kv_rows. */
function buffers(n: number): { key: Float32Array; value: Float32Array } {
  const key = baseK.slice();
  const value = baseV.slice();
  for (let r = 0; r < n; r++) for (let h = 0; h < H; h++) for (let d = 0; d < D; d++) {
    key[(h * D + d) * C + L + r] = rows[r]![H * D + h * D + d]!;
    value[(h * C + L + r) * D + d] = rows[r]![2 * H * D + h * D + d]!;
  }
  return { key, value };
}

function feeds(first: number, count: number): Record<string, ort.Tensor> {
  const { key, value } = buffers(first);
  const qkv = new Float32Array(count * QKV);
  for (let r = 0; r < count; r++) qkv.set(rows[first + r]!, r * QKV);
  const ids = (xs: number[], dims: number[]) => new ort.Tensor('int64', BigInt64Array.from(xs.map(BigInt)), dims);
  const seq = Array.from({ length: count }, (_, i) => i);
  return {
    qkv: new ort.Tensor('float32', qkv, [1, count, QKV]),
    [POSITION_IDS_INPUT]: ids(seq.map((i) => L + first + i), [1, count]),
    [PAST_LENGTH_INPUT]: ids([L + first], [1]),
    [PADDED_SOURCE_INPUT]: ids(seq, [1, count]),
    [PACKED_INDEX_INPUT]: ids(seq, [count]),
    'past_key_values.0.key': new ort.Tensor('float32', key, [1, H, D, C]),
    'past_key_values.0.value': new ort.Tensor('float32', value, [1, H, C, D]),
  };
}

const options: ort.InferenceSession.SessionOptions = { intraOpNumThreads: Number(a.threads), interOpNumThreads: 1, graphOptimizationLevel: 'all' };
const sessions: Record<string, ort.InferenceSession> = {
  split: await ort.InferenceSession.create(splitGraph().toBytes(), options),
  'split-2-row': await ort.InferenceSession.create(splitPaddedGraph().toBytes(), options),
  window: await ort.InferenceSession.create(windowGraph(true).toBytes(), options),
  'window-1-row': await ort.InferenceSession.create(windowGraph(false).toBytes(), options),
};
const run = async (s: ort.InferenceSession, f: Record<string, ort.Tensor>) => (await s.run(f)).out!.data as Float32Array;

const results: Record<string, unknown>[] = [];
const verifyOutputs: Record<string, Float32Array> = {};
for (const [name, session] of Object.entries(sessions)) {
  const verify = await run(session, feeds(0, S));
  verifyOutputs[name] = verify;
  let differ = 0;
  let maxDiff = 0;
  for (let j = 0; j < S; j++) {
    const alone = await run(session, feeds(j, 1));
    for (let i = 0; i < H * D; i++) {
      const d = Math.abs(alone[i]! - verify[j * H * D + i]!);
      if (alone[i] !== verify[j * H * D + i]) differ++;
      maxDiff = Math.max(maxDiff, d);
    }
  }
  results.push({ attention: name, values: S * H * D, differ, max_abs_diff: maxDiff });
}
// The two attentions compute the same function: their verification outputs agree to rounding.
let across = 0;
for (let i = 0; i < S * H * D; i++) across = Math.max(across, Math.abs(verifyOutputs.split![i]! - verifyOutputs.window![i]!));

// Timing, alternating the two per repetition: ms per pass at 1 and S rows.
const timing: Record<string, number[]> = {};
for (const count of [1, S]) {
  const f = feeds(0, count);
  for (let rep = 0; rep < Number(a.reps); rep++) {
    for (const [name, session] of Object.entries(sessions)) {
      const t0 = performance.now();
      await session.run(f);
      (timing[`${name} ${count}`] ??= []).push(performance.now() - t0);
    }
  }
}
const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[xs.length >> 1]!;
console.log(`capacity ${C}, past ${L}, ${S} new rows, window ${W}, ${H} heads x ${D}; ${a.threads} threads`);
console.log('attention     values  differ (verification row vs one-token pass)  max |diff|');
for (const r of results) console.log(`${String(r.attention).padEnd(12)}  ${String(r.values).padStart(6)}  ${String(r.differ).padStart(43)}  ${(r.max_abs_diff as number).toExponential(2)}`);
console.log(`split vs window, verification pass: max |diff| ${across.toExponential(2)}`);
for (const [k, xs] of Object.entries(timing)) console.log(`${k} row(s): median ${median(xs).toFixed(3)} ms`);
if (a.json) {
  const ms = Object.fromEntries(Object.entries(timing).map(([k, xs]) => [k, +median(xs).toFixed(4)]));
  writeFileSync(a.json, `${JSON.stringify({ machine: machineInfo(), settings: a, results, split_vs_window_max_abs_diff: across, median_ms: ms }, null, 2)}\n`);
}
for (const session of Object.values(sessions)) await session.release();
