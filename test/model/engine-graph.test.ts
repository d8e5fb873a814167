/**
 * GPT-2 graphs rebuilt from their weights (onnx/gpt2-weights.ts, onnx/gpt2-graph.ts,
 * engine/graph-choice.ts): every combination of fused and plain parts computes the exported
 * graph's logits and KV; the fused acceptance head's output is carried over; graphs that are not
 * GPT-2 are refused with a reason; on WebGPU the fused graph matches the CPU over long prompts
 * (fed in pieces, see MAX_WEBGPU_ATTENTION_SPAN). Also the synthetic pairs of `specd models synth`
 * and `specd bench latency`.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fusedDecoderModel } from '../../src/engine/graph-choice.js';
import { DecoderModel, MAX_WEBGPU_ATTENTION_SPAN } from '../../src/engine/model.js';
import { ModelPair } from '../../src/pair/model-pair.js';
import { GREEDY } from '../../src/engine/sampling.js';
import { loadHeadForDraft } from '../../src/heads/runtime/head-loader.js';
import { writeFixtureModelDir } from '../../src/testing/decoder-fixture.js';
import { onnx, readModelFile } from '../../src/onnx/graph-builder.js';
import { buildGpt2Graph, GRAPH_KIND_KEY, type Gpt2Part } from '../../src/onnx/gpt2-graph.js';
import { NotGpt2Error, readGpt2Weights } from '../../src/onnx/gpt2-weights.js';
import { writeSyntheticPair } from '../../src/bench/synthetic-pair.js';
import { BUNDLED_DRAFT, BUNDLED_HEAD, BUNDLED_TARGET, PACKAGE_ROOT } from '../../src/paths.js';
import { webgpuSkip } from '../support/webgpu.js';
import { maxAbsDiff, speculationPasses } from '../support/tensors.js';

const root = mkdtempSync(join(tmpdir(), 'specd-graph-'));
after(() => rmSync(root, { recursive: true, force: true }));
const cli = join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js');

const prompt = (n: number) => Array.from({ length: n }, (_, i) => 32 + ((i * 37) % 90));

describe('GPT-2 graphs rebuilt from their weights', () => {
  test('weights are read by structure from the bundled models and a fixture', () => {
    const target = readGpt2Weights(readModelFile(join(BUNDLED_TARGET, 'onnx', 'model.onnx')), 6);
    assert.deepEqual([target.vocab, target.hidden, target.inner, target.blocks.length, target.positions], [259, 384, 1536, 6, 1024]);
    const draft = readGpt2Weights(readModelFile(join(BUNDLED_DRAFT, 'onnx', 'model.onnx')), 4);
    assert.deepEqual([draft.hidden, draft.blocks.length], [128, 2]);
    const dir = join(root, 'gpt2-fixture');
    writeFixtureModelDir(dir, { style: 'gpt2', layers: 3, seed: 5 });
    const fx = readGpt2Weights(readModelFile(join(dir, 'onnx', 'model.onnx')), 4);
    assert.equal(fx.blocks.length, 3);
    // The fixture ties its lm_head (Transpose of wte): read as wte transposed.
    for (let v = 0; v < fx.vocab; v += 7) assert.equal(fx.lmHead[3 * fx.vocab + v], fx.wte[v * fx.hidden + 3]);
  });

  for (const [label, dir, heads] of [
    ['bundled target', BUNDLED_TARGET, 6],
    ['bundled draft', BUNDLED_DRAFT, 4],
  ] as const) {
    test(`${label}: every combination of fused and plain parts gives the exported graph's logits`, async () => {
      const exported = await DecoderModel.load(dir, { threads: 2, graph: 'exported' });
      const ref = await speculationPasses(exported, prompt(40));
      await exported.release();
      const w = readGpt2Weights(readModelFile(join(dir, 'onnx', 'model.onnx')), heads);
      const parts: Gpt2Part[] = ['ops', 'fused'];
      for (const attention of parts) {
        for (const norms of parts) {
          for (const gelu of parts) {
            const bytes = buildGpt2Graph(w, { attention, norms, gelu }).toBytes();
            const model = await DecoderModel.load(dir, { threads: 2, model: bytes, graph: 'exported' });
            const got = await speculationPasses(model, prompt(40));
            await model.release();
            got.forEach((g, i) => assert.ok(maxAbsDiff(g, ref[i]!) < 2e-4, `attention=${attention} norms=${norms} gelu=${gelu}, pass ${i}: ${maxAbsDiff(g, ref[i]!)}`));
          }
        }
      }
    });
  }

  test('--graph fused: the fused acceptance head is carried over (accept_logit unchanged)', async () => {
    const outputs: Record<string, Float32Array[]> = {};
    for (const graph of ['exported', 'fused'] as const) {
      const draft = await DecoderModel.load(BUNDLED_DRAFT, { threads: 1, graph });
      const { head, headDraft } = await loadHeadForDraft(BUNDLED_HEAD, draft, { threads: 1, graph });
      assert.ok(headDraft.hasAcceptLogit);
      const cache = headDraft.newCache();
      const a = await headDraft.forwardWithHidden(cache, prompt(20));
      const b = await headDraft.forwardWithHidden(cache, [65]);
      outputs[graph] = [a.acceptLogit!, b.acceptLogit!, a.logits];
      await headDraft.release();
      await head.release();
      await draft.release();
    }
    outputs.fused!.forEach((x, i) => assert.ok(maxAbsDiff(x, outputs.exported![i]!) < 1e-4, `output ${i}`));
  });

  test('a built graph computes logits only for the rows asked for, also across pieces of a long input', async () => {
    const full = await DecoderModel.load(BUNDLED_DRAFT, { threads: 1, graph: 'fused' });
    const vocab = full.info.vocabSize;
    const all = await speculationPasses(full, prompt(100));
    for (const rows of [1, 5, 40, 100]) {
      const cache = full.newCache();
      const got = await full.forward(cache, prompt(100), rows);
      cache.release();
      assert.equal(got.length, rows * vocab, `rows ${rows}`);
      assert.ok(maxAbsDiff(got, all[0]!.subarray((100 - rows) * vocab)) < 1e-5, `rows ${rows}`);
    }
    // Exported graphs compute every row whatever is asked: callers index from the end.
    const exported = await DecoderModel.load(BUNDLED_DRAFT, { threads: 1, graph: 'exported' });
    assert.equal((await exported.forward(exported.newCache(), prompt(10), 2)).length, 10 * vocab);
    await exported.release();
    await full.release();
  });

  test('speculation on fused graphs (CPU) gives the exported target-only output', async () => {
    const exported = await ModelPair.load({ threads: 2 });
    const fused = await ModelPair.load({ threads: 2, graph: 'fused' });
    try {
      const chat = exported.tokenizer.encodeChat([{ role: 'user', content: 'Weng earns $12 an hour for babysitting. How much did she earn for 50 minutes?' }]);
      const base = { maxTokens: 48, sampling: GREEDY, eosTokenIds: [] as number[] };
      const ref = await exported.decoder.start(chat, { ...base, policy: { policy: 'none' } }).run();
      for (const policy of [{ policy: 'none' }, { policy: 'fixed', k: 4 }, { policy: 'specdec++', kMin: 1, kMax: 16 }] as const) {
        const g = fused.decoder.start(chat, { ...base, policy });
        assert.deepEqual(await g.run(), ref, policy.policy);
        if (policy.policy !== 'none') assert.ok(g.stats.accepted_tokens > 0);
      }
    } finally {
      await exported.release();
      await fused.release();
    }
  });

  test('a graph that is not GPT-2 is refused with the reason; a Llama has no fused rebuild', async () => {
    const dir = join(root, 'llama');
    writeFixtureModelDir(dir, { style: 'llama', seed: 3 });
    const model = readModelFile(join(dir, 'onnx', 'model.onnx'));
    assert.throws(() => fusedDecoderModel(model, { modelType: 'gpt2', heads: 4 }), (err: Error) => err instanceof NotGpt2Error && /LayerNormalization|embedding/.test(err.message));
    // Read as what its config says it is, a Llama, it is rebuilt in place only.
    assert.throws(() => fusedDecoderModel(model, { modelType: 'llama', heads: 4, kvHeads: 2, headDim: 8 }, 'fused'), /--graph fused is built for GPT-2 decoders only; llama decoders are rebuilt with --graph inplace/);
    await assert.rejects(DecoderModel.load(dir, { graph: 'fused' }), /--graph fused cannot rebuild this graph/);
    const plain = await DecoderModel.load(dir, { threads: 1 });
    assert.equal((await plain.forward(plain.newCache(), [1, 2, 3])).length, 3 * plain.info.vocabSize);
    await plain.release();
  });

  test('the rebuilt graph says how it was built; built graphs are not rebuilt again', async () => {
    const w = readGpt2Weights(readModelFile(join(BUNDLED_DRAFT, 'onnx', 'model.onnx')), 4);
    const built = buildGpt2Graph(w, { attention: 'ops', norms: 'ops', gelu: 'fused' }).toModel();
    const kind = built.metadataProps.find((p) => p.key === GRAPH_KIND_KEY)?.value;
    assert.equal(kind, 'gpt2 attention=ops norms=ops gelu=fused');
    const bytes = onnx.ModelProto.encode(built).finish();
    const model = await DecoderModel.load(BUNDLED_DRAFT, { threads: 1, model: bytes, graph: 'fused' });
    assert.ok(model.info.layers === 2);
    await model.release();
  });
});

describe('fused graphs on the GPU (WebGPU)', { skip: webgpuSkip }, () => {
  test(`long prompts, fed ${MAX_WEBGPU_ATTENTION_SPAN} positions at a time, match the CPU's exported graph`, async () => {
    const cpu = await DecoderModel.load(BUNDLED_DRAFT, { threads: 1, graph: 'exported' });
    const ref = await speculationPasses(cpu, prompt(100));
    await cpu.release();
    const gpu = await DecoderModel.load(BUNDLED_DRAFT, { device: 'webgpu' });
    const got = await speculationPasses(gpu, prompt(100));
    got.forEach((g, i) => assert.ok(maxAbsDiff(g, ref[i]!) < 2e-4, `pass ${i}: ${maxAbsDiff(g, ref[i]!)}`));
    // The last 40 rows (60..99) span three of the pieces (0-30, 31-61, 62-92, 93-99).
    const vocab = gpu.info.vocabSize;
    const cache = gpu.newCache();
    const last = await gpu.forward(cache, prompt(100), 40);
    cache.release();
    await gpu.release();
    assert.equal(last.length, 40 * vocab);
    assert.ok(maxAbsDiff(last, ref[0]!.subarray(60 * vocab)) < 2e-4);
  });
});

describe('synthetic pairs (specd models synth)', () => {
  test('the draft is the target\'s first blocks: with deep blocks silent every candidate is accepted', async () => {
    const silent = writeSyntheticPair(join(root, 'synth-silent'), { layers: 3, hidden: 32, heads: 2, draftLayers: 1, deepScale: 0, seed: 1 });
    const loud = writeSyntheticPair(join(root, 'synth-loud'), { layers: 3, hidden: 32, heads: 2, draftLayers: 1, deepScale: 1, seed: 1 });
    const rates: number[] = [];
    for (const p of [silent, loud]) {
      const pair = await ModelPair.load({ target: p.targetDir, draft: p.draftDir, threads: 1 });
      const g = pair.decoder.start(pair.tokenizer.encodeChat([{ role: 'user', content: 'hello' }]), { maxTokens: 40, sampling: GREEDY, eosTokenIds: [], policy: { policy: 'fixed', k: 4 } });
      const tokens = await g.run();
      assert.ok(new Set(tokens).size > 5, `varied output: ${tokens.join(' ')}`);
      rates.push(g.stats.acceptance_rate);
      await pair.release();
    }
    assert.equal(rates[0], 1);
    assert.ok(rates[1]! < 0.9, `acceptance with loud deep blocks ${rates[1]}`);
    assert.ok(silent.targetParams > silent.draftParams);
  });

  test('specd models synth writes a pair the CLI runs; bad sizes are one line and exit 1', () => {
    const out = join(root, 'synth-cli');
    const run = spawnSync(process.execPath, [cli, 'models', 'synth', '--out', out, '--layers', '3', '--width', '48', '--heads', '3', '--draft-layers', '1'], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stderr, /wrote .*target \(\d+\.\dM parameters\) and .*draft/);
    const config = JSON.parse(readFileSync(join(out, 'target', 'config.json'), 'utf8')) as Record<string, number>;
    assert.deepEqual([config.n_layer, config.n_embd, config.n_head], [3, 48, 3]);
    const gen = spawnSync(process.execPath, [cli, 'generate', '--target', join(out, 'target'), '--draft', join(out, 'draft'), '--prompt', 'hi', '--max-tokens', '8', '--json', '--threads', '1', '--seed', '3'], { encoding: 'utf8' });
    assert.equal(gen.status, 0, gen.stderr);
    assert.equal((JSON.parse(gen.stdout) as { token_ids: number[] }).token_ids.length, 8);
    const bad = spawnSync(process.execPath, [cli, 'models', 'synth', '--out', join(root, 'synth-bad'), '--width', '50', '--heads', '3'], { encoding: 'utf8' });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /--width 50 is not a multiple of --heads 3/);
    assert.equal(bad.stderr.trim().split('\n').length, 1);
  });
});

describe('specd bench latency', () => {
  test('per-pass costs of both models on each graph, with the greedy tokens compared', () => {
    const json = join(root, 'latency.json');
    const run = spawnSync(process.execPath, [cli, 'bench', 'latency', '--graphs', 'exported,fused', '--tokens', '8', '--threads', '2', '--json', json], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /ms\/token/);
    const report = JSON.parse(readFileSync(json, 'utf8')) as { results: { role: string; graph: string; decode_ms_per_token: number; verify5_ms: number; crop_ms: number; same_tokens_as_first: boolean | null; tokens: number[] }[] };
    assert.deepEqual(report.results.map((r) => `${r.role} ${r.graph}`), ['target exported', 'target fused', 'draft exported', 'draft fused']);
    for (const r of report.results) {
      assert.ok(r.decode_ms_per_token > 0 && r.verify5_ms > 0 && r.crop_ms >= 0);
      assert.equal(r.tokens.length, 8);
    }
    assert.equal(report.results[1]!.same_tokens_as_first, true);
    assert.equal(report.results[3]!.same_tokens_as_first, true);
    const bad = spawnSync(process.execPath, [cli, 'bench', 'latency', '--devices', 'cpu,tpu'], { encoding: 'utf8' });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /expected a comma-separated list of devices: cpu, cuda, webgpu/);
  });
});

