/**
 * Today's Llama-family models rebuilt in place: Qwen3 (q/k RMSNorm before the rotary embeddings)
 * and Llama 3.x (rope_scaling type llama3), each on a fixture with the family's real config
 * shapes (Qwen3-0.6B's and Llama-3.2-1B's widths, heads, KV heads, head size, MLP, rope_theta,
 * rms_norm_eps, tied embeddings; one block and a 4,096-token vocabulary, so that the fixture is
 * written and run in seconds), whose in-place logits equal its exported graph's over the passes
 * speculation makes, and which would differ without the family's feature. The real
 * vocabularies and tokenizers are covered by engine-real-vocab.test.ts and cli-models-synth.test.ts.
 * Also Qwen2.5's shape with q/k/v biases and an untied lm_head, as the synthetic pairs write it.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { LLAMA_PRESETS, writeLlamaModelDir } from '../../src/bench/llama-pair.js';
import { DecoderModel } from '../../src/engine/model.js';
import { readModelDir } from '../../src/engine/model-dir.js';
import { fixtureTokenizer, writeFixtureModelDir } from '../../src/testing/decoder-fixture.js';
import { readModelFile } from '../../src/onnx/graph-builder.js';
import { buildLlamaGraph } from '../../src/onnx/llama-graph.js';
import { randomLlamaPair, type LlamaShape } from '../../src/synthetic/llama-random.js';
import { NotLlamaError, readLlamaWeights, type LlamaWeights } from '../../src/onnx/llama-weights.js';
import { ropeInverseFrequencies } from '../../src/onnx/rope.js';
import { maxAbsDiff, speculationPasses } from '../support/tensors.js';

const root = mkdtempSync(join(tmpdir(), 'specd-families-'));
process.env.SPECD_CACHE_DIR = join(root, 'cache');
after(() => rmSync(root, { recursive: true, force: true }));

const VOCAB = 4096;
const tokenizerDir = join(root, 'tokenizer');
mkdirSync(tokenizerDir);
const { tokenizerJson, tokenizerConfig } = fixtureTokenizer(48);
writeFileSync(join(tokenizerDir, 'tokenizer.json'), JSON.stringify(tokenizerJson));
writeFileSync(join(tokenizerDir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfig));

/** A one-block model of `shape` (vocabulary reduced) in `dir`; its weights. */
function writeFamilyFixture(dir: string, shape: LlamaShape): LlamaWeights {
  const reduced = { ...shape, vocab: VOCAB, layers: 1 };
  const { target } = randomLlamaPair(reduced, { draftLayers: 1, seed: 7 });
  writeLlamaModelDir(dir, target, { shape: reduced, name: `fixture-${shape.modelType}`, tokenizerDir, generationConfig: { eos_token_id: 2 }, bosTokenId: 0, eosTokenId: 2 });
  return target;
}

const prompt = Array.from({ length: 50 }, (_, i) => 4 + ((i * 37) % (VOCAB - 4)));

async function passes(dir: string, options: { graph: 'exported' | 'inplace' } | { model: Uint8Array }): Promise<Float32Array[]> {
  const model = await DecoderModel.load(dir, { threads: 2, ...options });
  try {
    assert.equal(model.kvInPlace, !('graph' in options && options.graph === 'exported'));
    return await speculationPasses(model, prompt);
  } finally {
    await model.release();
  }
}

const TOLERANCE = 1e-3;

describe('Qwen3 and Llama 3.x rebuilt in place', () => {
  test('llama3 rope scaling: high frequencies kept, low ones divided by the factor, the band between blended', () => {
    const s = LLAMA_PRESETS['llama-3.2-1b']!.shape.ropeScaling!;
    const plain = ropeInverseFrequencies(500000, 64);
    const scaled = ropeInverseFrequencies(500000, 64, s);
    let [high, low, mid] = [0, 0, 0];
    plain.forEach((f, j) => {
      const wavelen = (2 * Math.PI) / f;
      if (wavelen < s.originalMaxPositions / s.highFreqFactor) (high++, assert.equal(scaled[j], f));
      else if (wavelen > s.originalMaxPositions / s.lowFreqFactor) (low++, assert.equal(scaled[j], Math.fround(f / s.factor)));
      else (mid++, assert.ok(scaled[j]! < f && scaled[j]! > f / s.factor, `j ${j}`));
    });
    assert.ok(high > 0 && low > 0 && mid > 0, `${high} high, ${mid} middle, ${low} low frequencies`);
  });

  test("Qwen3-0.6B's shape (q/k norms, head_dim 128 on a 1,024 width): in-place logits equal the exported graph's", async () => {
    const dir = join(root, 'qwen3');
    const weights = writeFamilyFixture(dir, LLAMA_PRESETS['qwen3-0.6b']!.shape);
    const config = readModelDir(dir).config;
    const read = readLlamaWeights(readModelFile(join(dir, 'onnx', 'model.onnx')), config);
    assert.deepEqual(read.blocks[0]!.qNorm, weights.blocks[0]!.qNorm);
    assert.deepEqual(read.blocks[0]!.kNorm, weights.blocks[0]!.kNorm);
    const ref = await passes(dir, { graph: 'exported' });
    const got = await passes(dir, { graph: 'inplace' });
    got.forEach((g, i) => assert.ok(maxAbsDiff(g, ref[i]!) < TOLERANCE, `pass ${i}: ${maxAbsDiff(g, ref[i]!)}`));
    // Without the key norm the logits differ: the test sees it.
    delete read.blocks[0]!.kNorm;
    delete read.blocks[0]!.qNorm;
    const unnormed = await passes(dir, { model: buildLlamaGraph(read, { maxPositions: 4096 }).toBytes() });
    assert.ok(maxAbsDiff(unnormed[0]!, ref[0]!) > 100 * TOLERANCE, `without q/k norms: ${maxAbsDiff(unnormed[0]!, ref[0]!)}`);
  });

  test("Llama-3.2-1B's shape (rope_scaling llama3, 32 heads on 8): in-place logits equal the exported graph's", async () => {
    const dir = join(root, 'llama32');
    writeFamilyFixture(dir, LLAMA_PRESETS['llama-3.2-1b']!.shape);
    const config = readModelDir(dir).config;
    assert.deepEqual(config.ropeScaling, LLAMA_PRESETS['llama-3.2-1b']!.shape.ropeScaling);
    assert.equal(config.ropeVariant, undefined);
    const ref = await passes(dir, { graph: 'exported' });
    const got = await passes(dir, { graph: 'inplace' });
    got.forEach((g, i) => assert.ok(maxAbsDiff(g, ref[i]!) < TOLERANCE, `pass ${i}: ${maxAbsDiff(g, ref[i]!)}`));
    const read = readLlamaWeights(readModelFile(join(dir, 'onnx', 'model.onnx')), config);
    delete read.ropeScaling;
    const unscaled = await passes(dir, { model: buildLlamaGraph(read, { maxPositions: 4096 }).toBytes() });
    assert.ok(maxAbsDiff(unscaled[0]!, ref[0]!) > 10 * TOLERANCE, `without the scaling: ${maxAbsDiff(unscaled[0]!, ref[0]!)}`);
  });

  test("Qwen2.5-0.5B's shape (q/k/v biases, 14 heads on 2) with an untied lm_head: in-place logits equal the exported graph's", async () => {
    const dir = join(root, 'qwen2');
    const weights = writeFamilyFixture(dir, { ...LLAMA_PRESETS['qwen2.5-0.5b']!.shape, tiedEmbeddings: false });
    const read = readLlamaWeights(readModelFile(join(dir, 'onnx', 'model.onnx')), readModelDir(dir).config);
    assert.deepEqual(read.lmHead, weights.lmHead);
    assert.deepEqual(read.blocks[0]!.k.bias, weights.blocks[0]!.k.bias);
    const ref = await passes(dir, { graph: 'exported' });
    const got = await passes(dir, { graph: 'inplace' });
    got.forEach((g, i) => assert.ok(maxAbsDiff(g, ref[i]!) < TOLERANCE, `pass ${i}: ${maxAbsDiff(g, ref[i]!)}`));
  });

  test('what does not fit is refused with the reason', async () => {
    // A model_type qwen3 whose graph has no q/k norms.
    const dir = join(root, 'not-qwen3');
    writeFixtureModelDir(dir, { style: 'llama', seed: 3 });
    const configPath = join(dir, 'config.json');
    const config = JSON.parse(readFileSync(configPath, 'utf8')) as Record<string, unknown>;
    writeFileSync(configPath, JSON.stringify({ ...config, model_type: 'qwen3' }));
    assert.throws(() => readLlamaWeights(readModelFile(join(dir, 'onnx', 'model.onnx')), readModelDir(dir).config), (err: Error) => err instanceof NotLlamaError && /RMSNorm 1 .* has a gain of width 32, expected 8 \(a qwen3 block: input norm, q and k norms/.test(err.message));
    await assert.rejects(DecoderModel.load(dir, { threads: 1, graph: 'inplace' }), /--graph inplace cannot rebuild this graph: RMSNorm 1 .* has a gain of width 32, expected 8/);
    // A llama3 rope_scaling without its fields is a config error that names the field.
    writeFileSync(configPath, JSON.stringify({ ...config, rope_scaling: { rope_type: 'llama3', factor: 8 } }));
    assert.throws(() => readModelDir(dir), /rope_scaling.low_freq_factor must be a positive number, got undefined/);
  });
});

describe('Qwen3 and Llama 3.x quantized, in place', () => {
  for (const preset of ['qwen3-0.6b', 'llama-3.2-1b']) {
    test(`${preset}'s shape at q8 and q4 (int8 compute: a verification pass's rows bitwise its one-token passes), close to float32`, async () => {
      const dir = join(root, `quantized-${preset}`);
      writeFamilyFixture(dir, LLAMA_PRESETS[preset]!.shape);
      const fed = [11, 12, 13, 14, 15, 16];
      const logits = async (dtype: string) => {
        const m = await DecoderModel.load(dir, { dtype, threads: 2 });
        try {
          assert.ok(m.kvInPlace, `${dtype} in place`);
          const a = m.newCache();
          await m.forward(a, prompt, 1);
          const together = await m.forward(a, fed);
          const b = m.newCache();
          await m.forward(b, prompt, 1);
          const alone: number[] = [];
          for (const t of fed) alone.push(...(await m.forward(b, [t], 1)));
          return { together, alone };
        } finally {
          await m.release();
        }
      };
      const fp32 = (await logits('fp32')).together;
      const largest = maxAbsDiff(fp32, new Float32Array(fp32.length));
      for (const dtype of ['q8', 'q4']) {
        const { together, alone } = await logits(dtype);
        assert.equal(maxAbsDiff(together, alone), 0, `${dtype}: a verification row differs from its one-token pass`);
        const apart = maxAbsDiff(together, fp32) / largest;
        assert.ok(apart > 0 && apart < (dtype === 'q8' ? 0.05 : 0.5), `${dtype}: ${apart} of the largest logit from float32`);
      }
    });
  }
});
