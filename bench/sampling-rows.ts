/**
 * Per-row logits processing, stage by stage, at the vocabulary sizes of the bundled pair (259),
 * Llama 2 (32,000) and Qwen3 (151,936).
 *
 *   npm run build && node dist/bench/sampling-rows.js [--reps 200] [--json FILE] [--onnx] [--base DIST]
 *
 * Rows are seeded synthetic logits shaped like a language model's: most tokens N(0, 2) and a few
 * dozen lifted by 6-12, so top-p 0.95 keeps tens to hundreds of tokens (a flat row, where the
 * nucleus holds most of the vocabulary, is timed too). Every stage runs `--reps` times on fresh
 * rows, interleaved stage by stage; the median per row is printed. `--onnx` also times ONNX
 * Runtime's TopK inside a graph that ends at the logits (a one-MatMul stand-in for an lm_head),
 * against the same graph returning the whole row and selecting in JavaScript. `--base DIST` also
 * times another build's `toProbs` (its compiled `dist` directory) on the top-p and Qwen3 stages,
 * interleaved with this build's, for a before/after in one process.
 * On a shared machine the figures move with the neighbours' load: compare within one run, and
 * read the CPU-time medians (printed second), which leave out the time other processes held the core.
 */
import { writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { residual } from '../src/engine/acceptance.js';
import { LogitsProcessor } from '../src/engine/logits-processors.js';
import { Rng } from '../src/engine/rng.js';
import { argmax, sample, softmax, toProbs, type SamplingParams } from '../src/engine/sampling.js';
import { GraphBuilder, attr } from '../src/onnx/graph-builder.js';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const { values } = parseArgs({
  options: {
    reps: { type: 'string', default: '200' },
    json: { type: 'string' },
    onnx: { type: 'boolean', default: false },
    base: { type: 'string' },
  },
});
const REPS = Number(values.reps);
const VOCABS = [259, 32_000, 151_936];
/** Qwen3's generation_config.json defaults. */
const QWEN3: SamplingParams = { temperature: 0.6, topK: 20, topP: 0.95 };
const TOP_P: SamplingParams = { temperature: 1, topK: 0, topP: 0.95 };
const TOP_K: SamplingParams = { temperature: 1, topK: 20, topP: 1 };

function gaussian(rng: Rng): number {
  const u = Math.max(rng.next(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next());
}

/** A language-model-like row: N(0, 2) with `lifted` tokens raised by 6-12. */
function lmRow(vocab: number, rng: Rng, lifted = 40): Float32Array {
  const row = new Float32Array(vocab);
  for (let i = 0; i < vocab; i++) row[i] = 2 * gaussian(rng);
  for (let j = 0; j < Math.min(lifted, vocab); j++) row[Math.floor(rng.next() * vocab)]! += 6 + 6 * rng.next();
  return row;
}

/** A nearly flat row (random weights): N(0, 0.3). */
function flatRow(vocab: number, rng: Rng): Float32Array {
  const row = new Float32Array(vocab);
  for (let i = 0; i < vocab; i++) row[i] = 0.3 * gaussian(rng);
  return row;
}

/** The sort-based processing this replaced (a comparator sort of the whole vocabulary), for comparison. */
function toProbsBySort(row: Float32Array, params: SamplingParams): Float64Array {
  const probs = softmax(row, params.temperature);
  const order = Array.from({ length: row.length }, (_, i) => i);
  order.sort((a, b) => probs[b]! - probs[a]! || a - b);
  const keep = params.topK > 0 ? Math.min(params.topK, row.length) : row.length;
  let kept = 0;
  for (let i = 0; i < keep; i++) kept += probs[order[i]!]!;
  let n = keep;
  let mass = 0;
  for (let i = 0; i < keep; i++) {
    mass += probs[order[i]!]! / kept;
    if (mass >= params.topP) {
      n = i + 1;
      break;
    }
  }
  const out = new Float64Array(row.length);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += probs[order[i]!]!;
  for (let i = 0; i < n; i++) out[order[i]!] = probs[order[i]!]! / sum;
  return out;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

interface Stage {
  name: string;
  /** Runs once on a prepared input; the timer covers only `run`. */
  prepare: (vocab: number, rng: Rng) => () => unknown;
  /** Fewer repetitions (slow stages). */
  slow?: boolean;
}

const processor = new LogitsProcessor({ presencePenalty: 0.5, frequencyPenalty: 0.3, logitBias: { 7: 2, 11: -5 } });
processor.accept(Array.from({ length: 64 }, (_, i) => (i * 37) % 251));

const STAGES: Stage[] = [
  { name: 'argmax (greedy)', prepare: (v, rng) => { const row = lmRow(v, rng); return () => argmax(row); } },
  { name: 'penalties + bias (copy of the row)', prepare: (v, rng) => { const row = lmRow(v, rng); return () => processor.apply(row, [3, 5]); } },
  { name: 'softmax (whole row)', prepare: (v, rng) => { const row = lmRow(v, rng); return () => softmax(row, 0.6); } },
  { name: 'T 0.6, top-k 20, top-p 0.95', prepare: (v, rng) => { const row = lmRow(v, rng); return () => toProbs(row, QWEN3); } },
  { name: 'top-k 20', prepare: (v, rng) => { const row = lmRow(v, rng); return () => toProbs(row, TOP_K); } },
  { name: 'top-p 0.95', prepare: (v, rng) => { const row = lmRow(v, rng); return () => toProbs(row, TOP_P); } },
  { name: 'top-p 0.95, flat row', prepare: (v, rng) => { const row = flatRow(v, rng); return () => toProbs(row, TOP_P); } },
  {
    name: 'top-p 0.95, grammar-masked row (1,000 allowed)',
    prepare: (v, rng) => {
      const row = lmRow(v, rng);
      const allowed = new Set(Array.from({ length: Math.min(1000, v) }, () => Math.floor(rng.next() * v)));
      for (let i = 0; i < v; i++) if (!allowed.has(i)) row[i] = -Infinity;
      return () => toProbs(row, TOP_P);
    },
  },
  { name: 'sample (Qwen3 defaults)', prepare: (v, rng) => { const p = toProbs(lmRow(v, rng), QWEN3); const r = new Rng(1); return () => sample(p, r); } },
  {
    name: 'residual (Qwen3 defaults)',
    prepare: (v, rng) => {
      const p = toProbs(lmRow(v, rng), QWEN3);
      const q = toProbs(lmRow(v, rng), QWEN3);
      return () => residual(p, q);
    },
  },
  { name: 'before: sort-based top-k 20 + top-p 0.95', prepare: (v, rng) => { const row = lmRow(v, rng); return () => toProbsBySort(row, QWEN3); }, slow: true },
];
if (values.base) {
  // The other build's toProbs on the same kinds of rows, interleaved stage by stage with this build's.
  const base = (await import(pathToFileURL(resolve(values.base, 'src/engine/sampling.js')).href)) as { toProbs: typeof toProbs };
  STAGES.push(
    { name: 'base build: T 0.6, top-k 20, top-p 0.95', prepare: (v, rng) => { const row = lmRow(v, rng); return () => base.toProbs(row, QWEN3); } },
    { name: 'base build: top-p 0.95', prepare: (v, rng) => { const row = lmRow(v, rng); return () => base.toProbs(row, TOP_P); } },
    { name: 'base build: top-p 0.95, flat row', prepare: (v, rng) => { const row = flatRow(v, rng); return () => base.toProbs(row, TOP_P); } },
  );
}

const results: Record<string, Record<string, number>> = {};
const rng = new Rng(2026);
for (const vocab of VOCABS) results[vocab] = {};
// Interleave: every stage once per vocabulary per repetition.
const samples = new Map<string, number[]>();
/** The same runs' CPU time (user + system, microsecond resolution): on a loaded machine it leaves out the time other processes held the core. */
const cpuSamples = new Map<string, number[]>();
const cpuResults: Record<string, Record<string, number>> = {};
for (const vocab of VOCABS) cpuResults[vocab] = {};
for (let rep = 0; rep < REPS; rep++) {
  for (const stage of STAGES) {
    if (stage.slow && rep % 10 !== 0) continue;
    for (const vocab of VOCABS) {
      const run = stage.prepare(vocab, rng);
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      run();
      const ms = performance.now() - t0;
      const cpu = process.cpuUsage(cpu0);
      const key = `${stage.name}|${vocab}`;
      if (rep >= 2 || stage.slow) {
        (samples.get(key) ?? samples.set(key, []).get(key)!).push(ms);
        (cpuSamples.get(key) ?? cpuSamples.set(key, []).get(key)!).push((cpu.user + cpu.system) / 1000);
      }
    }
  }
}
for (const [key, ms] of samples) {
  const [stage, vocab] = key.split('|') as [string, string];
  results[vocab]![stage] = median(ms);
  cpuResults[vocab]![stage] = median(cpuSamples.get(key)!);
}

const width = Math.max(...STAGES.map((s) => s.name.length));
console.log(`ms per row (median of ${REPS} fresh rows; sort-based: ${Math.ceil(REPS / 10)}), ${cpus()[0]?.model ?? 'cpu'} x${cpus().length}`);
console.log(`${'stage'.padEnd(width)}  ${VOCABS.map((v) => `V = ${v.toLocaleString('en')}`.padStart(14)).join('')}`);
for (const stage of STAGES) {
  console.log(`${stage.name.padEnd(width)}  ${VOCABS.map((v) => results[v]![stage.name]!.toFixed(3).padStart(14)).join('')}`);
}
console.log(`\nCPU ms per row (median), the same runs`);
for (const stage of STAGES) {
  console.log(`${stage.name.padEnd(width)}  ${VOCABS.map((v) => cpuResults[v]![stage.name]!.toFixed(3).padStart(14)).join('')}`);
}

/** ONNX Runtime's TopK in the graph against the whole row out and JavaScript's selection. */
async function onnxTopK(vocab: number): Promise<Record<string, number>> {
  const hidden = 64;
  const build = (withTopK: boolean) => {
    const g = new GraphBuilder({ opset: 17, name: 'lm_head' });
    const h = g.input('h', 'float32', [1, hidden]);
    const w = new Float32Array(hidden * vocab);
    const r = new Rng(3);
    for (let i = 0; i < w.length; i++) w[i] = gaussian(r) * 0.5;
    const logits = g.op('MatMul', [h, g.initializer('w', w, [hidden, vocab])]);
    if (withTopK) {
      const [v, i] = g.opN('TopK', [logits, g.constant('int64', [20])], 2, { attrs: { axis: attr.int(-1), largest: attr.int(1), sorted: attr.int(1) } });
      g.output(v!, 'values', 'float32', [1, 20]);
      g.output(i!, 'indices', 'int64', [1, 20]);
    } else g.output(logits, 'logits', 'float32', [1, vocab]);
    return ort.InferenceSession.create(g.toBytes(), { intraOpNumThreads: 1, logSeverityLevel: 3 });
  };
  const plain = await build(false);
  const topk = await build(true);
  const r = new Rng(4);
  const feed = () => {
    const h = new Float32Array(hidden);
    for (let i = 0; i < hidden; i++) h[i] = gaussian(r);
    return { h: new ort.Tensor('float32', h, [1, hidden]) };
  };
  const a: number[] = [];
  const b: number[] = [];
  for (let rep = 0; rep < Math.max(20, REPS / 4); rep++) {
    let t0 = performance.now();
    const out = await plain.run(feed());
    toProbs(out.logits!.data as Float32Array, QWEN3);
    a.push(performance.now() - t0);
    t0 = performance.now();
    const top = await topk.run(feed());
    softmax(top.values!.data as Float32Array, QWEN3.temperature);
    b.push(performance.now() - t0);
  }
  await plain.release();
  await topk.release();
  return { 'graph to logits + JS top-k/top-p': median(a), 'graph with TopK (k 20) + JS softmax of 20': median(b) };
}

const onnx: Record<string, Record<string, number>> = {};
if (values.onnx) {
  console.log('\nONNX Runtime TopK inside the graph (a 64 x V MatMul as the lm_head, 1 thread), ms per row:');
  for (const vocab of VOCABS) {
    onnx[vocab] = await onnxTopK(vocab);
    for (const [k, v] of Object.entries(onnx[vocab]!)) console.log(`  V = ${vocab.toLocaleString('en')}: ${k.padEnd(44)} ${v.toFixed(3)}`);
  }
}
if (values.json) writeFileSync(values.json, JSON.stringify({ reps: REPS, cpu: cpus()[0]?.model, cores: cpus().length, load_average: loadavg(), base: values.base, ms_per_row: results, cpu_ms_per_row: cpuResults, onnx }, null, 2));
