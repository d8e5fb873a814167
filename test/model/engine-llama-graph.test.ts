/**
 * Llama-family decoders rebuilt with the KV cache written in place (onnx/llama-weights.ts,
 * onnx/llama-graph.ts, onnx/inplace-attention.ts): weights read by structure, the rebuilt
 * graph's logits equal to the exported graph's over the passes speculation makes (grouped-query
 * attention, fp16 KV, Qwen2's q/k/v biases, both ways of computing rotary embeddings), greedy
 * speculative output token for token equal to the exported target-only output, and what is
 * refused (with the reason; the exported graph stays).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fusedDecoderModel } from '../../src/engine/graph-choice.js';
import { DecoderModel } from '../../src/engine/model.js';
import { readModelDir } from '../../src/engine/model-dir.js';
import { ModelPair } from '../../src/pair/model-pair.js';
import { GREEDY } from '../../src/engine/sampling.js';
import { writeFixtureModelDir, writeFixturePair, type DecoderFixtureOptions } from '../../src/testing/decoder-fixture.js';
import { decodedGraph, onnx, readModelFile } from '../../src/onnx/graph-builder.js';
import { GRAPH_KIND_KEY } from '../../src/onnx/gpt2-graph.js';
import { buildLlamaGraph, type LlamaRotary } from '../../src/onnx/llama-graph.js';
import { NotLlamaError, readLlamaWeights } from '../../src/onnx/llama-weights.js';
import { maxAbsDiff, speculationPasses } from '../support/tensors.js';

const root = mkdtempSync(join(tmpdir(), 'specd-llama-'));
after(() => rmSync(root, { recursive: true, force: true }));

const prompt = (n: number, vocab: number) => Array.from({ length: n }, (_, i) => 4 + ((i * 37) % (vocab - 4)));

const FIXTURES: { label: string; options: DecoderFixtureOptions }[] = [
  { label: 'GQA, 4 query heads on 2 KV heads', options: { style: 'llama', seed: 31, heads: 4, kvHeads: 2, layers: 3 } },
  { label: 'GQA 4 on 1, fp16 KV', options: { style: 'llama', seed: 32, heads: 4, kvHeads: 1, kvDtype: 'float16' } },
  { label: 'MHA (as many KV heads as heads), external data', options: { style: 'llama', seed: 33, heads: 2, kvHeads: 2, hidden: 16, externalData: true } },
  { label: 'Qwen2-style q/k/v biases, head_dim 16', options: { style: 'llama', seed: 34, heads: 4, kvHeads: 2, headDim: 16, hidden: 48, qkvBias: true } },
];

describe('Llama-family graphs rebuilt in place', () => {
  test('weights are read by structure: k and v told apart by the present they feed, gate and up by the Sigmoid', () => {
    const dir = join(root, 'weights');
    // MHA: q, k and v all [hidden, hidden], so only the structure tells them apart.
    writeFixtureModelDir(dir, { style: 'llama', seed: 30, heads: 2, kvHeads: 2, hidden: 16, layers: 2 });
    const model = readModelFile(join(dir, 'onnx', 'model.onnx'));
    const w = readLlamaWeights(model, readModelDir(dir).config);
    assert.deepEqual([w.vocab, w.hidden, w.intermediate, w.heads, w.kvHeads, w.headDim, w.blocks.length], [48, 16, 48, 2, 2, 8, 2]);
    const init = (name: string) => {
      const t = model.graph!.initializer!.find((i) => i.name === name)!;
      return new Float32Array(new Uint8Array(t.rawData!).buffer);
    };
    const b = w.blocks[1]!;
    assert.deepEqual(b.q.weight, init('model.layers.1.self_attn.q_proj.weight'));
    assert.deepEqual(b.k.weight, init('model.layers.1.self_attn.k_proj.weight'));
    assert.deepEqual(b.v.weight, init('model.layers.1.self_attn.v_proj.weight'));
    assert.deepEqual(b.gate, init('model.layers.1.mlp.gate_proj.weight'));
    assert.deepEqual(b.up, init('model.layers.1.mlp.up_proj.weight'));
    assert.deepEqual(b.down, init('model.layers.1.mlp.down_proj.weight'));
    assert.deepEqual(b.postNorm, init('model.layers.1.post_attention_layernorm.weight'));
    assert.deepEqual(w.norm, init('model.norm.weight'));
    assert.deepEqual(w.lmHead, init('lm_head.weight'));
    assert.equal(b.q.bias, null);
  });

  for (const { label, options } of FIXTURES) {
    test(`${label}: the in-place rebuild gives the exported graph's logits (rotary as plain ops and fused)`, async () => {
      const dir = join(root, `fx-${options.seed}`);
      const cfg = writeFixtureModelDir(dir, { ...options, maxPositions: 256 });
      const p = prompt(60, cfg.vocabSize);
      const exported = await DecoderModel.load(dir, { threads: 1, graph: 'exported' });
      assert.equal(exported.kvInPlace, false);
      const ref = await speculationPasses(exported, p);
      await exported.release();
      // The default on the CPU is the in-place rebuild.
      const inplace = await DecoderModel.load(dir, { threads: 1 });
      assert.ok(inplace.kvInPlace);
      assert.deepEqual([inplace.info.kvHeads, inplace.info.headDim, inplace.info.dtype], [cfg.kvHeads, cfg.headDim, 'float32']);
      const got = await speculationPasses(inplace, p);
      await inplace.release();
      // fp16 KV: both round keys and values to fp16, but fp32 noise can flip an fp16 ulp (as in the rollback tests).
      const tol = cfg.kvDtype === 'float16' ? 1e-3 : 2e-4;
      got.forEach((g, i) => assert.ok(maxAbsDiff(g, ref[i]!) < tol, `default rebuild, pass ${i}: ${maxAbsDiff(g, ref[i]!)}`));
      const w = readLlamaWeights(readModelFile(join(dir, 'onnx', 'model.onnx')), readModelDir(dir).config);
      assert.equal(w.kvFloat16, cfg.kvDtype === 'float16');
      for (const rotary of ['ops', 'fused'] as LlamaRotary[]) {
        const bytes = buildLlamaGraph(w, { rotary, maxPositions: 256 }).toBytes();
        const model = await DecoderModel.load(dir, { threads: 1, model: bytes });
        assert.ok(model.kvInPlace);
        const out = await speculationPasses(model, p);
        await model.release();
        out.forEach((g, i) => assert.ok(maxAbsDiff(g, ref[i]!) < tol, `rotary=${rotary}, pass ${i}: ${maxAbsDiff(g, ref[i]!)}`));
      }
    });
  }

  test('an export whose RMSNorms are SimplifiedLayerNormalization nodes (as ONNX Runtime\'s optimizer writes them) reads the same', async () => {
    const dir = join(root, 'fused-norms');
    writeFixtureModelDir(dir, { style: 'llama', seed: 38, heads: 4, kvHeads: 2 });
    const file = join(dir, 'onnx', 'model.onnx');
    const reference = await DecoderModel.load(dir, { threads: 1, graph: 'exported' });
    const expected = await speculationPasses(reference, prompt(30, 48));
    await reference.release();
    // Each written-out RMSNorm, Mul(Div(x, sqrt(mean(x^2) + eps)), gain), becomes one node over x and the gain; the old nodes are left unused.
    const model = readModelFile(file);
    const graph = decodedGraph(model);
    const producer = new Map(graph.node.flatMap((n) => n.output.map((o) => [o, n] as const)));
    let replaced = 0;
    graph.node = graph.node.map((n) => {
      const div = producer.get(n.input[0] ?? '');
      if (n.opType !== 'Mul' || !/norm/.test(n.input[1] ?? '') || div?.opType !== 'Div') return n;
      replaced++;
      return onnx.NodeProto.create({
        opType: 'SimplifiedLayerNormalization',
        input: [div.input[0]!, n.input[1]!],
        output: [n.output[0]!],
        name: `simplified_${replaced}`,
        attribute: [
          onnx.AttributeProto.create({ name: 'axis', type: onnx.AttributeProto.AttributeType.INT, i: -1 }),
          onnx.AttributeProto.create({ name: 'epsilon', type: onnx.AttributeProto.AttributeType.FLOAT, f: 1e-5 }),
        ],
      });
    });
    assert.equal(replaced, 2 * 2 + 1);
    writeFileSync(file, onnx.ModelProto.encode(model).finish());
    const exported = await DecoderModel.load(dir, { threads: 1, graph: 'exported' });
    const surgery = await speculationPasses(exported, prompt(30, 48));
    await exported.release();
    surgery.forEach((g, i) => assert.ok(maxAbsDiff(g, expected[i]!) < 1e-4, `the edited export, pass ${i}`));
    const inplace = await DecoderModel.load(dir, { threads: 1, graph: 'inplace' });
    const got = await speculationPasses(inplace, prompt(30, 48));
    await inplace.release();
    got.forEach((g, i) => assert.ok(maxAbsDiff(g, expected[i]!) < 2e-4, `rebuilt, pass ${i}: ${maxAbsDiff(g, expected[i]!)}`));
  });

  test("a config's model_type qwen2 is read as Llama-family; a dropped bias would show", async () => {
    const dir = join(root, 'qwen2');
    writeFixtureModelDir(dir, { style: 'llama', seed: 35, qkvBias: true });
    const config = readModelDir(dir).config;
    assert.equal(config.modelType, 'qwen2');
    const w = readLlamaWeights(readModelFile(join(dir, 'onnx', 'model.onnx')), config);
    assert.ok(w.blocks.every((b) => b.q.bias && b.k.bias && b.v.bias));
    const ref = await DecoderModel.load(dir, { threads: 1, graph: 'exported' });
    const expected = await speculationPasses(ref, prompt(20, 48));
    await ref.release();
    for (const b of w.blocks) b.k.bias!.fill(0);
    const unbiased = await DecoderModel.load(dir, { threads: 1, model: buildLlamaGraph(w, { maxPositions: 128 }).toBytes() });
    const got = await speculationPasses(unbiased, prompt(20, 48));
    await unbiased.release();
    assert.ok(maxAbsDiff(got[0]!, expected[0]!) > 1e-2, 'the k bias changes the logits');
  });

  for (const [label, selfDraft] of [['a draft that is the target (every candidate accepted)', true], ['a draft of its own (candidates rejected)', false]] as const) {
    test(`speculation on the in-place rebuild, ${label}: the exported target-only output, alone and batched`, async () => {
      const target = { heads: 4, kvHeads: 2, hidden: 32, layers: 3, maxPositions: 300, seed: 1 };
      const p = writeFixturePair(join(root, `pair-${selfDraft}`), { style: 'llama', vocabSize: 40, target, draft: selfDraft ? target : { heads: 2, kvHeads: 1, maxPositions: 300 } });
      const exported = await ModelPair.load({ target: p.targetDir, draft: p.draftDir, threads: 1, draftThreads: 1, graph: 'exported' });
      const inplace = await ModelPair.load({ target: p.targetDir, draft: p.draftDir, threads: 1, draftThreads: 1 });
      try {
        assert.ok(inplace.target.kvInPlace && inplace.draft!.kvInPlace);
        const prompts = [5, 90, 200].map((n, j) => Array.from({ length: n }, (_, i) => 4 + ((i * 7 + j * 3) % 36)));
        const base = { maxTokens: 40, sampling: GREEDY, eosTokenIds: [] as number[] };
        for (const input of prompts) {
          const ref = await exported.decoder.start(input, { ...base, policy: { policy: 'none' } }).run();
          for (const policy of [{ policy: 'none' }, { policy: 'fixed', k: 3 }, { policy: 'confidence', pMin: 0.3, kMax: 6 }] as const) {
            const g = inplace.decoder.start(input, { ...base, policy });
            assert.deepEqual(await g.run(), ref, `${policy.policy}, ${input.length} prompt tokens`);
            if (policy.policy === 'fixed') assert.ok(selfDraft ? g.stats.accepted_tokens === g.stats.draft_tokens : g.stats.accepted_tokens < g.stats.draft_tokens, `${g.stats.accepted_tokens} of ${g.stats.draft_tokens} accepted`);
          }
        }
        // Several sequences of different lengths in one forwardBatch: each as it would be alone.
        const caches = prompts.map(() => inplace.target.newCache());
        const alone = await Promise.all(prompts.map(async (x) => (await inplace.target.score(x)).logits));
        const batched = await inplace.target.forwardBatch(caches, prompts);
        batched.forEach((o, b) => assert.ok(maxAbsDiff(o.logits, alone[b]!) < 1e-4, `sequence ${b}`));
        const more = [[9], [10, 11, 12], [13, 14]];
        const next = await inplace.target.forwardBatch(caches, more);
        for (const [b, x] of more.entries()) {
          const ref = (await exported.target.score([...prompts[b]!, ...x])).logits;
          assert.ok(maxAbsDiff(next[b]!.logits, ref.subarray(ref.length - x.length * 40)) < 2e-4, `sequence ${b}, second pass`);
        }
        for (const c of caches) c.release();
      } finally {
        await exported.release();
        await inplace.release();
      }
    });
  }

  test('what is not rebuilt keeps the exported graph, with the reason; asked for, it is an error', async () => {
    const cases: { label: string; edit: (c: Record<string, unknown>) => void; reason: RegExp }[] = [
      { label: 'rope_scaling', edit: (c) => (c.rope_scaling = { rope_type: 'yarn', factor: 4 }), reason: /rope_scaling .*yarn.*: only plain rotary embeddings and rope_scaling type llama3 are rebuilt/ },
      { label: 'sliding window', edit: (c) => ((c.model_type = 'mistral'), (c.sliding_window = 64)), reason: /sliding-window attention \(sliding_window 64\) is not rebuilt/ },
      { label: 'wrong KV heads', edit: (c) => (c.num_key_value_heads = 4), reason: /block 0 k_proj is \[32, 16\], expected \[32, 32\]/ },
      { label: 'unknown family', edit: (c) => (c.model_type = 'phi3'), reason: /LayerNormalization|embedding/ },
    ];
    for (const { label, edit, reason } of cases) {
      const dir = join(root, `refused-${label.replace(/ /g, '-')}`);
      writeFixtureModelDir(dir, { style: 'llama', seed: 36 });
      const configPath = join(dir, 'config.json');
      const config = JSON.parse(readFileSync(configPath, 'utf8')) as Record<string, unknown>;
      edit(config);
      writeFileSync(configPath, JSON.stringify(config));
      if (label !== 'wrong KV heads') {
        // The default falls back to the exported graph, saying why.
        const model = await DecoderModel.load(dir, { threads: 1 });
        assert.equal(model.kvInPlace, false, label);
        await model.release();
      }
      await assert.rejects(DecoderModel.load(dir, { threads: 1, graph: 'inplace' }), (err: Error) => /--graph inplace cannot rebuild this graph/.test(err.message) && reason.test(err.message), label);
    }
    const model = readModelFile(join(root, 'weights', 'onnx', 'model.onnx'));
    assert.throws(() => readLlamaWeights(model, { modelType: 'llama', heads: 2, kvHeads: 2, headDim: 8, layers: 3 }), (err: Error) => err instanceof NotLlamaError && /2 blocks in the graph, 3 in config.json/.test(err.message));
    assert.throws(() => fusedDecoderModel(model, { modelType: 'llama', heads: 2, kvHeads: 2, headDim: 8 }, 'fused'), /--graph fused is built for GPT-2 decoders only/);
  });

  test('the rebuilt graph says how it was built', () => {
    const dir = join(root, 'kind');
    writeFixtureModelDir(dir, { style: 'llama', seed: 37, kvDtype: 'float16' });
    const rebuilt = fusedDecoderModel(readModelFile(join(dir, 'onnx', 'model.onnx')), readModelDir(dir).config, 'inplace');
    assert.equal(rebuilt.metadataProps.find((p) => p.key === GRAPH_KIND_KEY)?.value, 'llama attention=inplace rotary=fused kv=float16-rounded');
  });
});
