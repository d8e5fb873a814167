import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Template } from '@huggingface/jinja';
import { Tokenizer } from '@huggingface/tokenizers';
import * as ort from 'onnxruntime-node';
import {
  FIXTURE_IM_END_ID,
  FIXTURE_IM_START_ID,
  FIXTURE_SPECIAL_TOKENS,
  buildDecoderFixture,
  writeFixtureModelDir,
  writeFixturePair,
  type DecoderFixtureConfig,
  type DecoderFixtureOptions,
} from '../../src/testing/decoder-fixture.js';
import {
  GraphBuilder,
  attr,
  float16BitsToFloat32,
  float32ToFloat16Bits,
  onnx,
  readModel,
  readModelFile,
  tensorProto,
} from '../../src/onnx/graph-builder.js';
import { maxAbsDiff } from '../support/tensors.js';

const root = mkdtempSync(join(tmpdir(), 'specd-onnx-fixtures-'));
after(() => rmSync(root, { recursive: true, force: true }));

// ---- helpers ---------------------------------------------------------------

type Past = Record<string, ort.Tensor>;

const i64 = (values: number[], dims: number[]) => new ort.Tensor('int64', BigInt64Array.from(values.map(BigInt)), dims);

function emptyPast(cfg: DecoderFixtureConfig, batch = 1): Past {
  const past: Past = {};
  const dims = [batch, cfg.kvHeads, 0, cfg.headDim];
  for (let i = 0; i < cfg.layers; i++) {
    for (const kind of ['key', 'value']) {
      past[`past_key_values.${i}.${kind}`] =
        cfg.kvDtype === 'float16' ? new ort.Tensor('float16', new Uint16Array(0), dims) : new ort.Tensor('float32', new Float32Array(0), dims);
    }
  }
  return past;
}

/** Renames `present.*` outputs to `past_key_values.*` inputs. */
function presentAsPast(cfg: DecoderFixtureConfig, out: ort.InferenceSession.ReturnType): Past {
  const past: Past = {};
  for (let i = 0; i < cfg.layers; i++) {
    for (const kind of ['key', 'value']) past[`past_key_values.${i}.${kind}`] = out[`present.${i}.${kind}`]!;
  }
  return past;
}

/** Keeps the first `n` sequence slots of each [1, heads, T, D] past tensor (KV rollback). */
function cropPast(past: Past, n: number): Past {
  const cropped: Past = {};
  for (const [name, t] of Object.entries(past)) {
    const [b, h, , d] = t.dims as [number, number, number, number];
    assert.equal(b, 1);
    const total = t.dims[2]!;
    const src = t.data as Float32Array | Uint16Array;
    const dst = new (src.constructor as Float32ArrayConstructor | Uint16ArrayConstructor)(h * n * d);
    for (let head = 0; head < h; head++) dst.set(src.subarray(head * total * d, head * total * d + n * d), head * n * d);
    cropped[name] = new ort.Tensor(t.type as 'float32' | 'float16', dst, [b, h, n, d]);
  }
  return cropped;
}

/** Feeds `ids` (one batch row) at absolute slots start.. on top of `past`; returns logits rows and the present. */
async function step(
  session: ort.InferenceSession,
  cfg: DecoderFixtureConfig,
  ids: number[],
  start: number,
  past: Past,
): Promise<{ logits: Float32Array; past: Past }> {
  const out = await session.run({
    input_ids: i64(ids, [1, ids.length]),
    attention_mask: i64(new Array(start + ids.length).fill(1), [1, start + ids.length]),
    position_ids: i64(ids.map((_, j) => start + j), [1, ids.length]),
    ...past,
  });
  assert.deepEqual(out['logits']!.dims, [1, ids.length, cfg.vocabSize]);
  return { logits: out['logits']!.data as Float32Array, past: presentAsPast(cfg, out) };
}

function assertClose(actual: Float32Array, expected: Float32Array, tol: number, what: string): void {
  const diff = maxAbsDiff(actual, expected);
  assert.ok(diff <= tol, `${what}: max |diff| ${diff} > ${tol}`);
}

function rows(logits: Float32Array, vocab: number): Float32Array[] {
  return Array.from({ length: logits.length / vocab }, (_, p) => logits.subarray(p * vocab, (p + 1) * vocab));
}

const argmax = (row: Float32Array) => row.indexOf(Math.max(...row));

function std(row: Float32Array): number {
  const mean = row.reduce((a, b) => a + b, 0) / row.length;
  return Math.sqrt(row.reduce((a, b) => a + (b - mean) ** 2, 0) / row.length);
}

// ---- decoder fixtures ------------------------------------------------------

const variants: { label: string; options: DecoderFixtureOptions }[] = [
  { label: 'gpt2', options: { style: 'gpt2', seed: 11 } },
  { label: 'llama (GQA 4q/2kv)', options: { style: 'llama', seed: 12, heads: 4, kvHeads: 2 } },
  { label: 'llama fp16 KV', options: { style: 'llama', seed: 13, kvDtype: 'float16' } },
  { label: 'gpt2 fp16 KV + external data', options: { style: 'gpt2', seed: 14, kvDtype: 'float16', externalData: true } },
  { label: 'llama external data, 1 layer, MHA', options: { style: 'llama', seed: 15, layers: 1, heads: 2, kvHeads: 2, hidden: 16, vocabSize: 40, externalData: true } },
];

const TOKENS = [5, 17, 9, 30, 2, 41, 23];

for (const { label, options } of variants) {
  describe(`decoder fixture: ${label}`, () => {
    const dir = join(root, label.replace(/[^a-z0-9]+/gi, '-'));
    let cfg: DecoderFixtureConfig;
    let session: ort.InferenceSession;
    let full: Float32Array;
    let fullPast: Past;
    const fp16 = options.kvDtype === 'float16';
    // fp16 KV: the same fp16 rounding applies in every path, but fp32 rounding noise can flip an fp16 ulp.
    const tol = fp16 ? 1e-3 : 1e-4;
    const ids = TOKENS.map((t) => t % (options.vocabSize ?? 48));

    before(async () => {
      cfg = writeFixtureModelDir(dir, options);
      session = await ort.InferenceSession.create(join(dir, 'onnx', 'model.onnx'));
      ({ logits: full, past: fullPast } = await step(session, cfg, ids, 0, emptyPast(cfg)));
    });

    test('has the transformers.js decoder interface', () => {
      const kvNames = (prefix: string) =>
        Array.from({ length: cfg.layers }, (_, i) => [`${prefix}.${i}.key`, `${prefix}.${i}.value`]).flat();
      assert.deepEqual(session.inputNames, ['input_ids', 'attention_mask', 'position_ids', ...kvNames('past_key_values')]);
      assert.deepEqual(session.outputNames, ['logits', ...kvNames('present')]);
      const meta = (list: readonly ort.InferenceSession.ValueMetadata[], name: string) => {
        const m = list.find((x) => x.name === name);
        assert.ok(m?.isTensor, name);
        return { type: m.type, shape: [...m.shape] };
      };
      const kvType = cfg.kvDtype;
      assert.deepEqual(meta(session.inputMetadata, 'input_ids'), { type: 'int64', shape: ['batch_size', 'sequence_length'] });
      assert.deepEqual(meta(session.inputMetadata, 'attention_mask'), { type: 'int64', shape: ['batch_size', 'total_sequence_length'] });
      assert.deepEqual(meta(session.inputMetadata, 'position_ids'), { type: 'int64', shape: ['batch_size', 'sequence_length'] });
      for (let i = 0; i < cfg.layers; i++) {
        assert.deepEqual(meta(session.inputMetadata, `past_key_values.${i}.value`), {
          type: kvType,
          shape: ['batch_size', cfg.kvHeads, 'past_sequence_length', cfg.headDim],
        });
        assert.deepEqual(meta(session.outputMetadata, `present.${i}.key`), {
          type: kvType,
          shape: ['batch_size', cfg.kvHeads, 'total_sequence_length', cfg.headDim],
        });
      }
      assert.deepEqual(meta(session.outputMetadata, 'logits'), {
        type: 'float32',
        shape: ['batch_size', 'sequence_length', cfg.vocabSize],
      });
      assert.deepEqual(fullPast['past_key_values.0.key']!.dims, [1, cfg.kvHeads, ids.length, cfg.headDim]);
      assert.equal(fullPast['past_key_values.0.key']!.type, kvType);
    });

    test('token-by-token decoding matches the full prefill', async () => {
      let past = emptyPast(cfg);
      const pieces: Float32Array[] = [];
      for (let j = 0; j < ids.length; j++) {
        const r = await step(session, cfg, [ids[j]!], j, past);
        pieces.push(r.logits);
        past = r.past;
      }
      const incremental = Float32Array.from(pieces.flatMap((p) => [...p]));
      assertClose(incremental, full, tol, 'token by token');
      for (const name of Object.keys(past)) {
        const a = past[name]!.data as Float32Array | Uint16Array;
        const b = fullPast[name]!.data as Float32Array | Uint16Array;
        const [fa, fb] = fp16 ? [float16BitsToFloat32(a), float16BitsToFloat32(b)] : [a as Float32Array, b as Float32Array];
        assertClose(fa, fb, tol, `present ${name}`);
      }
    });

    test('a 3-token prefix then a 4-token chunk with past matches the full prefill', async () => {
      const first = await step(session, cfg, ids.slice(0, 3), 0, emptyPast(cfg));
      const second = await step(session, cfg, ids.slice(3), 3, first.past);
      assertClose(Float32Array.from([...first.logits, ...second.logits]), full, tol, 'prefix + chunk');
    });

    test('cropping the present to a prefix (KV rollback) and re-feeding matches the full prefill', async () => {
      const V = cfg.vocabSize;
      for (const n of [0, 1, 4, 6]) {
        const r = await step(session, cfg, ids.slice(n), n, cropPast(fullPast, n));
        assertClose(r.logits, full.subarray(n * V), tol, `rollback to ${n}`);
      }
      // Rollback after speculating wrong tokens: feed 2 other tokens, crop them away, feed the real ones.
      const wrong = await step(session, cfg, [1, 2], 4, cropPast(fullPast, 4));
      const r = await step(session, cfg, ids.slice(4), 4, cropPast(wrong.past, 4));
      assertClose(r.logits, full.subarray(4 * V), tol, 'rollback after rejected tokens');
    });

    test('attention_mask hides padded keys; batch rows are independent', async () => {
      const V = cfg.vocabSize;
      const n = ids.length;
      // Row 0: two left-padding slots then the tokens; row 1: the tokens then two masked right-pad slots.
      const out = await session.run({
        input_ids: i64([0, 0, ...ids, ...ids, 0, 0], [2, n + 2]),
        attention_mask: i64([0, 0, ...Array(n).fill(1), ...Array(n).fill(1), 0, 0], [2, n + 2]),
        position_ids: i64([0, 0, ...ids.map((_, j) => j), ...ids.map((_, j) => j), n, n], [2, n + 2]),
        ...emptyPast(cfg, 2),
      });
      const logits = out['logits']!.data as Float32Array;
      assertClose(logits.subarray(2 * V, (n + 2) * V), full, tol, 'left-padded row');
      assertClose(logits.subarray((n + 2) * V, (2 * n + 2) * V), full, tol, 'right-padded row');
      assert.ok(logits.every(Number.isFinite), 'fully masked query rows stay finite');
    });

    test('logits are neither degenerate nor uniform', () => {
      const rs = rows(full, cfg.vocabSize);
      for (const r of rs) {
        const s = std(r);
        assert.ok(s > 0.3 && s < 10, `logit std ${s}`);
      }
      const argmaxes = new Set(rs.map(argmax));
      assert.ok(argmaxes.size >= 3, `argmax over ${rs.length} positions: ${[...argmaxes]}`);
    });

    if (options.externalData) {
      test('stores weights in onnx/model.onnx_data', () => {
        const dataPath = join(dir, 'onnx', 'model.onnx_data');
        assert.ok(existsSync(dataPath));
        const raw = readModel(readFileSync(join(dir, 'onnx', 'model.onnx')));
        const external = (raw.graph?.initializer ?? []).filter((t) => t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL);
        assert.ok(external.length > 0);
        const entry = Object.fromEntries((external[0]!.externalData ?? []).map((e) => [e.key, e.value]));
        assert.equal(entry['location'], 'model.onnx_data');
        assert.ok(Number(entry['length']) > 0);
        assert.ok(Number(entry['offset']) + Number(entry['length']) <= readFileSync(dataPath).byteLength);
        const inlined = readModelFile(join(dir, 'onnx', 'model.onnx'));
        assert.ok((inlined.graph?.initializer ?? []).every((t) => t.dataLocation !== onnx.TensorProto.DataLocation.EXTERNAL));
      });
    }
  });
}

describe('decoder fixture files', () => {
  test('config.json uses each family\'s key names', () => {
    const gpt2Dir = join(root, 'cfg-gpt2');
    const llamaDir = join(root, 'cfg-llama');
    writeFixtureModelDir(gpt2Dir, { style: 'gpt2', layers: 1, vocabSize: 32, eosTokenId: 2 });
    writeFixtureModelDir(llamaDir, { style: 'llama', heads: 4, kvHeads: 2, headDim: 8, hidden: 24 });
    const g = JSON.parse(readFileSync(join(gpt2Dir, 'config.json'), 'utf8'));
    assert.equal(g.model_type, 'gpt2');
    assert.deepEqual(
      [g.n_layer, g.n_head, g.n_embd, g.n_positions, g.vocab_size, g.eos_token_id, g.bos_token_id],
      [1, 4, 32, 128, 32, 2, 0],
    );
    const l = JSON.parse(readFileSync(join(llamaDir, 'config.json'), 'utf8'));
    assert.equal(l.model_type, 'llama');
    assert.deepEqual(
      [l.num_hidden_layers, l.num_attention_heads, l.num_key_value_heads, l.hidden_size, l.head_dim, l.max_position_embeddings, l.vocab_size],
      [2, 4, 2, 24, 8, 128, 48],
    );
    assert.equal(l.eos_token_id, FIXTURE_IM_END_ID);
    const gen = JSON.parse(readFileSync(join(llamaDir, 'generation_config.json'), 'utf8'));
    assert.equal(gen.eos_token_id, FIXTURE_IM_END_ID);
  });

  test('the tokenizer loads in @huggingface/tokenizers, covers exactly vocabSize ids and renders ChatML', () => {
    const dir = join(root, 'tok');
    const vocabSize = 40;
    writeFixtureModelDir(dir, { style: 'llama', vocabSize, layers: 1 });
    const tokenizerJson = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8'));
    const tokenizerConfig = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8'));
    const tok = new Tokenizer(tokenizerJson, tokenizerConfig);
    const vocab = tok.get_vocab(true);
    assert.equal(vocab.size, vocabSize);
    assert.deepEqual([...vocab.values()].sort((a, b) => a - b), Array.from({ length: vocabSize }, (_, i) => i));
    FIXTURE_SPECIAL_TOKENS.forEach((t, id) => assert.equal(tok.token_to_id(t), id));

    const text = 'hello world, 12!';
    const input_ids: number[] = tok.encode(text).ids;
    assert.equal(input_ids.length, text.length);
    assert.ok(input_ids.every((id) => id >= FIXTURE_SPECIAL_TOKENS.length && id < vocabSize));
    assert.equal(tok.decode(input_ids), text);
    assert.equal(tok.decode(tok.encode('ZZ').ids), '<unk><unk>', 'characters outside the vocab map to <unk>');

    const prompt = new Template(tokenizerConfig.chat_template).render({
      messages: [{ role: 'user', content: 'hi' }],
      add_generation_prompt: true,
    });
    assert.equal(prompt, '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n');
    const ids: number[] = tok.encode(prompt).ids;
    assert.equal(ids[0], FIXTURE_IM_START_ID);
    assert.equal(ids.filter((id) => id === FIXTURE_IM_END_ID).length, 1);
    assert.equal(tok.decode(ids), prompt);
    assert.equal(tok.decode(ids, { skip_special_tokens: true }), 'user\nhi\nassistant\n');
  });

  test('same seed gives the same bytes; a different seed does not', () => {
    const a = buildDecoderFixture({ style: 'llama', seed: 3 }).toBytes();
    const b = buildDecoderFixture({ style: 'llama', seed: 3 }).toBytes();
    const c = buildDecoderFixture({ style: 'llama', seed: 4 }).toBytes();
    assert.deepEqual(a, b);
    assert.notDeepEqual(a, c);
  });

  test('a draft/target pair shares the tokenizer but not the weights', async () => {
    const pair = writeFixturePair(join(root, 'pair'));
    const read = (d: string, f: string) => readFileSync(join(d, f), 'utf8');
    assert.equal(read(pair.draftDir, 'tokenizer.json'), read(pair.targetDir, 'tokenizer.json'));
    assert.equal(read(pair.draftDir, 'tokenizer_config.json'), read(pair.targetDir, 'tokenizer_config.json'));
    assert.equal(pair.draft.vocabSize, pair.target.vocabSize);
    assert.ok(pair.draft.hidden < pair.target.hidden);
    const draft = await ort.InferenceSession.create(join(pair.draftDir, 'onnx', 'model.onnx'));
    const target = await ort.InferenceSession.create(join(pair.targetDir, 'onnx', 'model.onnx'));
    const d = await step(draft, pair.draft, [1, 5, 6, 7], 0, emptyPast(pair.draft));
    const t = await step(target, pair.target, [1, 5, 6, 7], 0, emptyPast(pair.target));
    assert.ok(maxAbsDiff(d.logits, t.logits) > 0.1);
  });

  test('rejects inconsistent options', () => {
    assert.throws(() => buildDecoderFixture({ style: 'llama', heads: 4, kvHeads: 3 }), /kvHeads/);
    assert.throws(() => buildDecoderFixture({ style: 'gpt2', heads: 4, kvHeads: 2 }), /gpt2/);
    assert.throws(() => buildDecoderFixture({ style: 'gpt2', vocabSize: 4 }), /vocabSize/);
  });
});

// ---- graph builder ----------------------------------------------------------

describe('GraphBuilder', () => {
  test('builds a runnable model with attributes, fp16 / int64 initializers and a renamed output', async () => {
    const g = new GraphBuilder({ opset: 17 });
    const x = g.input('x', 'float32', ['batch', 4]);
    const w = g.initializer('w', Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8], (v) => v / 8), [4, 2]);
    const b16 = g.initializer('b16', Float32Array.from([0.5, -0.25]), [2], { dtype: 'float16' });
    const b = g.op('Cast', [b16], { attrs: { to: onnx.TensorProto.DataType.FLOAT } });
    const y = g.op('Add', [g.op('MatMul', [x, w]), b]);
    const scaled = g.op('Mul', [y, g.op('Constant', [], { attrs: { value: attr.tensor(tensorProto(Float32Array.of(2), [])) } })]);
    const clipped = g.op('Clip', [scaled, g.constant('float32', [-1], []), g.constant('float32', [1], [])]);
    const shape = g.op('Shape', [clipped]);
    g.output(clipped, 'y', 'float32', ['batch', 2]);
    g.output(shape, 'shape', 'int64', [2]);
    const session = await ort.InferenceSession.create(g.toBytes());
    const out = await session.run({ x: new ort.Tensor('float32', Float32Array.from([1, 0, 0, 0, 0, 0, 0, 1]), [2, 4]) });
    // Row 0: w[0] + b = [0.125, 0.25] + [0.5, -0.25] -> * 2 = [1.25, 0] -> clip = [1, 0].
    // Row 1: w[3] + b = [0.875, 1.0] + [0.5, -0.25] -> * 2 = [2.75, 1.5] -> clip = [1, 1].
    assert.deepEqual([...(out['y']!.data as Float32Array)], [1, 0, 1, 1]);
    assert.deepEqual([...(out['shape']!.data as BigInt64Array)], [2n, 2n]);
  });

  test('encodes every attribute kind and decodes with readModel', () => {
    const g = new GraphBuilder();
    const x = g.input('x', 'float32', [1]);
    const y = g.op('Identity', [x], {
      attrs: {
        i: 3,
        f: 0.5,
        one: attr.float(1),
        ints: [1, 2],
        floats: [0.5, 1.5],
        s: 'text',
        t: attr.tensor(tensorProto(BigInt64Array.of(7n), [1])),
      },
    });
    g.output(y, 'y', 'float32', [1]);
    const model = readModel(g.toBytes());
    assert.equal(Number(model.irVersion), 8);
    assert.equal(Number(model.opsetImport[0]!.version), 17);
    const attrs = Object.fromEntries((model.graph?.node?.[0]?.attribute ?? []).map((a) => [a.name, a]));
    const T = onnx.AttributeProto.AttributeType;
    assert.equal(attrs['i']!.type, T.INT);
    assert.equal(Number(attrs['i']!.i), 3);
    assert.equal(attrs['f']!.type, T.FLOAT);
    assert.equal(attrs['one']!.type, T.FLOAT);
    assert.equal(attrs['one']!.f, 1);
    assert.deepEqual(attrs['ints']!.ints.map(Number), [1, 2]);
    assert.deepEqual(attrs['floats']!.floats, [0.5, 1.5]);
    assert.equal(new TextDecoder().decode(attrs['s']!.s), 'text');
    assert.equal(attrs['t']!.t!.dataType, onnx.TensorProto.DataType.INT64);
  });

  test('float16 conversion rounds to nearest and round-trips', () => {
    const values = [0, 1, -2.5, 0.1, 65504, 1e-7, 7e4, -Infinity];
    const back = float16BitsToFloat32(float32ToFloat16Bits(values));
    assert.deepEqual([...back], [0, 1, -2.5, 0.0999755859375, 65504, 2 ** -23, Infinity, -Infinity]);
  });
});
