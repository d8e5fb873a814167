/**
 * The GGUF writer (src/gguf): every metadata type and float32 tensors round-trip through the
 * reader; the bundled pair written as GGUF carries llama.cpp's gpt2 names, dims and tokenizer,
 * its matrices transposed from the ONNX weights; Llama and Qwen2 fixtures likewise; Qwen3 (q/k
 * norms) and Llama 3.2 (`llama3` rope scaling as rope_freqs) pairs from `specd models synth`
 * with their real tokenizers; and, where llama.cpp's llama-server runs (LLAMA_SERVER: the command,
 * or llama-server on PATH), it loads each file and decodes greedily the same tokens as specd's
 * target alone, both with float32 KV caches, up to the first special token (and, without
 * rope_freqs, not the same: the scaling reaches the test's positions).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ModelPair } from '../../src/pair/model-pair.js';
import { GREEDY } from '../../src/engine/sampling.js';
import { GgmlType, type GgufFile, readGguf, writeGguf } from '../../src/gguf/gguf-file.js';
import { modelToGguf, NotConvertibleError } from '../../src/gguf/model-to-gguf.js';
import { writeFixtureModelDir } from '../../src/testing/decoder-fixture.js';
import { readGpt2Weights } from '../../src/onnx/gpt2-weights.js';
import { readLlamaWeights } from '../../src/onnx/llama-weights.js';
import { readModelFile } from '../../src/onnx/graph-builder.js';
import { BUNDLED_DRAFT, BUNDLED_TARGET, PACKAGE_ROOT } from '../../src/paths.js';
import { readModelDir } from '../../src/engine/model-dir.js';
import { LLAMA_SERVER, LlamaServer, requireTool } from '../../src/bench/llama-server.js';
import { ropeFrequencyFactors } from '../../src/gguf/model-to-gguf.js';
import { ropeInverseFrequencies } from '../../src/onnx/rope.js';

const root = mkdtempSync(join(tmpdir(), 'specd-gguf-'));
after(() => rmSync(root, { recursive: true, force: true }));

const cli = join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js');
/** A `specd models synth` pair of a preset's real shape and tokenizer, reduced; its target's directory. */
function synthTarget(preset: string): string {
  const out = join(root, preset);
  const run = spawnSync(process.execPath, [cli, 'models', 'synth', '--out', out, '--preset', preset, '--layers', '2', '--draft-layers', '1', '--width', '64', '--heads', '4', '--kv-heads', '2', '--head-dim', '16', '--intermediate', '128', '--seed', '5'], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  return join(out, 'target');
}
let qwen3Dir: string | undefined;
let llama3Dir: string | undefined;
const qwen3 = () => (qwen3Dir ??= synthTarget('qwen3-0.6b'));
/**
 * Llama 3.2's shape and rope_scaling with original_max_position_embeddings 32 in place of 8192,
 * so that the scaling changes every rotary frequency but the fastest within a short prompt.
 */
const llama3 = () => {
  if (llama3Dir) return llama3Dir;
  const dir = synthTarget('llama-3.2-1b');
  const configPath = join(dir, 'config.json');
  const config = JSON.parse(readFileSync(configPath, 'utf8')) as { rope_scaling: Record<string, unknown> };
  config.rope_scaling.original_max_position_embeddings = 32;
  writeFileSync(configPath, JSON.stringify(config));
  return (llama3Dir = dir);
};

describe('GGUF files', () => {
  test('every metadata type and float32 tensors round-trip; a bad file is named', () => {
    const file: GgufFile = {
      metadata: new Map([
        ['a.u8', { type: 'u8', value: 250 }],
        ['a.i8', { type: 'i8', value: -5 }],
        ['a.u16', { type: 'u16', value: 65000 }],
        ['a.i16', { type: 'i16', value: -300 }],
        ['a.u32', { type: 'u32', value: 4_000_000_000 }],
        ['a.i32', { type: 'i32', value: -7 }],
        ['a.f32', { type: 'f32', value: 0.5 }],
        ['a.f64', { type: 'f64', value: Math.PI }],
        ['a.u64', { type: 'u64', value: 2 ** 40 }],
        ['a.i64', { type: 'i64', value: -(2 ** 40) }],
        ['a.bool', { type: 'bool', value: true }],
        ['a.string', { type: 'string', value: 'héllo <|im_end|>' }],
        ['a.strings', { type: 'array', of: 'string', value: ['Ā', 'ġ', ''] }],
        ['a.ints', { type: 'array', of: 'i32', value: [1, -3, 3] }],
        ['general.alignment', { type: 'u32', value: 64 }],
      ]),
      tensors: [
        { name: 'm', dims: [3, 2], type: GgmlType.F32, data: Float32Array.of(1, 2, 3, 4, 5, 6) },
        { name: 'v', dims: [5], type: GgmlType.F32, data: Float32Array.of(-1, 0.25, 7, 8, 9) },
      ],
    };
    const path = join(root, 'all.gguf');
    writeGguf(path, file);
    const back = readGguf(path);
    assert.deepEqual([...back.metadata], [...file.metadata]);
    assert.deepEqual(back.tensors, file.tensors);
    assert.throws(() => writeGguf(join(root, 'bad.gguf'), { metadata: new Map(), tensors: [{ name: 'x', dims: [4], type: GgmlType.F32, data: new Float32Array(3) }] }), /tensor x: 3 values for dims \[4\]/);
    assert.throws(() => readGguf(join(BUNDLED_TARGET, 'config.json')), /not a GGUF file/);
  });

  test("the bundled draft as GGUF: llama.cpp's gpt2 metadata, tokenizer and tensors, matrices transposed", () => {
    const g = modelToGguf(BUNDLED_DRAFT);
    const path = join(root, 'draft.gguf');
    writeGguf(path, g);
    const back = readGguf(path);
    const meta = (k: string) => back.metadata.get(k)?.value;
    assert.equal(meta('general.architecture'), 'gpt2');
    assert.equal(meta('gpt2.block_count'), 2);
    assert.equal(meta('gpt2.embedding_length'), 128);
    assert.equal(meta('gpt2.attention.head_count'), 4);
    assert.equal(meta('tokenizer.ggml.model'), 'gpt2');
    assert.equal(meta('tokenizer.ggml.pre'), 'default', "no Split regex: llama.cpp's default (GPT-2) rules");
    const tokens = meta('tokenizer.ggml.tokens') as unknown as string[];
    const types = meta('tokenizer.ggml.token_type') as unknown as number[];
    assert.equal(tokens.length, 259);
    assert.deepEqual([tokens[0], tokens[32], tokens[258]], ['Ā', 'Ġ', '<|im_end|>']);
    assert.deepEqual(types.slice(255), [1, 3, 3, 3], 'special tokens are control tokens');
    assert.equal(meta('tokenizer.ggml.eos_token_id'), 258);
    assert.match(String(meta('tokenizer.chat_template')), /<\|im_start\|>/);
    assert.deepEqual(
      back.tensors.slice(0, 8).map((t) => `${t.name}[${t.dims.join(',')}]`),
      ['token_embd.weight[128,259]', 'position_embd.weight[128,1024]', 'blk.0.attn_norm.weight[128]', 'blk.0.attn_norm.bias[128]', 'blk.0.attn_qkv.weight[128,384]', 'blk.0.attn_qkv.bias[384]', 'blk.0.attn_output.weight[128,128]', 'blk.0.attn_output.bias[128]'],
    );
    assert.ok(!back.tensors.some((t) => t.name === 'output.weight'), 'the tied lm_head is the token embedding');
    const w = readGpt2Weights(readModelFile(readModelDir(BUNDLED_DRAFT).onnxPath), 4);
    const qkv = back.tensors.find((t) => t.name === 'blk.1.attn_qkv.weight')!.data as Float32Array;
    // GGUF row o (output o) holds column o of the ONNX [in, out] weight.
    for (const [i, o] of [
      [0, 0],
      [5, 300],
      [127, 383],
    ] as const) assert.equal(qkv[o * 128 + i], w.blocks[1]!.qkv.weight[i * 384 + o]);
  });

  test('Llama-family fixtures: llama / qwen2 metadata and tensors; q and k rows interleaved for llama only; other families refused', () => {
    for (const qkvBias of [false, true]) {
      const dir = join(root, qkvBias ? 'qwen2' : 'llama');
      writeFixtureModelDir(dir, { style: 'llama', layers: 2, hidden: 64, heads: 4, kvHeads: 2, seed: 4, vocabSize: 48, qkvBias });
      const g = modelToGguf(dir);
      const arch = qkvBias ? 'qwen2' : 'llama';
      assert.equal(g.metadata.get('general.architecture')?.value, arch);
      assert.equal(g.metadata.get(`${arch}.attention.head_count_kv`)?.value, 2);
      const names = g.tensors.map((t) => t.name);
      assert.deepEqual(names.filter((n) => n.startsWith('blk.0.')), [
        'blk.0.attn_norm.weight', 'blk.0.attn_q.weight', ...(qkvBias ? ['blk.0.attn_q.bias'] : []), 'blk.0.attn_k.weight', ...(qkvBias ? ['blk.0.attn_k.bias'] : []),
        'blk.0.attn_v.weight', ...(qkvBias ? ['blk.0.attn_v.bias'] : []), 'blk.0.attn_output.weight', 'blk.0.ffn_norm.weight', 'blk.0.ffn_gate.weight', 'blk.0.ffn_up.weight', 'blk.0.ffn_down.weight',
      ]);
      const w = readLlamaWeights(readModelFile(readModelDir(dir).onnxPath), readModelDir(dir).config);
      const q = g.tensors.find((t) => t.name === 'blk.1.attn_q.weight')!.data as Float32Array; // [64 outputs, 64 inputs]
      // Output row 1 of head 0: rotate-half element 8 (head_dim 16) for llama, element 1 for qwen2.
      const from = qkvBias ? 1 : 8;
      for (const input of [0, 33, 63]) assert.equal(q[1 * 64 + input], w.blocks[1]!.q.weight[input * 64 + from]);
    }
    const other = join(root, 'phi3');
    writeFixtureModelDir(other, { style: 'llama' });
    const configPath = join(other, 'config.json');
    writeFileSync(configPath, JSON.stringify({ ...JSON.parse(readFileSync(configPath, 'utf8')), model_type: 'phi3' }));
    assert.throws(() => modelToGguf(other), (e: Error) => e instanceof NotConvertibleError && /model_type phi3; the GGUF writer handles gpt2, llama/.test(e.message));
  });

  test("Qwen3 (synth, real shape and tokenizer): qwen3 metadata, q/k norm gains per block, vocabulary padded past the tokenizer", () => {
    const dir = qwen3();
    const g = modelToGguf(dir);
    const meta = (k: string) => g.metadata.get(k)?.value;
    assert.equal(meta('general.architecture'), 'qwen3');
    assert.deepEqual([meta('qwen3.block_count'), meta('qwen3.attention.head_count'), meta('qwen3.attention.head_count_kv'), meta('qwen3.attention.key_length'), meta('qwen3.rope.dimension_count')], [2, 4, 2, 16, 16]);
    const names = g.tensors.map((t) => t.name);
    assert.deepEqual(names.filter((n) => n.startsWith('blk.1.')), [
      'blk.1.attn_norm.weight', 'blk.1.attn_q.weight', 'blk.1.attn_k.weight', 'blk.1.attn_v.weight', 'blk.1.attn_q_norm.weight', 'blk.1.attn_k_norm.weight',
      'blk.1.attn_output.weight', 'blk.1.ffn_norm.weight', 'blk.1.ffn_gate.weight', 'blk.1.ffn_up.weight', 'blk.1.ffn_down.weight',
    ]);
    assert.ok(!names.includes('rope_freqs.weight'));
    const w = readLlamaWeights(readModelFile(readModelDir(dir).onnxPath), readModelDir(dir).config);
    const tensor = (n: string) => g.tensors.find((t) => t.name === n)!;
    assert.deepEqual(tensor('blk.1.attn_q_norm.weight').dims, [16]);
    assert.deepEqual(tensor('blk.1.attn_q_norm.weight').data, w.blocks[1]!.qNorm);
    assert.deepEqual(tensor('blk.0.attn_k_norm.weight').data, w.blocks[0]!.kNorm);
    assert.notDeepEqual(w.blocks[0]!.qNorm, w.blocks[0]!.kNorm);
    // Qwen3 is rotated NeoX-style by llama.cpp: q rows keep transformers' order.
    const q = tensor('blk.0.attn_q.weight').data as Float32Array;
    for (const [out, input] of [[1, 0], [8, 63]] as const) assert.equal(q[out * 64 + input], w.blocks[0]!.q.weight[input * 64 + out]);
    const tokens = meta('tokenizer.ggml.tokens') as unknown as string[];
    const types = meta('tokenizer.ggml.token_type') as unknown as number[];
    assert.equal(tokens.length, 151936);
    assert.deepEqual([tokens[151645], types[151645]], ['<|im_end|>', 3]);
    assert.deepEqual([tokens[151669], types[151669], tokens[151935], types[151935]], ['[PAD151669]', 5, '[PAD151935]', 5]);
    assert.equal(meta('tokenizer.ggml.eos_token_id'), 151645);
    assert.equal(meta('tokenizer.ggml.pre'), 'qwen2', "Qwen2's split regex (one digit at a time)");
  });

  test("Llama 3.2 (synth): rope_scaling llama3 as rope_freqs, the divisors that turn the plain frequencies into transformers' scaled ones", () => {
    const dir = llama3();
    const g = modelToGguf(dir);
    assert.equal(g.metadata.get('general.architecture')?.value, 'llama');
    assert.equal(g.metadata.get('tokenizer.ggml.pre')?.value, 'llama-bpe', "Llama 3's split regex (digits in runs of up to 3)");
    const freqs = g.tensors.find((t) => t.name === 'rope_freqs.weight')!;
    assert.deepEqual(freqs.dims, [8]);
    const scaling = readModelDir(dir).config.ropeScaling!;
    assert.equal(scaling.originalMaxPositions, 32);
    const plain = ropeInverseFrequencies(500000, 16);
    const scaled = ropeInverseFrequencies(500000, 16, scaling);
    const divisors = freqs.data as Float32Array;
    for (let j = 0; j < 8; j++) assert.ok(Math.abs(plain[j]! / divisors[j]! - scaled[j]!) <= 1e-6 * scaled[j]!, `frequency ${j}: ${plain[j]! / divisors[j]!} against ${scaled[j]}`);
    assert.equal(divisors[0], 1, 'the fastest frequency (wavelength 2 pi < 32 / 4) is kept');
    assert.equal(divisors[7], 32, 'the slowest is divided by factor');
    // Llama 3.1's own numbers (theta 500000, head_dim 128, factor 8, original 8192): the band's edges.
    const llama31 = ropeFrequencyFactors(500000, 128, { ropeType: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 });
    llama31.forEach((d, j) => assert.ok(d >= 1 && d <= 8 && (j === 0 || d >= llama31[j - 1]!), `divisor ${j} (${d}) in [1, 8] and not below the faster ones'`));
    assert.deepEqual([llama31[0], llama31[63]], [1, 8]);
    assert.ok(llama31.some((d) => d > 1 && d < 8), 'some frequencies in the smooth band');
    assert.throws(() => {
      const other = join(root, 'qwen3-scaled');
      writeFixtureModelDir(other, { style: 'llama', layers: 1, hidden: 32, heads: 2, kvHeads: 2, seed: 1, vocabSize: 40 });
      const path = join(other, 'config.json');
      writeFileSync(path, JSON.stringify({ ...JSON.parse(readFileSync(path, 'utf8')), model_type: 'qwen2', rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 } }));
      modelToGguf(other);
    }, /rope_scaling type llama3 with model_type qwen2; llama.cpp reads rope_freqs for the llama architecture only/);
  });

  /** Text whose split differs between llama.cpp's default pre-tokenizer and Qwen2's / Llama 3's (punctuation before a newline, digit runs). */
  const TEXT = "Hello world, 12345 numbers!\n  ok. It's 3.14159 - naïve café 東京\n\n";
  const servedModels: { label: string; dir: () => string; prompt: (pair: ModelPair) => number[]; withoutRopeFreqs?: boolean; tokenizes?: boolean }[] = [
    { label: "the bundled target's GGUF", dir: () => BUNDLED_TARGET, prompt: gsm8kPrompt },
    { label: 'a Llama GQA fixture as GGUF', dir: () => join(root, 'llama'), prompt: () => [1, 5, 9, 13, 20, 7] },
    { label: 'a Qwen2 fixture (q/k/v biases) as GGUF', dir: () => join(root, 'qwen2'), prompt: () => [1, 5, 9, 13, 20, 7] },
    { label: 'a Qwen3 synth target (q/k norms, real tokenizer) as GGUF', dir: qwen3, prompt: gsm8kPrompt, tokenizes: true },
    { label: 'a Llama 3.2 synth target (llama3 rope scaling) as GGUF', dir: llama3, prompt: gsm8kPrompt, withoutRopeFreqs: true, tokenizes: true },
  ];
  for (const [i, m] of servedModels.entries()) {
    test(`llama-server loads ${m.label} and decodes greedily as specd's target alone`, async (t) => {
      const command = llamaServerCommand();
      if (!command) {
        const hint = 'llama-server not found (set LLAMA_SERVER to its command: eval "$(bash scripts/llama-server-debian.sh)")';
        if (process.env.CI) throw new Error(`${hint}: .ci/run sets it in CI`);
        return t.skip(hint);
      }
      const dir = m.dir();
      const file = modelToGguf(dir);
      const path = join(root, `served-${i}.gguf`);
      writeGguf(path, file);
      const pair = await ModelPair.load({ draft: null, head: null, target: dir, threads: 2 });
      const prompt = m.prompt(pair);
      const want = await pair.decoder.start(prompt, { maxTokens: 32, sampling: GREEDY, eosTokenIds: [], policy: { policy: 'none' } }).run();
      const textIds = pair.tokenizer.encode(TEXT);
      await pair.release();
      let tokenized: number[] | undefined;
      const served = async (gguf: string) => {
        const server = await LlamaServer.start(command, { threads: 2, context: 1024, args: ['-m', gguf, '-ctk', 'f32', '-ctv', 'f32'] });
        try {
          tokenized ??= await server.tokenize(TEXT);
          return await server.greedy(prompt, 32);
        } finally {
          await server.stop();
        }
      };
      // llama-server's ignore_eos bans its end-of-generation tokens, which specd's greedy may pick:
      // compare up to the first special (control) token specd decodes, and at least 16 tokens.
      const types = file.metadata.get('tokenizer.ggml.token_type')!.value as number[];
      const cut = want.findIndex((id) => types[id] === 3);
      const n = cut < 0 ? want.length : cut;
      assert.ok(n >= 16, `only ${n} tokens before a special token: ${want}`);
      assert.deepEqual((await served(path)).slice(0, n), want.slice(0, n));
      if (m.tokenizes) assert.deepEqual(tokenized, textIds, `llama.cpp pre-tokenizes text as the model's tokenizer.json (tokenizer.ggml.pre ${file.metadata.get('tokenizer.ggml.pre')?.value})`);
      if (m.withoutRopeFreqs) {
        const plain = join(root, 'served-no-rope-freqs.gguf');
        writeGguf(plain, { metadata: file.metadata, tensors: file.tensors.filter((t) => t.name !== 'rope_freqs.weight') });
        assert.notDeepEqual((await served(plain)).slice(0, n), want.slice(0, n), 'without rope_freqs llama-server rotates with the plain frequencies');
      }
    });
  }
});

function gsm8kPrompt(pair: ModelPair): number[] {
  return pair.tokenizer.encodeChat([{ role: 'user', content: 'Natalia sold clips to 48 of her friends in April. How many clips did she sell?' }]);
}

/** The llama-server command ($LLAMA_SERVER, or llama-server on PATH), or undefined when it does not run. */
function llamaServerCommand(): string[] | undefined {
  try {
    return requireTool(LLAMA_SERVER);
  } catch {
    return undefined;
  }
}
