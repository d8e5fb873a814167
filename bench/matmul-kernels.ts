/**
 * ONNX Runtime's CPU kernels for a decoder's linear layers at the bundled target's shapes (GPT-2,
 * 6 blocks of hidden 384 / inner 1536, lm_head 384 x 259): one graph holds the 25 weights of a
 * whole decode pass (QKV 384x1152, projection 384x384, MLP 384x1536 and 1536x384 per block, then
 * the lm_head), each fed M rows, and is timed per kernel choice:
 *
 * - `MatMul` float32 (the baseline);
 * - `MatMulNBits` with 8 and 4 bits, block sizes 16-128, symmetric or with zero points, at
 *   accuracy_level 1 (float32 compute) and 4 (int8 compute);
 * - `DynamicQuantizeMatMul` (what `quantize_dynamic` writes: int8 weights per column, the
 *   activations quantized per tensor).
 *
 * Kernel choices are timed in alternation (rep by rep, order rotated), so that a shared machine's
 * bursts hit all alike; the table gives the median and the 10th percentile per M. It also checks
 * what speculation's exactness needs: that each row's result is bitwise the same whether it
 * is computed alone (M = 1) or among 2-16 rows (`rows independent`).
 *
 *   npm run build && node dist/bench/matmul-kernels.js [--reps 60] [--threads 2] [--json FILE]
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { machineInfo } from '../src/bench/serve/report.js';
import { GraphBuilder } from '../src/onnx/graph-builder.js';
import { matMulNBits, quantizeLinear, type AccuracyLevel, type QuantBits } from '../src/onnx/matmul-nbits.js';

const { values } = parseArgs({ options: { reps: { type: 'string', default: '60' }, threads: { type: 'string', default: '2' }, json: { type: 'string' } } });
const REPS = Number(values.reps);
const THREADS = Number(values.threads);
const ROWS = [1, 2, 4, 8];
const HIDDEN = 384;
const INNER = 1536;
const LAYERS = 6;
const VOCAB = 259;

interface Kernel {
  name: string;
  build: (g: GraphBuilder, input: string, name: string, w: Float32Array, k: number, n: number) => string;
}

const nbits = (bits: QuantBits, blockSize: number, accuracy: AccuracyLevel, symmetric: boolean): Kernel => ({
  name: `MatMulNBits ${bits}-bit block ${blockSize}${symmetric ? ' sym' : ' zp'} acc ${accuracy}`,
  build: (g, input, name, w, k, n) => matMulNBits(g, input, name, quantizeLinear(w, k, n, { bits, blockSize, symmetric }), accuracy),
});

const kernels: Kernel[] = [
  { name: 'MatMul fp32', build: (g, input, name, w, k, n) => g.op('MatMul', [input, g.initializer(name, w, [k, n])]) },
  {
    name: 'DynamicQuantizeMatMul int8 per column',
    build: (g, input, name, w, k, n) => {
      const scales = new Float32Array(n);
      for (let c = 0; c < n; c++) for (let r = 0; r < k; r++) scales[c] = Math.max(scales[c]!, Math.abs(w[r * n + c]!) / 127);
      const q = new Int8Array(k * n);
      for (let r = 0; r < k; r++) for (let c = 0; c < n; c++) q[r * n + c] = scales[c] ? Math.round(w[r * n + c]! / scales[c]!) : 0;
      return g.op('DynamicQuantizeMatMul', [input, g.initializer(name, q, [k, n]), g.initializer(`${name}.scale`, scales, [n])], { domain: 'com.microsoft' });
    },
  },
];
for (const bits of [8, 4] as const) {
  for (const block of [16, 32, 64, 128]) for (const acc of [1, 4] as const) kernels.push(nbits(bits, block, acc, true));
  kernels.push(nbits(bits, 32, 1, false));
}

/** Deterministic weights, GPT-2-like scale (std 0.02). */
function weight(k: number, n: number, seed: number): Float32Array {
  const w = new Float32Array(k * n);
  let s = seed >>> 0;
  for (let i = 0; i < w.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    w[i] = ((s / 2 ** 32) * 2 - 1) * 0.035;
  }
  return w;
}

function buildModel(kernel: Kernel): Uint8Array {
  const g = new GraphBuilder({ opset: 17, name: 'linears' });
  const a = g.input('a', 'float32', ['rows', HIDDEN]);
  const b = g.input('b', 'float32', ['rows', INNER]);
  const outs: string[] = [];
  const shapes: [string, string, number, number][] = [];
  for (let l = 0; l < LAYERS; l++) {
    shapes.push([a, `l${l}.qkv`, HIDDEN, 3 * HIDDEN], [a, `l${l}.proj`, HIDDEN, HIDDEN], [a, `l${l}.fc`, HIDDEN, INNER], [b, `l${l}.out`, INNER, HIDDEN]);
  }
  shapes.push([a, 'lm_head', HIDDEN, VOCAB]);
  shapes.forEach(([input, name, k, n], i) => outs.push(kernel.build(g, input, name, weight(k, n, i + 1), k, n)));
  outs.forEach((o, i) => g.output(o, `y${i}`, 'float32', ['rows', shapes[i]![3]]));
  return g.toBytes();
}

const inputs = (rows: number) => {
  const fill = (n: number, salt: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + salt));
  return { a: new ort.Tensor('float32', fill(rows * HIDDEN, 1), [rows, HIDDEN]), b: new ort.Tensor('float32', fill(rows * INNER, 2), [rows, INNER]) };
};

const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
const p10 = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 10)]!;

const sessions: ort.InferenceSession[] = [];
for (const k of kernels) {
  sessions.push(await ort.InferenceSession.create(buildModel(k), { intraOpNumThreads: THREADS, interOpNumThreads: 1, graphOptimizationLevel: 'all' }));
}

// Rows independent: row r of an M-row run equals the same row run alone, bit for bit (M = 2..16).
const INDEPENDENCE_ROWS = [2, 3, 4, 5, 8, 16];
const independent: boolean[] = [];
for (const s of sessions) {
  let same = true;
  for (const m of INDEPENDENCE_ROWS) {
    const feed = inputs(m);
    const all = await s.run(feed);
    for (let r = 0; r < m && same; r++) {
      const alone = await s.run({
        a: new ort.Tensor('float32', (feed.a.data as Float32Array).slice(r * HIDDEN, (r + 1) * HIDDEN), [1, HIDDEN]),
        b: new ort.Tensor('float32', (feed.b.data as Float32Array).slice(r * INNER, (r + 1) * INNER), [1, INNER]),
      });
      for (const name of s.outputNames) {
        const n = alone[name]!.dims[1]!;
        const x = all[name]!.data as Float32Array;
        const y = alone[name]!.data as Float32Array;
        for (let c = 0; c < n; c++) if (!Object.is(x[r * n + c], y[c])) same = false;
      }
    }
  }
  independent.push(same);
}

const times = kernels.map(() => ROWS.map(() => [] as number[]));
const feeds = ROWS.map(inputs);
for (let rep = 0; rep < REPS + 5; rep++) {
  for (let j = 0; j < kernels.length; j++) {
    const i = (j + rep) % kernels.length;
    for (let m = 0; m < ROWS.length; m++) {
      const t0 = performance.now();
      await sessions[i]!.run(feeds[m]!);
      if (rep >= 5) times[i]![m]!.push(performance.now() - t0);
    }
  }
}

const rows = kernels.map((k, i) => ({
  kernel: k.name,
  rows_independent: independent[i],
  median_ms: Object.fromEntries(ROWS.map((m, j) => [m, +median(times[i]![j]!).toFixed(3)])),
  p10_ms: Object.fromEntries(ROWS.map((m, j) => [m, +p10(times[i]![j]!).toFixed(3)])),
}));
const pad = (s: string, n: number) => s.padEnd(n);
console.log(`${pad('kernel (25 linears of the bundled target)', 44)} ${ROWS.map((m) => `M=${m} med/p10 ms`.padStart(18)).join('')}  rows independent`);
for (const r of rows) {
  console.log(`${pad(r.kernel, 44)} ${ROWS.map((m) => `${r.median_ms[m]!.toFixed(3)}/${r.p10_ms[m]!.toFixed(3)}`.padStart(18)).join('')}  ${r.rows_independent ? 'yes' : 'NO'}`);
}
if (values.json) {
  writeFileSync(values.json, `${JSON.stringify({ schema: 'specd-matmul-kernels/1', created: new Date().toISOString(), machine: machineInfo(), settings: { reps: REPS, threads: THREADS, ort: ort.env.versions }, kernels: rows }, null, 2)}\n`);
}
await Promise.all(sessions.map((s) => s.release()));
