/**
 * Engine odds and ends: seeded reproducibility, policy parsing, model loading errors, the
 * context limit and text generation with stop strings.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ModelLoadError, RequestError } from '../../src/errors.js';
import { DecoderModel } from '../../src/engine/model.js';
import { ModelPair } from '../../src/pair/model-pair.js';
import { GREEDY, type SamplingParams } from '../../src/engine/sampling.js';
import { ContextLengthError, type GenerateOptions } from '../../src/engine/speculative.js';
import { parsePolicy, PolicySpecError, policyLabel, type PolicySpec } from '../../src/engine/stop-policy.js';
import { generateText } from '../../src/engine/text-generation.js';
import { writeFixtureModelDir, writeFixturePair } from '../../src/testing/decoder-fixture.js';
import { GraphBuilder } from '../../src/onnx/graph-builder.js';
import { DATASETS_DIR } from '../../src/paths.js';

const root = mkdtempSync(join(tmpdir(), 'specd-'));
after(() => rmSync(root, { recursive: true, force: true }));

const T1: SamplingParams = { temperature: 1, topK: 0, topP: 1 };

function gsm8kQuestion(i: number): string {
  const line = readFileSync(join(DATASETS_DIR, 'gsm8k', 'test.jsonl'), 'utf8').split('\n')[i]!;
  return (JSON.parse(line) as { question: string }).question;
}

// ---- bundled pair: seeds and text generation ------------------------------------------------

describe('bundled specd-pair', () => {
  let pair: ModelPair;
  let prompt: number[];

  before(async () => {
    pair = await ModelPair.load({ threads: 2, draftThreads: 1 });
    prompt = pair.tokenizer.encodeChat([{ role: 'user', content: gsm8kQuestion(1) }]);
  });
  after(() => pair?.release());

  const gen = async (opts: Partial<GenerateOptions>) => {
    const g = pair.decoder.start(prompt, { maxTokens: 48, sampling: T1, policy: { policy: 'fixed', k: 4 }, eosTokenIds: [], ...opts });
    const tokens = [...(await g.run())];
    return { tokens, stats: g.stats };
  };

  test('the same seed gives the same sampled output; another seed a different one', async () => {
    for (const policy of [{ policy: 'fixed', k: 4 }, { policy: 'none' }, { policy: 'confidence', pMin: 0.5, kMax: 8 }] as PolicySpec[]) {
      const label = policyLabel(policy);
      const a = await gen({ seed: 7, policy });
      const b = await gen({ seed: 8, policy });
      const again = await gen({ seed: 7, policy });
      assert.equal(a.tokens.length, 48, label);
      assert.deepEqual(again.tokens, a.tokens, `${label}: seed 7 twice`);
      assert.notDeepEqual(b.tokens, a.tokens, `${label}: seeds 7 and 8 agree`);
      if (policy.policy === 'fixed') assert.ok(a.stats.accepted_tokens > 0 && a.stats.draft_tokens > a.stats.accepted_tokens, `${label}: accept and reject paths`);
    }
    // Large seeds are distinct too (the high bits are mixed in).
    const big1 = await gen({ seed: 2 ** 32 + 7 });
    const big2 = await gen({ seed: 7 });
    assert.notDeepEqual(big1.tokens, big2.tokens, 'seed 2^32 + 7 vs 7');
  });

  test('with top_k / top_p the same seed reproduces', async () => {
    const sampling: SamplingParams = { temperature: 0.7, topK: 20, topP: 0.9 };
    const a = await gen({ seed: 3, sampling });
    const b = await gen({ seed: 3, sampling });
    assert.deepEqual(a.tokens, b.tokens);
  });

  test('generateText stops before a stop string (finish_reason stop)', async () => {
    const messages = [{ role: 'user', content: gsm8kQuestion(2) }];
    const base = { maxTokens: 64, sampling: GREEDY, policy: { policy: 'fixed', k: 4 } as PolicySpec };
    const full = await generateText(pair, { messages }, base);
    assert.equal(full.finish_reason, 'length');
    assert.equal(full.token_ids.length, 64);
    assert.equal(full.text, pair.tokenizer.decode(full.token_ids, { skipSpecialTokens: true }));
    // A 3-character stop string that first occurs well inside the text.
    const at = [...Array(full.text.length - 3).keys()].find((i) => i >= 15 && full.text.indexOf(full.text.slice(i, i + 3)) === i);
    assert.ok(at !== undefined, `no usable stop string in ${JSON.stringify(full.text)}`);
    const stop = full.text.slice(at, at + 3);

    const deltas: string[] = [];
    const r = await generateText(pair, { messages }, { ...base, stop: ['never-occurs', stop] }, (d) => deltas.push(d.text));
    assert.equal(r.finish_reason, 'stop');
    assert.equal(r.text, full.text.slice(0, at), `stop ${JSON.stringify(stop)}`);
    assert.ok(!r.text.includes(stop));
    assert.equal(deltas.join(''), r.text, 'streamed deltas add up to the text');
    assert.ok(r.token_ids.length < 64);
    assert.deepEqual(r.token_ids, full.token_ids.slice(0, r.token_ids.length), 'greedy tokens up to the stop are unchanged');
    assert.equal(r.prompt_tokens, pair.tokenizer.encodeChat(messages).length);

    // The earliest of several stop strings wins; a stop string that never occurs changes nothing.
    const later = full.text.slice(at + 5, at + 9);
    const r2 = await generateText(pair, { messages }, { ...base, stop: [later, stop] });
    assert.equal(r2.text, full.text.slice(0, Math.min(at, full.text.indexOf(later))));
    const r3 = await generateText(pair, { messages }, { ...base, stop: ['\u0000never'] });
    assert.equal(r3.finish_reason, 'length');
    assert.equal(r3.text, full.text);
  });

  test('generateText with sampling: same seed, same text; stop cuts the same text', async () => {
    const input = { prompt: 'Question: what is 12 * 7?\nAnswer:' };
    const base = { maxTokens: 48, sampling: T1, seed: 11, policy: { policy: 'fixed', k: 3 } as PolicySpec, eosTokenIds: [] };
    const a = await generateText(pair, input, base);
    const b = await generateText(pair, input, base);
    assert.equal(a.text, b.text);
    assert.equal(a.prompt_tokens, pair.tokenizer.encode(input.prompt).length);
    const at = [...Array(a.text.length - 2).keys()].find((i) => i >= 10 && a.text.indexOf(a.text.slice(i, i + 2)) === i);
    assert.ok(at !== undefined, JSON.stringify(a.text));
    const c = await generateText(pair, input, { ...base, stop: [a.text.slice(at, at + 2)] });
    assert.equal(c.finish_reason, 'stop');
    assert.equal(c.text, a.text.slice(0, at));
  });

  test('generateText ends with finish_reason stop at EOS, without the EOS text', async () => {
    const r = await generateText(pair, { messages: [{ role: 'user', content: 'Name a color.' }] }, { maxTokens: 64, sampling: GREEDY, policy: { policy: 'fixed', k: 4 } });
    assert.equal(r.finish_reason, 'stop');
    assert.ok(!r.text.includes('<|im_end|>') && r.text.length > 10, JSON.stringify(r.text));
    assert.ok(!r.token_ids.includes(258));
  });
});

// ---- policy parsing ----------------------------------------------------------------------

describe('parsePolicy', () => {
  test('accepts none, fixed:K, confidence:P_MIN and the defaults', () => {
    assert.deepEqual(parsePolicy('none'), { policy: 'none' });
    assert.deepEqual(parsePolicy('fixed:4'), { policy: 'fixed', k: 4 });
    assert.deepEqual(parsePolicy('fixed:1'), { policy: 'fixed', k: 1 });
    assert.deepEqual(parsePolicy('fixed:32'), { policy: 'fixed', k: 32 });
    assert.deepEqual(parsePolicy('fixed'), { policy: 'fixed', k: 4 });
    assert.deepEqual(parsePolicy(' fixed:8 '), { policy: 'fixed', k: 8 });
    assert.deepEqual(parsePolicy('confidence:0.6'), { policy: 'confidence', pMin: 0.6, kMax: 16 });
    assert.deepEqual(parsePolicy('confidence:0'), { policy: 'confidence', pMin: 0, kMax: 16 });
    assert.deepEqual(parsePolicy('confidence:1'), { policy: 'confidence', pMin: 1, kMax: 16 });
    assert.deepEqual(parsePolicy('confidence'), { policy: 'confidence', pMin: 0.6, kMax: 16 });
    for (const text of ['none', 'fixed:4', 'confidence:0.6']) assert.equal(policyLabel(parsePolicy(text)), text);
  });

  test('rejects bad specs with a message naming the problem', () => {
    const bad: [string, RegExp][] = [
      ['fixed:0', /k must be an integer in \[1, 32\], got 0/],
      ['fixed:33', /k must be an integer in \[1, 32\], got 33/],
      ['fixed:2.5', /k must be an integer.*2\.5/],
      ['fixed:-1', /k must be an integer.*-1/],
      ['fixed:abc', /bad policy "fixed:abc": K must be a number/],
      ['fixed:Infinity', /K must be a number/],
      ['confidence:1.5', /p_min must be a number in \[0, 1\], got 1\.5/],
      ['confidence:-0.1', /p_min must be a number in \[0, 1\]/],
      ['confidence:high', /bad policy "confidence:high": p_min must be a number/],
      ['none:3', /none takes no value/],
      ['fixed:1:2', /bad policy "fixed:1:2": expected NAME or NAME:VALUE/],
      ['greedy', /unknown policy "greedy".*expected one of none, fixed, confidence/],
      ['', /unknown policy ""/],
      ['Fixed:4', /unknown policy "Fixed"/],
    ];
    for (const [text, message] of bad) {
      assert.throws(
        () => parsePolicy(text),
        (err: Error) => {
          assert.ok(err instanceof PolicySpecError, `${JSON.stringify(text)}: ${err.name}`);
          assert.match(err.message, message, JSON.stringify(text));
          return true;
        },
        JSON.stringify(text),
      );
    }
  });
});

// ---- model loading errors ------------------------------------------------------------------

/** Asserts that `promise` rejects with a ModelLoadError whose message matches and whose `file` ends as given. */
async function assertLoadError(promise: Promise<unknown>, message: RegExp, file: string | RegExp, field?: string): Promise<ModelLoadError> {
  let caught: unknown;
  try {
    await promise;
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof ModelLoadError, `expected a ModelLoadError, got ${caught instanceof Error ? `${caught.name}: ${caught.message}` : String(caught)}`);
  assert.match(caught.message, message);
  if (typeof file === 'string') assert.ok(caught.file.endsWith(file), `file ${caught.file} should end with ${file}`);
  else assert.match(caught.file, file);
  if (field !== undefined) assert.equal(caught.field, field);
  return caught;
}

describe('model loading errors', () => {
  const base = join(root, 'base');
  let n = 0;
  /** A fresh copy of the base fixture directory, edited by `edit`. */
  const variant = (edit: (dir: string) => void): string => {
    const dir = join(root, `variant-${n++}`);
    cpSync(base, dir, { recursive: true });
    edit(dir);
    return dir;
  };
  const editConfig = (dir: string, fn: (cfg: Record<string, unknown>) => void) => {
    const path = join(dir, 'config.json');
    const cfg = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
    fn(cfg);
    writeFileSync(path, JSON.stringify(cfg));
  };

  before(() => {
    writeFixtureModelDir(base, { style: 'llama', layers: 1, vocabSize: 40 });
  });

  test('the base fixture loads', async () => {
    const m = await DecoderModel.load(base, { threads: 1 });
    assert.equal(m.info.vocabSize, 40);
    await m.release();
  });

  test('missing directory', async () => {
    const dir = join(root, 'does-not-exist');
    await assertLoadError(DecoderModel.load(dir), /model directory not found: .*does-not-exist/, 'does-not-exist');
    await assertLoadError(ModelPair.load({ target: dir }), /does-not-exist/, /does-not-exist/);
  });

  test('missing config.json', async () => {
    const dir = variant((d) => unlinkSync(join(d, 'config.json')));
    await assertLoadError(DecoderModel.load(dir), /missing .*config\.json/, 'config.json');
  });

  test('missing onnx/model.onnx', async () => {
    const dir = variant((d) => unlinkSync(join(d, 'onnx', 'model.onnx')));
    await assertLoadError(DecoderModel.load(dir), /missing .*onnx\/model\.onnx/, join('onnx', 'model.onnx'));
    // Asking for a variant that is not there names that file.
    await assertLoadError(DecoderModel.load(base, { dtype: 'fp16' }), /onnx\/model_fp16\.onnx/, 'model_fp16.onnx');
    await assertLoadError(DecoderModel.load(base, { dtype: 'fp7' }), /unknown dtype "fp7"/, /variant|base/, 'dtype');
  });

  test('invalid JSON in config.json', async () => {
    const dir = variant((d) => writeFileSync(join(d, 'config.json'), '{"vocab_size": 40,'));
    await assertLoadError(DecoderModel.load(dir), /config\.json is not valid JSON/, 'config.json');
    const arr = variant((d) => writeFileSync(join(d, 'config.json'), '[1, 2]'));
    await assertLoadError(DecoderModel.load(arr), /config\.json is not valid JSON: not a JSON object/, 'config.json');
  });

  test('config.json without vocab_size, or with a bad one', async () => {
    const dir = variant((d) => editConfig(d, (c) => delete c['vocab_size']));
    await assertLoadError(DecoderModel.load(dir), /config\.json: missing field vocab_size/, 'config.json', 'vocab_size');
    const neg = variant((d) => editConfig(d, (c) => (c['vocab_size'] = -5)));
    await assertLoadError(DecoderModel.load(neg), /field vocab_size must be a positive integer, got -5/, 'config.json', 'vocab_size');
  });

  test('config.json that disagrees with the graph', async () => {
    const dir = variant((d) => editConfig(d, (c) => (c['num_hidden_layers'] = 3)));
    await assertLoadError(DecoderModel.load(dir), /config\.json: 3 layers, but .*model\.onnx has 1/, 'config.json', 'num_hidden_layers');
  });

  test('an eos_token_id outside the vocabulary', async () => {
    const dir = variant((d) => writeFileSync(join(d, 'generation_config.json'), JSON.stringify({ eos_token_id: [2, 40] })));
    await assertLoadError(DecoderModel.load(dir), /generation_config\.json: eos_token_id \[2,40\] is not a token id below vocab_size 40/, 'generation_config.json', 'eos_token_id');
  });

  test('an ONNX graph that is not a decoder', async () => {
    const dir = variant((d) => {
      const g = new GraphBuilder({ opset: 17 });
      const x = g.input('x', 'float32', ['n']);
      g.output(g.op('Identity', [x]), 'y', 'float32', ['n']);
      g.save(join(d, 'onnx', 'model.onnx'));
    });
    const err = await assertLoadError(DecoderModel.load(dir), /model\.onnx: not a decoder/, join('onnx', 'model.onnx'));
    for (const part of ['input input_ids', 'output logits', 'past_key_values']) assert.ok(err.message.includes(part), `${err.message} should name ${part}`);
  });

  test('an ONNX file that is not a model at all', async () => {
    const dir = variant((d) => writeFileSync(join(d, 'onnx', 'model.onnx'), 'not a protobuf'));
    await assertLoadError(DecoderModel.load(dir), /cannot load .*model\.onnx/, join('onnx', 'model.onnx'));
  });

  test('draft and target with different tokenizers of different sizes: refused, both sizes named', async () => {
    const target = join(root, 'vocab-target');
    const draft = join(root, 'vocab-draft');
    writeFixtureModelDir(target, { style: 'llama', layers: 1, vocabSize: 48, seed: 1 });
    writeFixtureModelDir(draft, { style: 'llama', layers: 1, vocabSize: 40, seed: 2 });
    const err = await assertLoadError(
      ModelPair.load({ target, draft, threads: 1 }),
      /tokenizers differ: .*vocab-draft.tokenizer\.json has 40 tokens \(vocab_size 40\), .*vocab-target.tokenizer\.json has 48 \(vocab_size 48\)/,
      join('vocab-draft', 'tokenizer.json'),
    );
    assert.ok(err.message.includes(draft));
  });

  test('draft and target with different tokenizers (same vocabulary size)', async () => {
    const p = writeFixturePair(join(root, 'tok-pair'), { vocabSize: 40 });
    // Swap the ids of two characters in the draft's tokenizer.
    const path = join(p.draftDir, 'tokenizer.json');
    const tok = JSON.parse(readFileSync(path, 'utf8')) as { model: { vocab: Record<string, number> } };
    const vocab = tok.model.vocab;
    [vocab['e'], vocab['t']] = [vocab['t']!, vocab['e']!];
    writeFileSync(path, JSON.stringify(tok));
    await assertLoadError(ModelPair.load({ target: p.targetDir, draft: p.draftDir, threads: 1 }), /tokenizers differ: .*draft.*tokenizer\.json/, join('draft', 'tokenizer.json'));
    // Unedited, the pair loads.
    const ok = writeFixturePair(join(root, 'tok-pair-ok'), { vocabSize: 40 });
    const pair = await ModelPair.load({ target: ok.targetDir, draft: ok.draftDir, threads: 1 });
    await pair.release();
  });
});

// ---- context limit ------------------------------------------------------------------------

describe('context limit', () => {
  let pair: ModelPair;
  const CONTEXT = 32;
  const prompt = (n: number) => Array.from({ length: n }, (_, i) => 4 + ((i * 7) % 40));

  before(async () => {
    // GPT-2 style: positions past the table would be an out-of-range Gather, not silently wrong.
    // The draft's context is shorter than the target's.
    const p = writeFixturePair(join(root, 'ctx'), { style: 'gpt2', target: { maxPositions: CONTEXT }, draft: { maxPositions: 24 } });
    pair = await ModelPair.load({ target: p.targetDir, draft: p.draftDir, threads: 1 });
  });
  after(() => pair?.release());

  test('a prompt as long as the context is a ContextLengthError', () => {
    assert.equal(pair.decoder.contextLength, CONTEXT);
    for (const n of [CONTEXT, CONTEXT + 5]) {
      assert.throws(
        () => pair.decoder.start(prompt(n), { maxTokens: 4, sampling: GREEDY, policy: { policy: 'fixed', k: 4 } }),
        (err: Error) => err instanceof ContextLengthError && err.message.includes(`${n} tokens`) && err.message.includes(`${CONTEXT}`),
      );
    }
    assert.throws(() => pair.decoder.start([], { maxTokens: 4, sampling: GREEDY, policy: { policy: 'none' } }), RequestError);
  });

  test('generation stops at the end of the context, speculating up to it', async () => {
    for (const n of [CONTEXT - 1, CONTEXT - 2, 26, 23, 20, 12]) {
      const opts = { maxTokens: 100, sampling: GREEDY, eosTokenIds: [] as number[] };
      const ref = pair.decoder.start(prompt(n), { ...opts, policy: { policy: 'none' } });
      await ref.run();
      assert.equal(ref.tokenIds.length, CONTEXT - n, `prompt ${n}`);
      assert.equal(ref.finishReason, 'length');
      for (const k of [1, 3, 8]) {
        const g = pair.decoder.start(prompt(n), { ...opts, policy: { policy: 'fixed', k } });
        await g.run();
        assert.deepEqual(g.tokenIds, ref.tokenIds, `prompt ${n}, fixed:${k}`);
        assert.equal(g.finishReason, 'length');
      }
      for (const seed of [1, 2]) {
        const g = pair.decoder.start(prompt(n), { ...opts, sampling: T1, seed, policy: { policy: 'fixed', k: 8 } });
        await g.run();
        assert.equal(g.tokenIds.length, CONTEXT - n, `sampled, prompt ${n}`);
      }
    }
  });
});
