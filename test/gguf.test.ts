/**
 * The GGUF writer (src/gguf): every metadata type and float32 tensors round-trip through the
 * reader; the bundled pair written as GGUF carries llama.cpp's gpt2 names, dims and tokenizer,
 * its matrices transposed from the ONNX weights; Llama and Qwen2 fixtures likewise; and, where
 * llama.cpp's llama-server runs (LLAMA_SERVER: the command, or llama-server on PATH), it loads each
 * file and decodes greedily the same tokens as specd's target alone.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ModelPair } from '../src/pair/model-pair.js';
import { GREEDY } from '../src/engine/sampling.js';
import { GgmlType, type GgufFile, readGguf, writeGguf } from '../src/gguf/gguf-file.js';
import { modelToGguf, NotConvertibleError } from '../src/gguf/model-to-gguf.js';
import { writeFixtureModelDir } from '../src/testing/decoder-fixture.js';
import { readGpt2Weights } from '../src/onnx/gpt2-weights.js';
import { readLlamaWeights } from '../src/onnx/llama-weights.js';
import { readModelFile } from '../src/onnx/graph-builder.js';
import { BUNDLED_DRAFT, BUNDLED_TARGET } from '../src/paths.js';
import { readModelDir } from '../src/engine/model-dir.js';

const root = mkdtempSync(join(tmpdir(), 'specd-gguf-'));
after(() => rmSync(root, { recursive: true, force: true }));

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
      writeFixtureModelDir(dir, { style: 'llama', layers: 2, hidden: 64, heads: 4, kvHeads: 2, seed: 3, vocabSize: 48, qkvBias });
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

  const servedModels: { label: string; dir: () => string; prompt: (pair: ModelPair) => number[] }[] = [
    { label: "the bundled target's GGUF", dir: () => BUNDLED_TARGET, prompt: (pair) => pair.tokenizer.encodeChat([{ role: 'user', content: 'Natalia sold clips to 48 of her friends in April. How many clips did she sell?' }]) },
    { label: 'a Llama GQA fixture as GGUF', dir: () => join(root, 'llama'), prompt: () => [1, 5, 9, 13, 20, 7] },
    { label: 'a Qwen2 fixture (q/k/v biases) as GGUF', dir: () => join(root, 'qwen2'), prompt: () => [1, 5, 9, 13, 20, 7] },
  ];
  for (const m of servedModels) {
    test(`llama-server loads ${m.label} and decodes greedily as specd's target alone`, async (t) => {
      const command = llamaServerCommand();
      if (!command) {
        const hint = 'llama-server not found (set LLAMA_SERVER to its command: eval "$(bash scripts/llama-server-debian.sh)")';
        if (process.env.CI) throw new Error(`${hint}: .ci/run sets it in CI`);
        return t.skip(hint);
      }
      const dir = m.dir();
      const path = join(root, `served-${m.label.length}.gguf`);
      writeGguf(path, modelToGguf(dir));
      const pair = await ModelPair.load({ draft: null, head: null, target: dir, threads: 2 });
      const prompt = m.prompt(pair);
      const want = await pair.decoder.start(prompt, { maxTokens: 32, sampling: GREEDY, eosTokenIds: [], policy: { policy: 'none' } }).run();
      await pair.release();
      const port = 18000 + (process.pid % 1000);
      const [cmd, ...args] = command;
      const server = spawn(cmd!, [...args, '-m', path, '--port', String(port), '--host', '127.0.0.1', '-t', '2', '-c', '1024', '--no-warmup'], { stdio: ['ignore', 'ignore', 'ignore'] });
      try {
        const url = `http://127.0.0.1:${port}`;
        for (let i = 0; !(await fetch(`${url}/health`).then((r) => r.ok, () => false)); i++) {
          if (i > 150 || server.exitCode !== null) throw new Error('llama-server did not start');
          await new Promise((r) => setTimeout(r, 200));
        }
        const res = await fetch(`${url}/completion`, {
          method: 'POST',
          body: JSON.stringify({ prompt, n_predict: 32, temperature: 0, top_k: 1, return_tokens: true, ignore_eos: true, cache_prompt: false }),
        });
        assert.deepEqual(((await res.json()) as { tokens: number[] }).tokens, want);
      } finally {
        server.kill();
        await new Promise((r) => server.once('exit', r));
      }
    });
  }
});

/** The llama-server command: $LLAMA_SERVER split on spaces, or llama-server on PATH. */
function llamaServerCommand(): string[] | undefined {
  if (process.env.LLAMA_SERVER) return process.env.LLAMA_SERVER.split(' ').filter(Boolean);
  return spawnSync('llama-server', ['--version'], { encoding: 'utf8' }).status === 0 ? ['llama-server'] : undefined;
}
