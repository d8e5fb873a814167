/**
 * The Llama-family rebuild against the exported graph on one random-weight GQA decoder (hidden
 * 512, 8 layers, 8 query heads on 2 KV heads, head_dim 64, 24M parameters; the decoder fixture
 * of src/testing/decoder-fixture.ts), interleaved pass by pass so that a shared machine's bursts hit
 * both graphs alike:
 *
 * 1. one decode pass (1 token, then rolled back) and one 5-token verification at contexts 128,
 *    512 and 1000 (median and 10th percentile, ms);
 * 2. one decode step for B sequences at about 300 positions: one `forwardBatch` pass in place
 *    against B passes of the exported graph (median ms, tokens/s).
 *
 *   npm run build && node dist/bench/llama-inplace.js [--reps 80] [--threads 2] [--json FILE]
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { machineInfo } from '../src/bench/serve/report.js';
import type { KVCache } from '../src/engine/kv-cache.js';
import { DecoderModel } from '../src/engine/model.js';
import { MAX_FIXTURE_VOCAB, writeFixtureModelDir } from '../src/testing/decoder-fixture.js';

const { values } = parseArgs({ options: { reps: { type: 'string', default: '80' }, threads: { type: 'string', default: '2' }, json: { type: 'string' } } });
const REPS = Number(values.reps);
const THREADS = Number(values.threads);
const CONTEXTS = [128, 512, 1000];
const BATCHES = [1, 4, 8, 16];
/** Past length of the batched sequences (sequence b has BATCH_PAST + 3 b positions). */
const BATCH_PAST = 280;
const FIXTURE = { style: 'llama', hidden: 512, layers: 8, heads: 8, kvHeads: 2, maxPositions: 1100, vocabSize: MAX_FIXTURE_VOCAB, seed: 7 } as const;

type Graph = 'exported' | 'inplace';
const GRAPHS: Graph[] = ['exported', 'inplace'];
const quantile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;
const tokens = (n: number, salt: number) => Array.from({ length: n }, (_, i) => 4 + ((i * 37 + salt) % 90));
/** Graph order of repetition r: alternating, so that neither graph always runs first. */
const order = (r: number): Graph[] => (r % 2 ? ['exported', 'inplace'] : ['inplace', 'exported']);

const dir = mkdtempSync(join(tmpdir(), 'specd-llama-bench-'));
try {
  writeFixtureModelDir(dir, FIXTURE);
  const models = Object.fromEntries(await Promise.all(GRAPHS.map(async (g) => [g, await DecoderModel.load(dir, { threads: THREADS, graph: g })] as const))) as Record<Graph, DecoderModel>;
  if (!models.inplace.kvInPlace) throw new Error('the fixture was not rebuilt in place');
  const passes: Record<string, unknown>[] = [];
  process.stdout.write(`per pass (ms, median / p10), ${REPS} interleaved repetitions, ${THREADS} threads\ncontext  graph     decode          verify 5\n`);
  for (const context of CONTEXTS) {
    const prompt = tokens(context - 1, context);
    const caches = {} as Record<Graph, KVCache>;
    for (const g of GRAPHS) {
      caches[g] = models[g].newCache();
      await models[g].forward(caches[g], prompt, 1);
    }
    const decode: Record<Graph, number[]> = { exported: [], inplace: [] };
    const verify: Record<Graph, number[]> = { exported: [], inplace: [] };
    for (let r = 0; r < REPS; r++) {
      for (const g of order(r)) {
        let t = performance.now();
        await models[g].forward(caches[g], [5], 1);
        decode[g].push(performance.now() - t);
        await caches[g].crop(prompt.length);
        t = performance.now();
        await models[g].forward(caches[g], [5, 6, 7, 8, 9], 5);
        verify[g].push(performance.now() - t);
        await caches[g].crop(prompt.length);
      }
    }
    for (const g of GRAPHS) {
      caches[g].release();
      const row = { context, graph: g, decode_ms_median: quantile(decode[g], 50), decode_ms_p10: quantile(decode[g], 10), verify5_ms_median: quantile(verify[g], 50), verify5_ms_p10: quantile(verify[g], 10) };
      passes.push(row);
      process.stdout.write(`${String(context).padStart(7)}  ${g.padEnd(8)}  ${row.decode_ms_median.toFixed(2).padStart(6)} / ${row.decode_ms_p10.toFixed(2).padStart(6)}  ${row.verify5_ms_median.toFixed(2).padStart(6)} / ${row.verify5_ms_p10.toFixed(2).padStart(6)}\n`);
    }
  }
  const batches: Record<string, unknown>[] = [];
  const batchReps = Math.max(5, Math.round(REPS / 5));
  process.stdout.write(`\none decode step of B sequences at ~${BATCH_PAST} positions (median ms, tokens/s), ${batchReps} interleaved repetitions\n    B  exported            inplace (one pass)\n`);
  for (const B of BATCHES) {
    const lengths = Array.from({ length: B }, (_, b) => BATCH_PAST + 3 * b);
    const caches = {} as Record<Graph, KVCache[]>;
    for (const g of GRAPHS) {
      caches[g] = [];
      for (const [b, n] of lengths.entries()) {
        const c = models[g].newCache();
        await models[g].forward(c, tokens(n, b), 1);
        caches[g].push(c);
      }
    }
    const times: Record<Graph, number[]> = { exported: [], inplace: [] };
    for (let r = 0; r < batchReps; r++) {
      for (const g of order(r)) {
        const t = performance.now();
        await models[g].forwardBatch(caches[g], lengths.map(() => [5]));
        times[g].push(performance.now() - t);
        for (const [b, c] of caches[g].entries()) await c.crop(lengths[b]!);
      }
    }
    const row: Record<string, number> = { sequences: B };
    for (const g of GRAPHS) {
      for (const c of caches[g]) c.release();
      row[`${g}_ms_median`] = quantile(times[g], 50);
      row[`${g}_tokens_per_s`] = (B / quantile(times[g], 50)) * 1000;
    }
    batches.push(row);
    process.stdout.write(`${String(B).padStart(5)}  ${row.exported_ms_median!.toFixed(1).padStart(6)} (${row.exported_tokens_per_s!.toFixed(0).padStart(4)}/s)     ${row.inplace_ms_median!.toFixed(1).padStart(6)} (${row.inplace_tokens_per_s!.toFixed(0).padStart(4)}/s)\n`);
  }
  for (const m of Object.values(models)) await m.release();
  if (values.json) {
    writeFileSync(values.json, `${JSON.stringify({ machine: machineInfo(), settings: { fixture: FIXTURE, reps: REPS, threads: THREADS }, passes, batches }, null, 2)}\n`);
    process.stderr.write(`wrote ${values.json}\n`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
