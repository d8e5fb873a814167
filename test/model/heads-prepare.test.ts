/**
 * Draft preparation (`specd models prepare-draft`): the lm_head's activation becomes the
 * `last_hidden_state` output and the logits stay exactly the same, for GPT-2 (tied lm_head
 * behind a Transpose) and Llama fixtures, a draft with external data, and the bundled draft;
 * in memory and on disk.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { DecoderModel, HIDDEN_OUTPUT } from '../../src/engine/model.js';
import { readModelDir } from '../../src/engine/model-dir.js';
import {
  addHiddenStateOutput,
  compareDraftLogits,
  draftIdentity,
  findHiddenState,
  prepareDraftDir,
  preparedDraftBytes,
} from '../../src/heads/runtime/prepare-draft.js';
import { SOURCE_SHA256_KEY } from '../../src/onnx/model-identity.js';
import { writeFixtureModelDir } from '../../src/testing/decoder-fixture.js';
import { GraphBuilder, readModel } from '../../src/onnx/graph-builder.js';
import { BUNDLED_DRAFT } from '../../src/paths.js';

const root = mkdtempSync(join(tmpdir(), 'specd-heads-prepare-'));
after(() => rmSync(root, { recursive: true, force: true }));

/** Logits of the original and of the in-memory prepared graph on the same tokens, prefill then steps. */
async function compareInMemory(dir: string, width: number): Promise<void> {
  const info = readModelDir(dir);
  const a = await DecoderModel.load(dir, { threads: 1 });
  const b = await DecoderModel.load(dir, { threads: 1, model: preparedDraftBytes(info.onnxPath, width) });
  assert.equal(a.hasHiddenState, false);
  assert.equal(b.hasHiddenState, true);
  const ca = a.newCache();
  const cb = b.newCache();
  for (const step of [[1, 4, 9, 7, 5], [11], [3], [8, 2]]) {
    const la = await a.forward(ca, step);
    const ob = await b.forwardWithHidden(cb, step);
    assert.deepEqual(Array.from(ob.logits), Array.from(la), 'logits unchanged');
    assert.equal(ob.hidden!.length, step.length * width, 'hidden state [tokens, width]');
  }
  await a.release();
  await b.release();
}

describe('prepare-draft', () => {
  const fixtures = [
    { label: 'GPT-2 fixture (tied lm_head: MatMul(h, Transpose(wte)))', options: { style: 'gpt2' as const, hidden: 32, heads: 4 } },
    { label: 'Llama fixture (untied lm_head)', options: { style: 'llama' as const, hidden: 24, heads: 4 } },
    { label: 'Llama fixture with external data and fp16 KV', options: { style: 'llama' as const, hidden: 16, heads: 2, externalData: true, kvDtype: 'float16' as const } },
  ];
  for (const { label, options } of fixtures) {
    test(`${label}: logits preserved in memory and on disk`, async () => {
      const dir = join(root, label.replace(/[^a-z0-9]+/gi, '-'));
      writeFixtureModelDir(dir, options);
      const model = readModel(readFileSync(readModelDir(dir).onnxPath));
      const site = findHiddenState(model);
      assert.equal(site.width, options.hidden);
      await compareInMemory(dir, options.hidden);

      const out = `${dir}-prepared`;
      const result = prepareDraftDir(dir, out);
      assert.equal(result.width, options.hidden);
      if (options.externalData) {
        assert.ok(existsSync(join(out, 'onnx', 'model.onnx_data')), 'external data copied as is');
        assert.deepEqual(readFileSync(join(out, 'onnx', 'model.onnx_data')), readFileSync(join(dir, 'onnx', 'model.onnx_data')));
      }
      const check = await compareDraftLogits(dir, out);
      assert.equal(check.maxAbsDiff, 0);
      assert.equal(check.width, options.hidden);
      // The prepared copy is the same draft (identity from the recorded source hash).
      assert.deepEqual(draftIdentity(out), draftIdentity(dir));
      const prepared = readModel(readFileSync(result.onnxPath));
      assert.equal(prepared.metadataProps.find((p) => p.key === SOURCE_SHA256_KEY)?.value, result.sourceSha256);
      assert.equal(prepared.graph!.node!.length, model.graph!.node!.length, 'no node added');
      // Preparing twice is harmless.
      assert.equal(addHiddenStateOutput(prepared).graph!.output!.filter((o) => o.name === HIDDEN_OUTPUT).length, 1);
    });
  }

  test('the bundled draft: 128 wide, logits unchanged', async () => {
    await compareInMemory(BUNDLED_DRAFT, 128);
  });

  test('refuses an existing non-empty --out and the draft directory itself', () => {
    const dir = join(root, 'refuse');
    writeFixtureModelDir(dir, { style: 'gpt2' });
    assert.throws(() => prepareDraftDir(dir, dir), /differ/);
    const busy = join(root, 'busy');
    mkdirSync(busy);
    writeFixtureModelDir(join(busy, 'x'), { style: 'gpt2' });
    assert.throws(() => prepareDraftDir(dir, busy), /not empty/);
  });

  test('a graph whose logits do not come from a MatMul is refused with a message', () => {
    const g = new GraphBuilder();
    const x = g.input('x', 'float32', [1, 4]);
    g.output(g.op('Relu', [x]), 'logits', 'float32', [1, 4]);
    assert.throws(() => findHiddenState(readModel(g.toBytes())), /expected MatMul, Gemm or MatMulNBits/);
  });
});
