/**
 * Where one in-place decoder pass spends its time, per operator type, from ONNX Runtime's own
 * profiler: a model directory's in-place graph at each dtype and attention (`fp32` with the split
 * attention; `q8` / `q4` at accuracy_level 1 with the split attention, as the in-place graphs ran
 * before int8 compute, and at accuracy_level 4 with the row-independent attention, as
 * they run now), each fed a one-token pass and a `--rows`-row verification pass after `--past`
 * cached positions. The variants are timed in alternation, rep by rep, so that a shared machine's
 * bursts hit all alike; the table gives each variant's median ms per pass and, from the
 * profile, the share of its kernel time per operator type.
 *
 *   npm run build && node dist/bench/pass-profile.js [--model DIR] [--dtypes fp32,q8,q4]
 *     [--past 300] [--rows 5] [--threads 2] [--reps 40] [--levels 1,4] [--base DIR] [--json FILE] [--no-profile]
 *
 * `--base DIR` (another build's compiled `dist`, e.g. main's) adds that build's graphs at
 * accuracy_level 4 as variants of their own (`(base)`), in the same alternation: a before/after
 * of the graph builders per operator type on the same weights.
 *
 * The profiler itself costs every node a few microseconds, which on a small model is a large part
 * of a pass: `--no-profile` times the passes with it off (no per-operator shares then).
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { machineInfo } from '../src/bench/serve/report.js';
import { readModelDir } from '../src/engine/model-dir.js';
import { readModelFile } from '../src/onnx/graph-builder.js';
import { buildGpt2Graph } from '../src/onnx/gpt2-graph.js';
import { readGpt2Weights } from '../src/onnx/gpt2-weights.js';
import { buildLlamaGraph } from '../src/onnx/llama-graph.js';
import { LLAMA_FAMILY, readLlamaWeights } from '../src/onnx/llama-weights.js';
import type { AccuracyLevel } from '../src/onnx/matmul-nbits.js';
import { BUNDLED_TARGET } from '../src/paths.js';

const { values: a } = parseArgs({
  options: {
    model: { type: 'string', default: BUNDLED_TARGET },
    dtypes: { type: 'string', default: 'fp32,q8,q4' },
    past: { type: 'string', default: '300' },
    rows: { type: 'string', default: '5' },
    threads: { type: 'string', default: '2' },
    reps: { type: 'string', default: '40' },
    levels: { type: 'string', default: '1,4' },
    base: { type: 'string' },
    json: { type: 'string' },
    'no-profile': { type: 'boolean', default: false },
  },
});
const PAST = Number(a.past);
const ROWS = Number(a.rows);
const REPS = Number(a.reps);
/** accuracy_level variants of the quantized dtypes (1: float32 compute, split attention; 4: int8, row-independent attention). */
const levels = a.levels!.split(',').map((l) => {
  if (l !== '1' && l !== '4') throw new Error(`--levels takes 1 and/or 4, got ${l}`);
  return Number(l) as AccuracyLevel;
});
/** Buffer capacity: the past plus the pass, rounded up to engine/kv-pool.ts's step of 64. */
const CAPACITY = Math.ceil((PAST + ROWS) / 64) * 64;

interface Variant {
  label: string;
  session: ort.InferenceSession;
  profile: string;
  kvHeads: number;
  headDim: number;
  layers: number;
}

/**
 * The weight readers and graph builders of a build: this one's, or another's (`--base`; its own
 * readers too, since a build recognises quantized weights only as its own readers registered them).
 */
interface Builders {
  readGpt2Weights: typeof readGpt2Weights;
  readLlamaWeights: typeof readLlamaWeights;
  buildGpt2Graph: typeof buildGpt2Graph;
  buildLlamaGraph: typeof buildLlamaGraph;
}
const ours: Builders = { readGpt2Weights, readLlamaWeights, buildGpt2Graph, buildLlamaGraph };
async function baseBuilders(dir: string): Promise<Builders> {
  const from = (path: string) => import(pathToFileURL(resolve(dir, path)).href);
  const modules = await Promise.all(['src/onnx/gpt2-weights.js', 'src/onnx/llama-weights.js', 'src/onnx/gpt2-graph.js', 'src/onnx/llama-graph.js'].map(from));
  return Object.assign({}, ...modules) as Builders;
}

/** The in-place graph of `dir` at `dtype`, its MatMulNBits at `accuracyLevel` (4: the window attention). */
function graphBytes(dir: string, dtype: string, accuracyLevel: AccuracyLevel, b: Builders = ours): { bytes: Uint8Array; kvHeads: number; headDim: number; layers: number } {
  const modelDir = readModelDir(dir, dtype);
  const model = readModelFile(modelDir.onnxPath);
  const c = modelDir.config;
  if (LLAMA_FAMILY.includes(c.modelType)) {
    const w = b.readLlamaWeights(model, c);
    const g = b.buildLlamaGraph(w, { rotary: 'fused', maxPositions: c.maxPositions ?? 4096, accuracyLevel });
    return { bytes: g.toBytes(), kvHeads: w.kvHeads, headDim: w.headDim, layers: w.blocks.length };
  }
  const w = b.readGpt2Weights(model, c.heads!);
  const g = b.buildGpt2Graph(w, { attention: 'inplace', norms: 'fused', gelu: 'fused', accuracyLevel });
  return { bytes: g.toBytes(), kvHeads: w.heads, headDim: w.hidden / w.heads, layers: w.blocks.length };
}

function feeds(v: Variant, n: number): Record<string, ort.Tensor> {
  const i64 = (x: number[], dims: number[]) => new ort.Tensor('int64', BigInt64Array.from(x.map(BigInt)), dims);
  const index = Array.from({ length: n }, (_, i) => i);
  const f: Record<string, ort.Tensor> = {
    input_ids: i64(index.map((i) => 10 + i), [1, n]),
    position_ids: i64(index.map((i) => PAST + i), [1, n]),
    past_sequence_length: i64([PAST], [1]),
    padded_source: i64(index, [1, n]),
    packed_index: i64(index, [n]),
    logits_from: i64([0], [1]),
  };
  const size = v.kvHeads * v.headDim * CAPACITY;
  for (let i = 0; i < v.layers; i++) {
    f[`past_key_values.${i}.key`] = new ort.Tensor('float32', new Float32Array(size).fill(0.01), [1, v.kvHeads, v.headDim, CAPACITY]);
    f[`past_key_values.${i}.value`] = new ort.Tensor('float32', new Float32Array(size).fill(0.01), [1, v.kvHeads, CAPACITY, v.headDim]);
  }
  return f;
}

const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;

const work = mkdtempSync(join(tmpdir(), 'specd-pass-profile-'));
const variants: Variant[] = [];
for (const dtype of a.dtypes!.split(',')) {
  const base = a.base && dtype !== 'fp32' ? [{ level: 4 as AccuracyLevel, builders: await baseBuilders(a.base), suffix: ' (base)' }] : [];
  for (const { level, builders, suffix } of [...(dtype === 'fp32' ? ([1] as AccuracyLevel[]) : levels).map((level) => ({ level, builders: ours, suffix: '' })), ...base]) {
    const label = `${dtype === 'fp32' ? 'fp32 split' : `${dtype} acc ${level} ${level === 4 ? 'rows' : 'split'}`}${suffix}`;
    const built = graphBytes(a.model!, dtype, level, builders);
    const profile = join(work, label.replace(/[^A-Za-z0-9]+/g, '-'));
    const session = await ort.InferenceSession.create(built.bytes, { intraOpNumThreads: Number(a.threads), graphOptimizationLevel: 'all', ...(a['no-profile'] ? {} : { enableProfiling: true, profileFilePrefix: profile }) });
    variants.push({ label, session, profile, ...built });
  }
}
const times = new Map<string, { one: number[]; verify: number[] }>(variants.map((v) => [v.label, { one: [], verify: [] }]));
const prepared = new Map(variants.map((v) => [v.label, { one: feeds(v, 1), verify: feeds(v, ROWS) }]));
for (let rep = 0; rep < REPS; rep++) {
  for (let i = 0; i < variants.length; i++) {
    const v = variants[(rep + i) % variants.length]!;
    const f = prepared.get(v.label)!;
    for (const kind of ['one', 'verify'] as const) {
      const t0 = performance.now();
      await v.session.run(f[kind]);
      times.get(v.label)![kind].push(performance.now() - t0);
    }
  }
}
const results = [];
for (const v of variants) {
  if (!a['no-profile']) v.session.endProfiling();
  await v.session.release();
  const base = v.profile.split('/').pop()!;
  const file = readdirSync(work).find((f) => f.startsWith(`${base}_`) && f.endsWith('.json'));
  const byOp = new Map<string, number>();
  let total = 0;
  if (file) {
    for (const e of JSON.parse(readFileSync(join(work, file), 'utf8')) as { cat: string; name: string; dur: number; args?: { op_name?: string } }[]) {
      if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time')) continue;
      const op = e.args?.op_name ?? '?';
      byOp.set(op, (byOp.get(op) ?? 0) + e.dur);
      total += e.dur;
    }
  }
  const shares = Object.fromEntries([...byOp].sort((x, y) => y[1] - x[1]).map(([op, us]) => [op, Number((us / total).toFixed(3))]));
  const t = times.get(v.label)!;
  results.push({ variant: v.label, one_row_ms: Number(median(t.one).toFixed(3)), verify_ms: Number(median(t.verify).toFixed(3)), kernel_share: shares });
}
rmSync(work, { recursive: true, force: true });
for (const r of results) {
  const top = Object.entries(r.kernel_share)
    .slice(0, 6)
    .map(([op, s]) => `${op} ${(s * 100).toFixed(0)}%`)
    .join(', ');
  console.log(`${r.variant.padEnd(27)} 1 row ${r.one_row_ms.toFixed(2)} ms, ${ROWS} rows ${r.verify_ms.toFixed(2)} ms | ${top}`);
}
if (a.json) {
  const settings = { base: a.base ?? null, model: a.model, past: PAST, rows: ROWS, capacity: CAPACITY, reps: REPS, threads: Number(a.threads), ort: ort.env.versions };
  writeFileSync(a.json, `${JSON.stringify({ schema: 'specd-pass-profile/1', created: new Date().toISOString(), machine: machineInfo(), settings, results }, null, 2)}\n`);
}
