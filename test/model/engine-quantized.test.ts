/**
 * Quantized weights (onnx/matmul-nbits.ts, onnx/linear-emitter.ts, engine/quantized-weights.ts):
 * the MatMulNBits layout against ONNX Runtime's kernel, the kernel setting that keeps a row's
 * result independent of the other rows of its pass, the cache of quantized copies, exported
 * quantized graphs (MatMulNBits with zero points and large blocks; quantize_dynamic's
 * MatMulInteger) read into the in-place rebuild, and exact greedy speculation on quantized pairs
 * (q8 target with a q4 draft, q4 with q4), alone and batched.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { loadPrompts } from '../../src/bench/datasets.js';
import { DecoderModel } from '../../src/engine/model.js';
import { readModelDir } from '../../src/engine/model-dir.js';
import { ModelPair } from '../../src/pair/model-pair.js';
import { quantizeModelFile } from '../../src/engine/quantized-weights.js';
import { GREEDY } from '../../src/engine/sampling.js';
import { BatchScheduler } from '../../src/engine/scheduler.js';
import { policyLabel, type PolicySpec } from '../../src/engine/stop-policy.js';
import { writeFixtureModelDir } from '../../src/testing/decoder-fixture.js';
import { GraphBuilder, onnx, readModel, readModelFile } from '../../src/onnx/graph-builder.js';
import { decoderGraphView, linears } from '../../src/onnx/graph-reading.js';
import { joinColumns, QUANT_ACCURACY_LEVEL, QUANT_BLOCK_SIZE, splitBlocks } from '../../src/onnx/linear-emitter.js';
import { dequantizeLinear, matMulNBits, quantizeLinear, type AccuracyLevel, type QuantBits } from '../../src/onnx/matmul-nbits.js';
import { quantizeDecoderModel } from '../../src/onnx/quantize-model.js';
import { quantizedFormOf } from '../../src/onnx/quantized-reading.js';
import { BUNDLED_TARGET, PACKAGE_ROOT } from '../../src/paths.js';
import { quantizeDynamic } from '../support/quantize-dynamic.js';
import { drive } from '../support/rounds.js';
import { maxAbsDiff } from '../support/tensors.js';

const root = mkdtempSync(join(tmpdir(), 'specd-quant-'));
process.env.SPECD_CACHE_DIR = join(root, 'cache');
after(() => rmSync(root, { recursive: true, force: true }));

const maxAbs = (x: ArrayLike<number>) => maxAbsDiff(x, new Float32Array(x.length));

/** Deterministic values in [-amp, amp). */
function values(n: number, seed: number, amp = 0.05): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return ((s / 2 ** 32) * 2 - 1) * amp;
  });
}

async function runNBits(k: number, n: number, rows: Float32Array, m: number, bits: QuantBits, blockSize: number, accuracy: AccuracyLevel, weight: Float32Array, symmetric = true) {
  const g = new GraphBuilder({ opset: 17 });
  g.input('a', 'float32', ['m', k]);
  const q = quantizeLinear(weight, k, n, { bits, blockSize, symmetric });
  g.output(matMulNBits(g, 'a', 'w', q, accuracy), 'y', 'float32', ['m', n]);
  const session = await ort.InferenceSession.create(g.toBytes(), { intraOpNumThreads: 2 });
  try {
    return { y: (await session.run({ a: new ort.Tensor('float32', rows, [m, k]) })).y!.data as Float32Array, q };
  } finally {
    await session.release();
  }
}

describe('MatMulNBits weights', () => {
  test('quantization error is at most half a step, and ONNX Runtime multiplies by exactly the dequantized weight', async () => {
    const [k, n] = [96, 40];
    const w = values(k * n, 3);
    const a = values(2 * k, 4, 1);
    for (const bits of [8, 4] as const) {
      for (const symmetric of [true, false]) {
        const { y, q } = await runNBits(k, n, a, 2, bits, 32, 0, w, symmetric);
        const dq = dequantizeLinear(q);
        const blocks = Math.ceil(k / 32);
        for (let r = 0; r < k; r++) {
          for (let c = 0; c < n; c++) {
            const step = q.scales[c * blocks + Math.floor(r / 32)]!;
            assert.ok(Math.abs(dq[r * n + c]! - w[r * n + c]!) <= step / 2 + 1e-7, `${bits}-bit ${symmetric ? 'symmetric' : 'zero points'}: [${r}, ${c}]`);
          }
        }
        // accuracy_level 0 computes in float32: the product with the dequantized weight, to rounding.
        const want = new Float32Array(2 * n);
        for (let i = 0; i < 2; i++) for (let c = 0; c < n; c++) for (let r = 0; r < k; r++) want[i * n + c]! += a[i * k + r]! * dq[r * n + c]!;
        assert.ok(maxAbsDiff(y, want) < 1e-5, `${bits}-bit ${symmetric ? 'symmetric' : 'zero points'}: ${maxAbsDiff(y, want)}`);
      }
    }
  });

  test('splitting blocks and joining columns keep every weight', () => {
    for (const bits of [8, 4] as const) {
      for (const symmetric of [true, false]) {
        const q = quantizeLinear(values(200 * 24, 5), 200, 24, { bits, blockSize: 128, symmetric });
        assert.deepEqual(dequantizeLinear(splitBlocks(q, 32)), dequantizeLinear(q), `${bits}-bit split 128 -> 32`);
        assert.equal(splitBlocks(q, 32).scales.length, 24 * Math.ceil(200 / 32));
      }
    }
    // Parts read from a quantized export (registered by the reader) join into one quantized weight.
    const parts = [
      quantizeLinear(values(64 * 8, 6), 64, 8, { bits: 4, blockSize: 64, symmetric: false }),
      quantizeLinear(values(64 * 16, 7), 64, 16, { bits: 4, blockSize: 32, symmetric: true }),
    ];
    const model = quantizedLinearsModel(parts);
    const [wa, wb] = readLinearsOf(model);
    const joined = joinColumns([{ weight: wa!, n: 8 }, { weight: wb!, n: 16 }], 64);
    assert.ok(joined.quantized, 'the joined weight keeps a quantized form');
    assert.equal(joined.quantized.blockSize, 32);
    assert.deepEqual(dequantizeLinear(joined.quantized), joined.weight);
    assert.equal(joinColumns([{ weight: values(64 * 8, 1), n: 8 }, { weight: wb!, n: 16 }], 64).quantized, undefined, 'a float part joins as floats');
  });

  test('rows of a pass against rows alone: bitwise at accuracy_level 4, float rounding at the chosen level', async () => {
    for (const [k, n] of [
      [384, 1152],
      [1536, 384],
    ] as const) {
      const w = values(k * n, 11);
      for (const bits of [8, 4] as const) {
        for (const accuracy of [4, QUANT_ACCURACY_LEVEL] as const) {
          let worst = 0;
          for (const m of [2, 3, 5, 8, 16]) {
            const rows = values(m * k, 20 + m, 2);
            const { y: together } = await runNBits(k, n, rows, m, bits, QUANT_BLOCK_SIZE, accuracy, w);
            for (let r = 0; r < m; r++) {
              const { y: alone } = await runNBits(k, n, rows.slice(r * k, (r + 1) * k), 1, bits, QUANT_BLOCK_SIZE, accuracy, w);
              worst = Math.max(worst, maxAbsDiff(together.subarray(r * n, (r + 1) * n), alone));
            }
          }
          if (accuracy === 4) assert.equal(worst, 0, `${bits}-bit [${k}, ${n}] at accuracy_level 4`);
          else assert.ok(worst < 1e-5, `${bits}-bit [${k}, ${n}] at accuracy_level ${accuracy}: ${worst}`);
        }
      }
    }
  });

  test('a verification pass of the quantized bundled target: q8 and q4 (int8 compute, row-independent attention) rows bitwise its one-token passes', async () => {
    const prompt = Array.from({ length: 40 }, (_, i) => 60 + ((i * 7) % 50));
    const fed = [72, 101, 108, 108, 111];
    const gap = async (dtype: string) => {
      const m = await DecoderModel.load(BUNDLED_TARGET, { dtype, threads: 2 });
      try {
        const a = m.newCache();
        await m.forward(a, prompt, 1);
        const together = await m.forward(a, fed);
        const b = m.newCache();
        await m.forward(b, prompt, 1);
        const alone: number[] = [];
        for (const t of fed) alone.push(...(await m.forward(b, [t], 1)));
        return maxAbsDiff(together, alone);
      } finally {
        await m.release();
      }
    };
    assert.equal(await gap('q8'), 0, 'q8: a verification row differs from its one-token pass');
    assert.equal(await gap('q4'), 0, 'q4: a verification row differs from its one-token pass');
  });
});

/** A model of MatMulNBits nodes over one input, one output each (for reading weights back). */
function quantizedLinearsModel(parts: ReturnType<typeof quantizeLinear>[]): Uint8Array {
  const g = new GraphBuilder({ opset: 17 });
  g.input('input_ids', 'int64', [1]);
  const a = g.input('a', 'float32', ['m', parts[0]!.k]);
  parts.forEach((p, i) => g.output(matMulNBits(g, a, `w${i}`, p, 0), `present.${i}.key`, 'float32', ['m', p.n]));
  return g.toBytes();
}

function readLinearsOf(bytes: Uint8Array): Float32Array[] {
  return linears(decoderGraphView(readModel(bytes))).map((l) => l.weight.data);
}

describe('quantized weight files', () => {
  test('--dtype q8 / q4 quantize model.onnx once into the cache, keyed by its sha256; the copy runs exported and in place', async () => {
    const dir = join(root, 'gpt2');
    writeFixtureModelDir(dir, { style: 'gpt2', layers: 2, hidden: 64, heads: 4, seed: 3 });
    const q4 = readModelDir(dir, 'q4').onnxPath;
    assert.ok(q4.startsWith(process.env.SPECD_CACHE_DIR!), q4);
    const written = statSync(q4).mtimeMs;
    assert.equal(readModelDir(dir, 'q4').onnxPath, q4, 'the same copy again');
    assert.equal(statSync(q4).mtimeMs, written, 'not written again');
    assert.notEqual(readModelDir(dir, 'q8').onnxPath, q4);
    const nodes = readModelFile(q4).graph!.node!;
    assert.equal(nodes.filter((n) => n.opType === 'MatMulNBits').length, 4 * 2 + 1, 'every block linear and the lm_head');
    const constants = new Set(readModelFile(q4).graph!.initializer!.map((t) => t.name));
    assert.equal(nodes.filter((n) => n.opType === 'MatMul' && constants.has(n.input![1]!)).length, 0, 'no float MatMul with a constant weight left');

    const prompt = [1, 5, 9, 13, 2, 7];
    const logits = async (dtype: string, graph: 'exported' | 'inplace') => {
      const m = await DecoderModel.load(dir, { dtype, graph, threads: 1 });
      try {
        return await m.forward(m.newCache(), prompt);
      } finally {
        await m.release();
      }
    };
    const fp32 = await logits('fp32', 'inplace');
    for (const dtype of ['q8', 'q4']) {
      const inplace = await logits(dtype, 'inplace');
      const exported = await logits(dtype, 'exported');
      // The same weights. q8: in place the activations are quantized to int8 per block (accuracy_level 4), exported
      // they stay float32 (accuracy_level 1); q4: float32 compute on both paths, differences are float rounding.
      const apart = maxAbsDiff(inplace.subarray(-exported.length), exported) / maxAbs(exported);
      if (dtype === 'q8') assert.ok(apart > 0 && apart < 0.03, `q8: in place against exported ${apart} of the largest logit`);
      else assert.ok(apart < 1e-5, `q4: in place against exported ${apart} of the largest logit`);
      assert.ok(maxAbsDiff(inplace, fp32) > 0, `${dtype}: the weights are quantized`);
      const relative = maxAbsDiff(inplace, fp32) / maxAbs(fp32);
      // Random fixture weights (uniform, no outliers) lose much at 4 bits; q8 must be far closer.
      assert.ok(relative < (dtype === 'q8' ? 0.03 : 0.5), `${dtype}: close to fp32 (${relative} of the largest logit)`);
    }
    // Changing model.onnx changes the key: a new copy, never the stale one.
    writeFixtureModelDir(dir, { style: 'gpt2', layers: 2, hidden: 64, heads: 4, seed: 4 });
    assert.notEqual(readModelDir(dir, 'q4').onnxPath, q4);
  });

  test('a variant file specd wrote is refused once model.onnx changed; a bad --dtype is named', () => {
    const dir = join(root, 'stale');
    writeFixtureModelDir(dir, { style: 'llama', seed: 5 });
    const { bytes } = quantizeModelFile(join(dir, 'onnx', 'model.onnx'), 'q4');
    writeFileSync(join(dir, 'onnx', 'model_q4.onnx'), bytes);
    assert.equal(readModelDir(dir, 'q4').onnxPath, join(dir, 'onnx', 'model_q4.onnx'));
    writeFixtureModelDir(dir, { style: 'llama', seed: 6 });
    assert.throws(() => readModelDir(dir, 'q4'), /model_q4\.onnx was quantized from another .*model\.onnx.*specd models quantize/);
    assert.throws(() => readModelDir(dir, 'q3'), /unknown dtype "q3"/);
  });

  test('specd models quantize writes the variant --dtype then loads, or a new directory; a bad --dtype is one line and exit 1', () => {
    const dir = join(root, 'cli');
    writeFixtureModelDir(dir, { style: 'gpt2', seed: 12 });
    const specd = (...args: string[]) => spawnSync(process.execPath, [join(PACKAGE_ROOT, 'bin', 'specd.js'), 'models', 'quantize', ...args], { encoding: 'utf8' });
    const r = specd(dir, '--dtype', 'q4');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(readModelDir(dir, 'q4').onnxPath, join(dir, 'onnx', 'model_q4.onnx'));
    const out = join(root, 'cli-q8');
    assert.equal(specd(dir, '--dtype', 'q8', '--out', out).status, 0);
    const nodes = readModelFile(readModelDir(out).onnxPath).graph!.node!;
    assert.ok(nodes.some((n) => n.opType === 'MatMulNBits' && n.attribute!.some((a) => a.name === 'bits' && Number(a.i) === 8)));
    const bad = specd(dir, '--dtype', 'q3');
    assert.equal(bad.status, 1);
    assert.match(bad.stderr.trim(), /^error: option '--dtype <dtype>' argument 'q3' is invalid\. expected q8 or q4$/);
  });

  const exports: { label: string; file: string; dtype: string; write: (model: ReturnType<typeof readModelFile>) => void; bits: number }[] = [
    {
      label: 'MatMulNBits q4 with zero points in blocks of 128 (as onnx-community exports)',
      file: 'model_q4.onnx',
      dtype: 'q4',
      bits: 4,
      write: (m) => void quantizeDecoderModel(m, { bits: 4, blockSize: 128, symmetric: false, accuracyLevel: 0 }),
    },
    { label: "quantize_dynamic's MatMulInteger, int8 per tensor", file: 'model_int8.onnx', dtype: 'int8', bits: 8, write: (m) => void quantizeDynamic(m, 'int8-per-tensor') },
    { label: "quantize_dynamic's MatMulInteger, uint8 per column with zero points", file: 'model_quantized.onnx', dtype: 'q8', bits: 8, write: (m) => void quantizeDynamic(m, 'uint8-per-column') },
  ];
  for (const style of ['gpt2', 'llama'] as const) {
    for (const e of exports) {
      test(`${style} export, ${e.label}: rebuilt in place with its own weights`, async () => {
        const dir = join(root, `${style}-${e.dtype}`);
        writeFixtureModelDir(dir, { style, layers: 2, hidden: 64, heads: 4, seed: 9 });
        const model = readModelFile(join(dir, 'onnx', 'model.onnx'));
        e.write(model);
        writeFileSync(join(dir, 'onnx', e.file), onnx.ModelProto.encode(model).finish());

        const load = (graph: 'exported' | 'inplace') => DecoderModel.load(dir, { dtype: e.dtype, graph, threads: 1 });
        const [exported, inplace] = [await load('exported'), await load('inplace')];
        try {
          assert.ok(inplace.kvInPlace, 'rebuilt in place');
          const prompt = [1, 6, 3, 11, 8];
          const a = await exported.forward(exported.newCache(), prompt);
          const b = await inplace.forward(inplace.newCache(), prompt);
          // 4 bits: float32 compute on both sides, the same function. 8 bits (MatMulInteger, which quantizes the
          // activations per tensor): the rebuild quantizes them per block of 32 (accuracy_level 4): close, not equal.
          const relative = maxAbsDiff(a.subarray(-b.length), b) / maxAbs(b);
          assert.ok(relative < (e.dtype === 'q4' ? 1e-5 : 0.05), `logits differ by ${relative} of the largest logit`);
        } finally {
          await exported.release();
          await inplace.release();
        }
        // The weights themselves are taken over exactly: read back, they are the export's dequantized ones.
        const read = linears(decoderGraphView(readModelFile(join(dir, 'onnx', e.file))));
        assert.ok(read.length > 0 && read.every((l) => l.quantized?.bits === e.bits && quantizedFormOf(l.weight.data) === l.quantized), 'every linear read with its quantized form');
      });
    }
  }
});

describe('greedy speculation on quantized pairs equals the quantized target alone', () => {
  const SPECDEC: PolicySpec = { policy: 'specdec++', kMin: 1, kMax: 12 };
  const POLICIES: PolicySpec[] = [{ policy: 'fixed', k: 1 }, { policy: 'fixed', k: 3 }, { policy: 'fixed', k: 6 }, { policy: 'confidence', pMin: 0.6, kMax: 16 }, SPECDEC];
  const MAX_TOKENS = 40;
  for (const [target, draft] of [
    ['q8', 'q4'],
    ['q4', 'q4'],
  ] as const) {
    describe(`bundled pair, ${target} target, ${draft} draft`, () => {
      let pair: ModelPair;
      let prompts: number[][];
      before(async () => {
        pair = await ModelPair.load({ dtype: target, draftDtype: draft, threads: 2, draftThreads: 1 });
        prompts = loadPrompts('gsm8k', 3).map((item) => pair.tokenizer.encodeChat(item.messages));
      });
      after(() => pair?.release());

      test('every policy, one sequence at a time', async () => {
        assert.ok(pair.target.kvInPlace && pair.head, 'in place, with the acceptance head');
        let accepted = 0;
        for (const [i, prompt] of prompts.entries()) {
          const ref = await drive(pair.decoder, prompt, { maxTokens: MAX_TOKENS, sampling: GREEDY, eosTokenIds: [], policy: { policy: 'none' } });
          for (const spec of POLICIES) {
            const run = await drive(pair.decoder, prompt, { maxTokens: MAX_TOKENS, sampling: GREEDY, eosTokenIds: [], policy: spec });
            assert.deepEqual(run.tokens, ref.tokens, `prompt ${i}, ${policyLabel(spec)}`);
            accepted += run.stats.accepted_tokens;
          }
        }
        assert.ok(accepted > 0, 'drafts were accepted');
      });

      test('sequences batched in one pass give what each gives alone', async () => {
        const opts = { maxTokens: MAX_TOKENS, sampling: GREEDY, eosTokenIds: [], policy: SPECDEC };
        const alone: number[][] = [];
        for (const p of prompts) alone.push(await pair.decoder.start(p, opts).run());
        const ref: number[][] = [];
        for (const p of prompts) ref.push(await pair.decoder.start(p, { ...opts, policy: { policy: 'none' } }).run());
        const scheduler = new BatchScheduler({ maxBatchTokens: 512 });
        const batched = await Promise.all(
          prompts.map(async (p) => {
            const g = pair.decoder.start(p, opts);
            while (!g.done) await scheduler.step(g);
            return [...g.tokenIds];
          }),
        );
        assert.deepEqual(batched, alone);
        assert.deepEqual(alone, ref);
      });
    });
  }
});
