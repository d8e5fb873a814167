/**
 * The acceptance head's graphs: the inference head plus the candidate term equals a plain
 * reference computation, the loss graph's loss equals the paper's weighted BCE and its
 * hand-written backward pass equals finite differences, the head fused into a draft gives the
 * same logit as on its own, and training lowers the loss on a small learnable synthetic task.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { Rng } from '../../src/engine/rng.js';
import { acceptProbability, BASE_FEATURES, candidateFeatures, knotWeights, TEMPERATURE_KNOTS } from '../../src/engine/candidate-features.js';
import { DecoderModel } from '../../src/engine/model.js';
import { readModelDir } from '../../src/engine/model-dir.js';
import { calibration } from '../../src/heads/training/eval.js';
import { readHeadFile } from '../../src/heads/runtime/head-file.js';
import { fuseHead } from '../../src/heads/runtime/head-fusion.js';
import {
  buildHeadGraph,
  CANDIDATE_FEATURES,
  cloneParams,
  type HeadParams,
  headReference,
  PARAM_NAMES,
  paramCount,
  paramShape,
  weightedBce,
} from '../../src/heads/runtime/head-graph.js';
import { AcceptanceHead } from '../../src/heads/runtime/head-runner.js';
import { preparedDraftModel } from '../../src/heads/runtime/prepare-draft.js';
import { AdamW, HeadLossRunner, initHeadParams, learningRate, MemoryRows, trainHead } from '../../src/heads/training/train.js';
import { writeFixturePair } from '../../src/testing/decoder-fixture.js';
import { onnx } from '../../src/onnx/graph-builder.js';
import { writeTestHead } from '../support/heads.js';

const root = mkdtempSync(join(tmpdir(), 'specd-heads-graph-'));
after(() => rmSync(root, { recursive: true, force: true }));

function randomRows(n: number, width: number, seed: number, scale = 1): Float32Array {
  return new Rng(seed).normals(n * width, scale);
}

/** Feature rows: a hidden state of `width` values, then the candidate features. */
function randomFeatureRows(n: number, width: number, seed: number, scale = 1): Float32Array {
  return randomRows(n, width + CANDIDATE_FEATURES, seed, scale);
}

/** Parameters with random candidate weights too (initHeadParams starts them at zero). */
function randomParams(width: number, seed: number): HeadParams {
  const params = initHeadParams(width, seed);
  params.u.set(new Rng(seed + 100).normals(CANDIDATE_FEATURES, 0.5));
  return params;
}

/** Hidden states [n, width] out of feature rows. */
function hiddenPart(rows: Float32Array, n: number, width: number): Float32Array {
  const out = new Float32Array(n * width);
  for (let r = 0; r < n; r++) out.set(rows.subarray(r * (width + CANDIDATE_FEATURES), r * (width + CANDIDATE_FEATURES) + width), r * width);
  return out;
}

/** P(accept) from the ONNX head's logits and the rows' candidate features. */
function probsFromLogits(params: HeadParams, logits: Float32Array, rows: Float32Array): number[] {
  const stride = params.width + CANDIDATE_FEATURES;
  return Array.from(logits, (l, r) => acceptProbability(l, params.u, rows.subarray(r * stride + params.width, (r + 1) * stride)));
}

describe('head graph', () => {
  test('the ONNX head plus the candidate term equals the reference computation (widths 8, 64, 128)', async () => {
    for (const width of [8, 64, 128]) {
      const params = randomParams(width, width);
      const n = 17;
      const rows = randomFeatureRows(n, width, 1);
      const session = await ort.InferenceSession.create(buildHeadGraph(params).toBytes());
      const out = await session.run({ hidden: new ort.Tensor('float32', hiddenPart(rows, n, width), [n, width]) });
      assert.deepEqual(out.accept_logit!.dims, [n]);
      const ref = headReference(params, rows, n);
      const got = probsFromLogits(params, out.accept_logit!.data as Float32Array, rows);
      for (let i = 0; i < n; i++) assert.ok(Math.abs(got[i]! - ref[i]!) < 1e-5, `width ${width} row ${i}: ${got[i]} vs ${ref[i]}`);
      await session.release();
    }
    assert.equal(paramCount(4096), 4096 * 4096 + 2 * 4096 + 1 + CANDIDATE_FEATURES, 'about 16.8M parameters at width 4096');
  });

  test('candidate features: [1, log q(y), log max q, entropy of softmax(logits)] weighted by the temperature knots', () => {
    const logits = Float32Array.of(2, 0, -1, -Infinity);
    const z = Math.exp(2) + 1 + Math.exp(-1);
    const q = [Math.exp(2) / z, 1 / z, Math.exp(-1) / z];
    const entropy = -q.reduce((a, p) => a + p * Math.log(p), 0);
    const base = [1, Math.log(q[1]!), Math.log(q[0]!), entropy];
    const F = BASE_FEATURES;
    const knots = TEMPERATURE_KNOTS;
    assert.equal(CANDIDATE_FEATURES, knots.length * F);
    const close = (phi: Float32Array, want: number[]) => want.forEach((x, i) => assert.ok(Math.abs(phi[i]! - x) < 1e-6, `feature ${i}: ${phi[i]} vs ${x}`));
    // At a knot, that knot's block holds the base features and the others are zero.
    knots.forEach((t, j) => close(candidateFeatures(logits, 1, t), knots.flatMap((_, k) => base.map((x) => (k === j ? x : 0)))));
    // Between two knots, a linear blend of the two; beyond the last, the last; greedy is T = 0.
    const mid = (knots[1]! + knots[2]!) / 2;
    close(candidateFeatures(logits, 1, mid), knots.flatMap((_, k) => base.map((x) => (k === 1 || k === 2 ? x / 2 : 0))));
    close(candidateFeatures(logits, 1, 5), candidateFeatures(logits, 1, knots.at(-1)!) as unknown as number[]);
    const w = knotWeights(0.5);
    assert.ok(Math.abs(w.reduce((a, b) => a + b, 0) - 1) < 1e-12 && w.filter((x) => x > 0).length === 2);
    // P(accept) = sigmoid(logit + phi . u).
    const u = new Float32Array(CANDIDATE_FEATURES);
    u[1] = 1;
    u[0] = -0.25;
    const phi = candidateFeatures(logits, 1, 0);
    assert.ok(Math.abs(acceptProbability(0.5, u, phi) - 1 / (1 + Math.exp(-(0.5 - 0.25 + Math.log(q[1]!))))) < 1e-6);
  });

  test('leading dimensions pass through: [batch, seq, width] -> [batch, seq]', async () => {
    const width = 8;
    const params = randomParams(width, 2);
    const rows = randomFeatureRows(6, width, 3);
    const session = await ort.InferenceSession.create(buildHeadGraph(params, { inputShape: ['b', 's', width] }).toBytes());
    const out = await session.run({ hidden: new ort.Tensor('float32', hiddenPart(rows, 6, width), [2, 3, width]) });
    assert.deepEqual(out.accept_logit!.dims, [2, 3]);
    const ref = headReference(params, rows, 6);
    probsFromLogits(params, out.accept_logit!.data as Float32Array, rows).forEach((p, i) => assert.ok(Math.abs(p - ref[i]!) < 1e-5));
  });

  test('the loss graph: loss equals the weighted BCE; gradients equal finite differences', async () => {
    const width = 12;
    const n = 9;
    const params = randomParams(width, 5);
    const x = randomFeatureRows(n, width, 6, 1.5);
    const labels = Float32Array.from({ length: n }, (_, i) => [0, 1, 0.3, 0.9, 0.5, 1, 0, 0.05, 0.7][i]!);
    const runner = await HeadLossRunner.create(width, { mismatchWeight: 6, threads: 1 });
    const { loss, grads } = await runner.gradients(params, x, labels, n);
    const lossAt = (p: HeadParams) => weightedBce(headReference(p, x, n), labels, 6);
    assert.ok(Math.abs(loss - lossAt(params)) < 1e-5, `loss ${loss} vs ${lossAt(params)}`);
    const eps = 1e-4;
    for (const name of PARAM_NAMES) {
      const size = paramShape(name, width).reduce((a, b) => a * b, 1);
      assert.equal(grads[name].length, size);
      for (const idx of [0, Math.floor(size / 3), size - 1]) {
        const plus = cloneParams(params);
        const minus = cloneParams(params);
        plus[name][idx]! += eps;
        minus[name][idx]! -= eps;
        const numeric = (lossAt(plus) - lossAt(minus)) / (2 * eps);
        const analytic = grads[name][idx]!;
        assert.ok(Math.abs(numeric - analytic) < 1e-4 + 1e-3 * Math.abs(numeric), `d loss / d ${name}[${idx}]: analytic ${analytic}, numeric ${numeric}`);
      }
    }
    // Probabilities from the loss graph agree with the head.
    const probs = await runner.probs(params, x, n);
    const ref = headReference(params, x, n);
    probs.forEach((p, i) => assert.ok(Math.abs(p - ref[i]!) < 1e-5));
    await runner.release();
  });

  test('the loss is finite for saturated logits', async () => {
    const width = 4;
    const params: HeadParams = { width, W: new Float32Array(16), b: new Float32Array(4), v: new Float32Array(4), c: Float32Array.of(60), u: new Float32Array(CANDIDATE_FEATURES) };
    const runner = await HeadLossRunner.create(width, { threads: 1 });
    const { loss, grads } = await runner.gradients(params, new Float32Array(2 * (width + CANDIDATE_FEATURES)), Float32Array.of(0, 1), 2);
    assert.ok(Number.isFinite(loss) && loss > 10, `loss ${loss}`);
    assert.ok(Number.isFinite(grads.c[0]!));
    await runner.release();
  });

  test('the head fused into a draft gives the same logits and the same head logit as the head on its own', async () => {
    const p = writeFixturePair(join(root, 'fuse'), { style: 'gpt2' });
    const width = p.draft.hidden;
    const headPath = writeTestHead(join(root, 'fuse'), p.draftDir, width, { seed: 9 });
    const dir = readModelDir(p.draftDir);
    const model = fuseHead(preparedDraftModel(dir.onnxPath, width), readHeadFile(headPath).model);
    const fused = await DecoderModel.load(p.draftDir, { threads: 1, model: onnx.ModelProto.encode(model).finish() });
    const plain = await DecoderModel.load(p.draftDir, { threads: 1 });
    const head = AcceptanceHead.load(headPath);
    const tokens = [1, 9, 14, 20, 5, 33];
    const a = await plain.forward(plain.newCache(), tokens);
    const b = await fused.forwardWithHidden(fused.newCache(), tokens);
    assert.deepEqual(Array.from(b.logits), Array.from(a));
    assert.equal(b.acceptLogit!.length, tokens.length);
    for (let i = 0; i < tokens.length; i++) {
      const separate = await head.predictLogit(b.hidden!.subarray(i * width, (i + 1) * width));
      assert.ok(Math.abs(separate - b.acceptLogit![i]!) < 1e-5, `position ${i}: ${separate} vs ${b.acceptLogit![i]}`);
    }
    // predictBatch takes training rows (hidden state, then candidate features) and adds the candidate term.
    const rows = new Float32Array(tokens.length * (width + CANDIDATE_FEATURES));
    const vocab = fused.info.vocabSize;
    for (let i = 0; i < tokens.length; i++) {
      rows.set(b.hidden!.subarray(i * width, (i + 1) * width), i * (width + CANDIDATE_FEATURES));
      candidateFeatures(b.logits.subarray(i * vocab, (i + 1) * vocab), 3, 0.7, rows.subarray(i * (width + CANDIDATE_FEATURES) + width, (i + 1) * (width + CANDIDATE_FEATURES)));
    }
    const batch = await head.predictBatch(rows, tokens.length);
    const want = Array.from(b.acceptLogit!, (l, i) => acceptProbability(l, head.candidateWeights, rows.subarray(i * (width + CANDIDATE_FEATURES) + width, (i + 1) * (width + CANDIDATE_FEATURES))));
    batch.forEach((p, i) => assert.ok(Math.abs(p - want[i]!) < 1e-6, `row ${i}`));
    await Promise.all([fused.release(), plain.release(), head.release()]);
  });
});

describe('training', () => {
  test('learning-rate schedule: warm-up to the peak, cosine decay to 10%', () => {
    assert.ok(learningRate(1, 0, 100) < 0.5);
    assert.equal(learningRate(1, 4, 100), 1);
    assert.ok(Math.abs(learningRate(1, 99, 100) - 0.1) < 1e-3);
  });

  test('AdamW moves each parameter against its gradient by about the learning rate', () => {
    const params = initHeadParams(3, 1);
    const before = cloneParams(params);
    const grads = { W: new Float32Array(9).fill(1), b: new Float32Array(3).fill(-1), v: new Float32Array(3).fill(2), c: Float32Array.of(-3), u: Float32Array.from({ length: CANDIDATE_FEATURES }, (_, i) => [1, -2, 0.5][i % 3]!) };
    new AdamW(params, 0).update(params, grads, 0.01);
    for (const name of PARAM_NAMES) {
      params[name].forEach((x, i) => {
        const step = x - before[name][i]!;
        assert.ok(Math.abs(Math.abs(step) - 0.01) < 1e-4 && Math.sign(step) === -Math.sign(grads[name][i]!), `${name}[${i}] moved ${step}`);
      });
    }
  });

  test('training lowers the loss on a learnable synthetic task', async () => {
    // Soft labels from a fixed logistic rule of the hidden state and the candidate features: learnable by the head.
    const width = 16;
    const stride = width + CANDIDATE_FEATURES;
    const n = 6000;
    const rng = new Rng(21);
    const features = rng.normals(n * stride, 1);
    const rule = rng.normals(stride, 1);
    const labels = new Float32Array(n);
    for (let r = 0; r < n; r++) {
      let s = 0.5;
      for (let j = 0; j < stride; j++) s += features[r * stride + j]! * rule[j]!;
      labels[r] = 1 / (1 + Math.exp(-1.5 * s));
    }
    const source = new MemoryRows(width, features, labels);
    const all = Int32Array.from({ length: n }, (_, i) => i);
    const trainRows = all.subarray(0, 5000);
    const valRows = all.subarray(5000);
    const result = await trainHead(source, trainRows, valRows, { epochs: 6, batchSize: 128, lr: 3e-3, seed: 1, threads: 1 });
    const last = result.history.at(-1)!;
    assert.ok(last.val_loss < 0.6 * result.initialValLoss, `val loss ${result.initialValLoss.toFixed(4)} -> ${last.val_loss.toFixed(4)}`);
    assert.ok(result.history[0]!.train_loss > last.train_loss, 'training loss fell');
    const probs = headReference(result.params, source.gatherFeatures(valRows), valRows.length);
    const cal = calibration(probs, labels.subarray(5000));
    assert.ok(cal.auc > 0.9, `AUC ${cal.auc}`);
    assert.ok(result.rowsPerSecond > 1000, `${result.rowsPerSecond} rows/s`);
    // The candidate weights moved towards the rule's.
    for (let f = 0; f < CANDIDATE_FEATURES; f++) {
      const want = rule[width + f]!;
      if (Math.abs(want) > 0.3) assert.equal(Math.sign(result.params.u[f]!), Math.sign(want), `u[${f}] = ${result.params.u[f]} for a rule weight ${want}`);
    }
  });
});
