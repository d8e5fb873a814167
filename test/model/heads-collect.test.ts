/**
 * The head's data pipeline on a tiny fixture pair: collection at a sampling temperature and
 * greedy gives labels in [0, 1] that equal min(1, p_T/q_T), or 1 exactly where the candidate is
 * the target's argmax when greedy, computed independently (token by token with the KV cache),
 * and features that equal the draft's hidden state before each candidate and the candidate's
 * features at the prompt's temperature; an interrupted collection resumes to
 * the same bytes; a head trains on the data and is written with its metadata; the evaluation
 * metrics and the threshold simulation give known values on hand-made inputs; the CLI runs.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Rng } from '../../src/engine/rng.js';
import { DecoderModel } from '../../src/engine/model.js';
import { readModelDir } from '../../src/engine/model-dir.js';
import { ModelPair } from '../../src/pair/model-pair.js';
import { argmax, softmax } from '../../src/engine/sampling.js';
import { CANDIDATE_FEATURES, candidateFeatures } from '../../src/engine/candidate-features.js';
import { buildHead } from '../../src/heads/training/build-head.js';
import { collectHeadData, type CollectModels, promptTemperature } from '../../src/heads/training/collect.js';
import { aucScore, brierScore, calibration, reliabilityTable } from '../../src/heads/training/eval.js';
import { FEATURES, HeadData, isValidationRecord, LABELS, RECORDS } from '../../src/heads/training/head-data.js';
import { readHeadFile } from '../../src/heads/runtime/head-file.js';
import { draftIdentity, preparedDraftBytes } from '../../src/heads/runtime/prepare-draft.js';
import { selectThreshold, simulate } from '../../src/heads/training/threshold.js';
import { type TrainingPrompt, trainingPrompts } from '../../src/heads/training/training-prompts.js';
import { writeFixturePair } from '../../src/testing/decoder-fixture.js';
import { PACKAGE_ROOT } from '../../src/paths.js';

const root = mkdtempSync(join(tmpdir(), 'specd-heads-collect-'));
after(() => rmSync(root, { recursive: true, force: true }));

const PROMPTS: TrainingPrompt[] = ['hi there', 'add 2 and 3', 'name a color', 'why is the sky blue?', 'count to five', 'say no', 'a b c d'].map((content, i) => ({
  id: `test/${i}`,
  messages: [{ role: 'user', content }],
}));
const SETTINGS = { maxTokens: 24, temperatures: [0.8, 0], mixRatio: 0.15, seed: 5, sources: ['test'] };

describe('collection on a fixture pair', () => {
  let pair: ModelPair;
  let models: CollectModels;
  let dirA: string;

  before(async () => {
    // Draft and target of one family with a shared embedding seed are too unlike to accept much;
    // what matters here is that the labels are right, whatever their values.
    const p = writeFixturePair(join(root, 'pair'), { style: 'llama', eosTokenId: 5 });
    pair = await ModelPair.load({ target: p.targetDir, draft: p.draftDir, threads: 1, draftThreads: 1 });
    const draft = pair.draft!;
    const hiddenDraft = await DecoderModel.load(p.draftDir, { threads: 1, model: preparedDraftBytes(draft.info.onnxPath, readModelDir(p.draftDir).config.hidden) });
    models = { target: pair.target, draft, hiddenDraft, tokenizer: pair.tokenizer, targetIdentity: draftIdentity(p.targetDir), draftIdentity: draftIdentity(p.draftDir) };
    dirA = join(root, 'data-a');
    const result = await collectHeadData(models, { out: dirA, prompts: PROMPTS, count: PROMPTS.length, measureCosts: true, ...SETTINGS });
    assert.equal(result.records, PROMPTS.length);
  });
  after(async () => {
    await models?.hiddenDraft.release();
    await pair?.release();
  });

  test('labels are in [0, 1] and equal min(1, p/q) (greedy: argmax agreement) computed independently; features are the hidden state before each candidate and its features', async () => {
    const data = HeadData.open(dirA);
    assert.ok(data.rows > 50, `${data.rows} rows`);
    for (const a of data.labels) assert.ok(a >= 0 && a <= 1, `label ${a}`);
    let mixed = 0;
    let positions = 0;
    const V = pair.target.info.vocabSize;
    const width = data.width;
    const labelsSeen = { greedy: 0, greedyAccepted: 0, sampled: 0 };
    for (const rec of data.records) {
      const T = rec.temperature;
      assert.equal(T, promptTemperature(SETTINGS.temperatures, rec.index), 'each prompt at its temperature of the list');
      const ids = pair.tokenizer.encodeChat(PROMPTS[rec.index]!.messages);
      assert.equal(ids.length, rec.prompt_tokens);
      assert.equal(rec.response.length, rec.draft.length);
      assert.equal(rec.mixed.length, rec.response.length);
      assert.equal(rec.candidates.length, rec.response.length);
      assert.equal(rec.rows, rec.response.length, 'one row per position');
      const eos = pair.target.info.eosTokenIds;
      rec.response.slice(0, -1).forEach((t) => assert.ok(!eos.includes(t), 'EOS only at the end'));
      if (rec.finish === 'stop') assert.ok(eos.includes(rec.response.at(-1)!), 'a finished response ends with EOS');
      else assert.equal(rec.response.length, SETTINGS.maxTokens);
      // Independent recomputation, one token at a time: the draft teacher-forced on the
      // response, and both models on the mixed sequence.
      const dc = models.draft.newCache();
      const tc = pair.target.newCache();
      const zc = models.hiddenDraft.newCache();
      let ld = await models.draft.forward(dc, ids);
      let lt = await pair.target.forward(tc, ids);
      let z = await models.hiddenDraft.forwardWithHidden(zc, ids);
      for (let i = 0; i < rec.response.length; i++) {
        const d = rec.draft[i]!;
        if (T === 0) assert.equal(d, argmax(ld.subarray(ld.length - V)), 'greedy: the draft token is the argmax');
        else assert.ok(softmax(ld.subarray(ld.length - V), T)[d]! > 0, 'the draft token was sampled from q');
        const isMixed = rec.mixed[i] === '1';
        positions++;
        if (isMixed) mixed++;
        const draftRow = z.logits.subarray(z.logits.length - V);
        const targetRow = lt.subarray(lt.length - V);
        const y = rec.candidates[i]!;
        let label: number;
        if (T === 0) {
          assert.equal(y, argmax(draftRow), 'greedy: the candidate is the draft argmax on the mixed sequence');
          label = argmax(targetRow) === y ? 1 : 0;
          labelsSeen.greedy++;
          labelsSeen.greedyAccepted += label;
        } else {
          const pz = softmax(targetRow, T);
          const qz = softmax(draftRow, T);
          assert.ok(qz[y]! > 0, 'the candidate was sampled from q on the mixed sequence');
          label = Math.min(1, pz[y]! / qz[y]!);
          labelsSeen.sampled++;
        }
        const row = rec.row_start + i;
        assert.ok(Math.abs(data.labels[row]! - label) < 1e-4, `${rec.id} position ${i}: label ${data.labels[row]} vs ${label}`);
        const f = data.readFeatures(row, 1);
        const want = [...z.hidden!.subarray(z.hidden!.length - width), ...candidateFeatures(draftRow, y, T)];
        assert.equal(f.length, width + CANDIDATE_FEATURES);
        f.forEach((x, j) => assert.ok(Math.abs(x - want[j]!) < 1e-4, `${rec.id} position ${i}: feature ${j}: ${x} vs ${want[j]}`));
        const next = isMixed ? rec.response[i]! : d;
        ld = await models.draft.forward(dc, [rec.response[i]!]);
        lt = await pair.target.forward(tc, [next]);
        z = await models.hiddenDraft.forwardWithHidden(zc, [next]);
      }
    }
    assert.ok(mixed > 0.05 * positions && mixed < 0.3 * positions, `mixed ${mixed} of ${positions}`);
    assert.ok(labelsSeen.sampled > 20 && labelsSeen.greedy > 20, JSON.stringify(labelsSeen));
    assert.ok(labelsSeen.greedyAccepted > 0 && labelsSeen.greedyAccepted < labelsSeen.greedy, `greedy labels are not all alike: ${JSON.stringify(labelsSeen)}`);
    const costs = data.manifest.costs!;
    assert.ok(costs.draft_step_ms >= 0 && costs.draft_round_ms! >= 0 && costs.draft_step_ms + costs.draft_round_ms! > 0);
    assert.equal(costs.target_ms.length, 9, 'verification of 0..8 candidates');
    assert.ok(costs.target_ms.every((t) => t > 0));
  });

  test('an interrupted collection resumes to the same bytes', async () => {
    const dirB = join(root, 'data-b');
    await collectHeadData(models, { out: dirB, prompts: PROMPTS, count: 3, measureCosts: false, ...SETTINGS });
    // A torn write: rows without their record, and half a record line.
    appendFileSync(join(dirB, FEATURES), new Uint8Array(100));
    appendFileSync(join(dirB, LABELS), new Uint8Array(8));
    appendFileSync(join(dirB, RECORDS), '{"index":3,"id":"te');
    const resumed = await collectHeadData(models, { out: dirB, prompts: PROMPTS, count: PROMPTS.length, measureCosts: false, ...SETTINGS });
    assert.equal(resumed.added, PROMPTS.length - 3);
    for (const f of [FEATURES, LABELS, RECORDS]) assert.deepEqual(readFileSync(join(dirB, f)), readFileSync(join(dirA, f)), f);
    await assert.rejects(collectHeadData(models, { out: dirB, prompts: PROMPTS, count: 2, measureCosts: false, ...SETTINGS, temperatures: [1] }), /other settings.temperatures/);
  });

  test('a head trains on the data and is written with its metadata', async () => {
    const out = join(root, 'fixture');
    const result = await buildHead(dirA, out, { epochs: 2, batchSize: 32, valFraction: 0.3, seed: 1, threads: 1 });
    assert.ok(existsSync(result.onnxPath) && existsSync(result.jsonPath));
    const file = readHeadFile(result.onnxPath);
    const meta = file.meta;
    assert.equal(meta.architecture.width, 16);
    assert.equal(meta.draft.onnx_sha256, models.draftIdentity.onnx_sha256);
    assert.ok(meta.recommended_threshold > 0 && meta.recommended_threshold < 1);
    assert.deepEqual(
      meta.recommended_thresholds?.map((t) => t.temperature),
      [0, 0.8],
      'a threshold per decoding temperature of the data',
    );
    assert.ok(meta.recommended_thresholds!.every((t) => t.threshold > 0 && t.threshold < 1));
    const training = meta.training as { loss: { epochs: unknown[] }; data: { rows: number } };
    assert.equal(training.loss.epochs.length, 2);
    assert.equal(training.data.rows, HeadData.open(dirA).rows);
    const cal = meta.calibration as { brier: number; reliability: unknown[] };
    assert.ok(cal.brier >= 0 && cal.brier <= 1);
    assert.equal(cal.reliability.length, 10);
    const byTemperature = (meta.calibration as { by_temperature: { temperature: number; rows: number }[] }).by_temperature;
    assert.deepEqual(byTemperature.map((b) => b.temperature), [0, 0.8]);
    assert.equal(byTemperature[0]!.rows + byTemperature[1]!.rows, (meta.calibration as { rows: number }).rows);
  });

  test('the CLI: head train and head eval', () => {
    const cli = join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js');
    const out = join(root, 'cli');
    execFileSync(process.execPath, [cli, 'head', 'train', '--data', dirA, '--out', out, '--epochs', '1', '--val-fraction', '0.3', '--seed', '1', '--threads', '1'], { stdio: 'pipe' });
    const text = execFileSync(process.execPath, [cli, 'head', 'eval', '--head', `${out}.head.onnx`, '--data', dirA, '--split', 'all', '--json', join(root, 'eval.json')], { encoding: 'utf8' });
    assert.match(text, /Brier/);
    assert.match(text, /AUC/);
    assert.match(text, /recommended threshold/);
    assert.match(text, /per decoding temperature/);
    assert.match(text, /greedy: 0\.\d+, T = 0\.8: 0\.\d+/);
    const evaluation = JSON.parse(readFileSync(join(root, 'eval.json'), 'utf8')) as { calibration: { rows: number } };
    assert.ok(evaluation.calibration.rows > 0);
  });

  test('the CLI: head collect takes the temperatures in turn; a bad list is one line and exit 1', () => {
    const cli = join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js');
    const out = join(root, 'cli-collect');
    const pairArgs = ['--target', join(root, 'pair', 'target'), '--draft', join(root, 'pair', 'draft'), '--threads', '1'];
    execFileSync(process.execPath, [cli, 'head', 'collect', '--out', out, '--prompts', '3', '--max-tokens', '4', '--temperatures', '0,0.5', ...pairArgs], { stdio: 'pipe' });
    const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')) as { settings: { temperatures: number[] } };
    assert.deepEqual(manifest.settings.temperatures, [0, 0.5]);
    assert.deepEqual(
      HeadData.open(out).records.map((r) => r.temperature),
      [0, 0.5, 0.5],
    );
    for (const bad of ['0,,1', '0.7,x', '-1']) {
      const run = spawnSync(process.execPath, [cli, 'head', 'collect', '--out', join(root, 'cli-bad'), '--temperatures', bad, ...pairArgs], { encoding: 'utf8' });
      assert.notEqual(run.status, 0, bad);
      assert.match(run.stderr, /temperatures/, bad);
      assert.equal(run.stderr.trim().split('\n').length, 1, `one line: ${run.stderr}`);
      assert.equal(existsSync(join(root, 'cli-bad')), false, 'nothing written');
    }
  });
});

describe('metrics and the threshold simulation', () => {
  test('Brier score, AUC and reliability on known inputs', () => {
    assert.equal(brierScore([0.5, 1], [1, 1]), 0.125);
    assert.equal(aucScore([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]), 0.75);
    assert.equal(aucScore([0.2, 0.2], [1, 0]), 0.5, 'ties count half');
    // Soft labels: a row with label 0.5 is half positive, half negative.
    assert.equal(aucScore([0.1, 0.9], [0.5, 0.5]), 0.5);
    const table = reliabilityTable([0.05, 0.15, 0.12, 0.95], [0, 1, 0, 1], 10);
    assert.equal(table[1]!.count, 2);
    assert.ok(Math.abs(table[1]!.mean_predicted - 0.135) < 1e-9);
    assert.equal(table[1]!.mean_label, 0.5);
    const cal = calibration([0.9, 0.9, 0.1, 0.1], [1, 1, 0, 0]);
    assert.ok(Math.abs(cal.ece - 0.1) < 1e-9);
    assert.ok(cal.brier_skill > 0.9);
  });

  test('each source of the training prompts is collected at every temperature, in equal parts', () => {
    const prompts = trainingPrompts(0);
    for (let m = 1; m <= 6; m++) {
      const temperatures = Array.from({ length: m }, (_, i) => i / 4);
      const count = new Map<string, number>();
      for (let i = 0; i < 240; i++) {
        const key = `${prompts[i]!.id.split('/')[0]} at ${promptTemperature(temperatures, i)}`;
        count.set(key, (count.get(key) ?? 0) + 1);
      }
      assert.equal(count.size, 2 * m, `${m} temperatures: ${[...count.keys()].join(', ')}`);
      const n = [...count.values()];
      assert.ok(Math.max(...n) - Math.min(...n) <= 240 / (2 * m) / 2, `${m} temperatures: ${n.join(' ')}`);
    }
    assert.deepEqual(Array.from({ length: 8 }, (_, i) => promptTemperature([0, 1], i)), [0, 1, 1, 0, 0, 1, 1, 0]);
  });

  test('the validation split is by prompt and stable', () => {
    const val = Array.from({ length: 1000 }, (_, i) => isValidationRecord(i, 0.1, 0)).filter(Boolean).length;
    assert.ok(val > 60 && val < 140, `${val} of 1000`);
    assert.equal(isValidationRecord(17, 0.1, 3), isValidationRecord(17, 0.1, 3));
  });

  test('simulation: every candidate accepted gives K + 1 tokens per round; specdec++ follows the head', () => {
    const costs = { draft_step_ms: 1, target_ms: [10, 10, 10, 10, 10, 10, 10, 10, 10] };
    const seq = { labels: new Float32Array(280).fill(1), probs: new Float32Array(280).fill(0.9) }; // 280 = whole rounds of 5 and of 8 tokens
    const fixed = simulate([seq], { policy: 'fixed', k: 4 }, costs);
    assert.equal(fixed.acceptance_rate, 1);
    assert.equal(fixed.tokens / fixed.rounds, 5);
    // 1 - 0.9^s > 0.5 first at s = 7; the simulation keeps that candidate (as when sampling).
    const sd = simulate([seq], { policy: 'specdec++', threshold: 0.5, kMin: 2, kMax: 16 }, costs);
    assert.equal(sd.mean_drafted_per_round, 7);
    // A perfectly informative head (it says 0 exactly where the label is 0) beats every fixed K
    // when rejections come at random places.
    const rng = new Rng(4);
    const labels = Float32Array.from({ length: 2000 }, () => (rng.next() < 0.8 ? 1 : 0));
    const informed = selectThreshold([{ labels, probs: labels }], costs, { kMin: 1, kMax: 16 });
    assert.ok(informed.simulated_gain_over_best_fixed > 1, `gain ${informed.simulated_gain_over_best_fixed}`);
  });
});
