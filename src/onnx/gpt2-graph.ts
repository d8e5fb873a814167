/**
 * GPT-2 decoder graphs built from weights (gpt2-weights.ts), in the decoder layout the engine
 * reads, with a choice of how each part is expressed:
 *
 * - `attention`: `ops` = transposes, KV concatenation, two MatMuls, an additive causal mask and
 *   Softmax (as exporters write it); `fused` = one com.microsoft MultiHeadAttention per block;
 *   `inplace` = attention over KV buffers the caller keeps and writes (below).
 * - `norms`: `ops` = Add (residual) and LayerNormalization; `fused` = SkipLayerNormalization, which
 *   adds the residual and the projection's bias and normalizes in one operator.
 * - `gelu`: `ops` = bias Add and GELU as erf arithmetic; `fused` = BiasGelu.
 *
 * All variants compute the same function (the softmax scale is folded into the query weights).
 * Fewer operators mean fewer kernel launches per token, which is what small models on a GPU
 * pay for and what a CPU gains from too; which variant is fastest is measured per device
 * (`specd bench latency`).
 *
 * Interface (`ops`, `fused`): `input_ids`, `past_key_values.*` and `logits_from` in; `logits`
 * (of the fed positions from `logits_from` on), `present.*` out ([batch, heads, length, head_dim]
 * KV, the past with the new rows appended). There is no `attention_mask` or `position_ids`: every
 * position is attended causally and the fed tokens sit at positions P..P+S-1 after the P cached
 * ones, which is how the engine decodes (one unpadded sequence); a GPU then gets one upload per
 * pass, the token ids.
 *
 * Interface (`inplace`): the packed tokens, KV buffers and attention of inplace-attention.ts;
 * `kv_rows.{i}` is the block's QKV projection of the packed tokens [1, T, 3 * hidden] (queries,
 * keys, values). Inputs: `input_ids` and `position_ids` [1, T], `past_sequence_length` [B],
 * `padded_source` [B, S], `packed_index` [T] (int64), the KV buffers, `logits_from`.
 *
 * Why not ONNX Runtime's GroupQueryAttention with `present.*` bound to the cache's memory (its
 * past/present shared-buffer mode): onnxruntime-node 1.30 copies every fetched output into a
 * new JavaScript buffer after the run, preallocated or not, so a present output costs a copy of
 * the whole buffer per pass (measured: 3.8 ms per pass for 50 MB of cache, the kernel itself
 * 0.14 ms); and left unbound, it copies the past into a present of its own (at 1,000 positions
 * 0.25 ms per layer against 0.11 ms for the two-part attention over a 1,024-position buffer).
 */
import { GraphBuilder } from './graph-builder.js';
import type { Gpt2Block, Gpt2Weights } from './gpt2-weights.js';
import { computesInInt8, type LinearQuantization, linearEmitter, QUANT_ACCURACY_LEVEL } from './linear-emitter.js';
import type { AccuracyLevel } from './matmul-nbits.js';
import { inplaceAttention, inplaceInputs, inplaceMasks, kvRowsOutput, MASKED, POSITION_IDS_INPUT, ROW_INDEPENDENT_KIND, shapeDim } from './inplace-attention.js';

export { KV_ROWS_PREFIX, kvRowsOutput, PACKED_INDEX_INPUT, PADDED_SOURCE_INPUT, PAST_LENGTH_INPUT, POSITION_IDS_INPUT } from './inplace-attention.js';

const MS = 'com.microsoft';

/** Input of a built graph: the first fed position whose logits are computed ([1] int64). */
export const LOGITS_FROM_INPUT = 'logits_from';

/** Metadata key a built graph carries, naming how it was built. */
export const GRAPH_KIND_KEY = 'specd.graph';

export type Gpt2Part = 'ops' | 'fused';

/** How a block's attention is built (module comment). */
export type Gpt2Attention = Gpt2Part | 'inplace';

export interface Gpt2GraphOptions {
  attention?: Gpt2Attention;
  norms?: Gpt2Part;
  gelu?: Gpt2Part;
  /** Also output `last_hidden_state` (the lm_head's input), as a draft prepared for an acceptance head does. */
  hiddenOutput?: boolean;
  /** Linear layers and the lm_head as MatMulNBits (linear-emitter.ts); default: as the weights come (float32 MatMul, or their own quantization). */
  quantization?: LinearQuantization | 'fp32';
  /** accuracy_level of MatMulNBits whose settings come from the weights (default QUANT_ACCURACY_LEVEL); with 4 the in-place attention is the row-independent one (inplace-attention.ts). */
  accuracyLevel?: AccuracyLevel;
}

export function buildGpt2Graph(w: Gpt2Weights, options: Gpt2GraphOptions = {}): GraphBuilder {
  const parts = { attention: options.attention ?? 'ops', norms: options.norms ?? 'fused', gelu: options.gelu ?? 'fused' };
  const g = new GraphBuilder({ opset: 17, irVersion: 8, name: 'gpt2' });
  const E = w.hidden;
  const layers = w.blocks.length;
  const headDim = E / w.heads;
  const inplace = parts.attention === 'inplace';
  const kvShape = ['batch_size', w.heads, 'past_sequence_length', headDim];
  const ids = g.input('input_ids', 'int64', ['batch_size', 'sequence_length']);
  const shape = { heads: w.heads, kvHeads: w.heads, headDim };
  if (inplace) inplaceInputs(g, layers, shape);
  for (let i = 0; i < layers && !inplace; i++) {
    g.input(`past_key_values.${i}.key`, 'float32', kvShape);
    g.input(`past_key_values.${i}.value`, 'float32', kvShape);
  }
  const accuracyLevel = options.accuracyLevel ?? QUANT_ACCURACY_LEVEL;
  const rowIndependent = inplace && computesInInt8(w.blocks[0]!.qkv, options.quantization, accuracyLevel);
  g.setMetadata(GRAPH_KIND_KEY, `gpt2 ${rowIndependent ? ROW_INDEPENDENT_KIND : `attention=${parts.attention}`} norms=${parts.norms} gelu=${parts.gelu}`);
  const param = (name: string, data: Float32Array, dims: number[]) => g.initializer(name, data, dims);
  const vector = (name: string, data: Float32Array) => param(name, data, [data.length]);
  const linear = linearEmitter(g, options.quantization, accuracyLevel);

  /** residual + input (+ bias), normalized: [normalized, new residual]. */
  const addNorm = (input: string, residual: string, gain: string, beta: string, bias?: string): [string, string] => {
    if (parts.norms === 'fused') {
      const inputs = bias ? [input, residual, gain, beta, bias] : [input, residual, gain, beta];
      const [normed, , , sum] = g.opN('SkipLayerNormalization', inputs, 4, {
        domain: MS,
        attrs: { epsilon: { type: 'float', value: w.epsilon } },
        outputs: [g.fresh('normed'), '', '', g.fresh('residual')],
      });
      return [normed!, sum!];
    }
    const sum = g.op('Add', [residual, bias ? g.op('Add', [input, bias]) : input]);
    return [g.op('LayerNormalization', [sum, gain, beta], { attrs: { axis: -1, epsilon: { type: 'float', value: w.epsilon } } }), sum];
  };
  const gelu = (x: string, bias: string): string => {
    if (parts.gelu === 'fused') return g.op('BiasGelu', [x, bias], { domain: MS });
    const y = g.op('Add', [x, bias]);
    const erf = g.op('Erf', [g.op('Mul', [y, g.constant('float32', [Math.SQRT1_2], [])])]);
    return g.op('Mul', [g.op('Mul', [y, g.op('Add', [erf, g.constant('float32', [1], [])])]), g.constant('float32', [0.5], [])]);
  };

  const mask = parts.attention === 'ops' ? causalMask(g) : '';
  const masks = inplace ? inplaceMasks(g, 1, rowIndependent ? shape : undefined) : undefined;
  /** The QKV projection with the softmax scale folded into the query columns of its weight and bias. */
  const scaledQkv = (i: number, a: string, b: Gpt2Block): string => {
    const scale = 1 / Math.sqrt(headDim);
    const bias = b.qkv.bias.slice();
    for (let c = 0; c < E; c++) bias[c]! *= scale;
    return g.op('Add', [linear(a, `l${i}.qkv.weight`, { ...b.qkv, k: E, n: 3 * E }, { columns: E, factor: scale }), vector(`l${i}.qkv.bias`, bias)]);
  };
  /** [.., 3E] into q, k, v [.., E]. */
  const splitQkv = (qkv: string): [string, string, string] => {
    const [q, k, v] = g.opN('Split', [qkv, g.constant('int64', [E, E, E])], 3, { attrs: { axis: -1 } });
    return [q!, k!, v!];
  };
  /** [B, S, E] split into heads: [B, N, S, H] (or another order of those axes with `perm`). */
  const heads = (t: string, perm = [0, 2, 1, 3]): string =>
    g.op('Transpose', [g.op('Reshape', [t, g.constant('int64', [0, 0, w.heads, headDim])])], { attrs: { perm } });
  const attention = (i: number, a: string, b: Gpt2Block): string => {
    if (inplace) {
      const qkv = scaledQkv(i, a, b); // [1, T, 3E]
      g.output(qkv, kvRowsOutput(i), 'float32', ['batch_size', 'sequence_length', 3 * E]);
      return inplaceAttention(g, i, qkv, shape, masks!);
    }
    if (parts.attention === 'fused') {
      const qkv = linear(a, `l${i}.qkv.weight`, { ...b.qkv, k: E, n: 3 * E });
      const [q, k, v] = g.opN('Split', [qkv, g.constant('int64', [E, E, E])], 3, { attrs: { axis: -1 } });
      return g.opN(
        'MultiHeadAttention',
        [q!, k!, v!, vector(`l${i}.qkv.bias`, b.qkv.bias), '', '', `past_key_values.${i}.key`, `past_key_values.${i}.value`],
        3,
        { domain: MS, attrs: { num_heads: w.heads, unidirectional: 1 }, outputs: [g.fresh('attention'), `present.${i}.key`, `present.${i}.value`] },
      )[0]!;
    }
    const [q, k, v] = splitQkv(scaledQkv(i, a, b));
    const keys = g.op('Concat', [`past_key_values.${i}.key`, heads(k!)], { attrs: { axis: 2 }, outputs: [`present.${i}.key`] });
    const values = g.op('Concat', [`past_key_values.${i}.value`, heads(v!)], { attrs: { axis: 2 }, outputs: [`present.${i}.value`] });
    const scores = g.op('Add', [g.op('MatMul', [heads(q!), g.op('Transpose', [keys], { attrs: { perm: [0, 1, 3, 2] } })]), mask]);
    const context = g.op('MatMul', [g.op('Softmax', [scores], { attrs: { axis: -1 } }), values]);
    return g.op('Reshape', [g.op('Transpose', [context], { attrs: { perm: [0, 2, 1, 3] } }), g.constant('int64', [0, 0, E])]);
  };

  const wte = param('wte', w.wte, [w.vocab, E]);
  const wpe = param('wpe', w.wpe, [w.positions, E]);
  const first = w.blocks[0]!.ln1;
  const positions = inplace ? g.op('Gather', [wpe, POSITION_IDS_INPUT]) : positionEmbeddings(g, wpe, ids);
  let [a, x] = addNorm(g.op('Gather', [wte, ids]), positions, vector('l0.ln1.gain', first.gain), vector('l0.ln1.bias', first.bias));
  for (let i = 0; i < layers; i++) {
    const b = w.blocks[i]!;
    const proj = linear(attention(i, a, b), `l${i}.proj.weight`, { ...b.proj, k: E, n: E });
    [a, x] = addNorm(proj, x, vector(`l${i}.ln2.gain`, b.ln2.gain), vector(`l${i}.ln2.bias`, b.ln2.bias), vector(`l${i}.proj.bias`, b.proj.bias));
    const fc = linear(a, `l${i}.fc.weight`, { ...b.fc, k: E, n: w.inner });
    const out = linear(gelu(fc, vector(`l${i}.fc.bias`, b.fc.bias)), `l${i}.out.weight`, { ...b.out, k: w.inner, n: E });
    const [next, nextName] = i + 1 < layers ? [w.blocks[i + 1]!.ln1, `l${i + 1}.ln1`] : [w.lnf, 'lnf'];
    [a, x] = addNorm(out, x, vector(`${nextName}.gain`, next.gain), vector(`${nextName}.bias`, next.bias), vector(`l${i}.out.bias`, b.out.bias));
  }
  // Logits only from position logits_from on: a prompt needs its last row, a verification its last
  // k + 1, and with a large vocabulary the other rows would dominate the lm_head and the download.
  const from = g.input(LOGITS_FROM_INPUT, 'int64', [1]);
  const kept = g.op('Slice', [a, from, g.constant('int64', [Number.MAX_SAFE_INTEGER]), g.constant('int64', [1])]);
  g.output(linear(kept, 'lm_head.weight', { weight: w.lmHead, quantized: w.lmHeadQuantized, k: E, n: w.vocab }), 'logits', 'float32', ['batch_size', 'logits_length', w.vocab]);
  const presentShape = ['batch_size', w.heads, 'total_sequence_length', headDim];
  for (let i = 0; i < layers && !inplace; i++) {
    g.output(`present.${i}.key`, `present.${i}.key`, 'float32', presentShape);
    g.output(`present.${i}.value`, `present.${i}.value`, 'float32', presentShape);
  }
  if (options.hiddenOutput) g.output(a, 'last_hidden_state', 'float32', ['batch_size', 'sequence_length', E]);
  return g;
}

/**
 * The position embeddings of the fed tokens, rows P..P+S-1 of the table [1, S, E] (P = the past
 * length): a Slice whose bounds come from the shapes, so no position input has to be uploaded
 * to a GPU on every pass.
 */
function positionEmbeddings(g: GraphBuilder, wpe: string, ids: string): string {
  const past = shapeDim(g, 'past_key_values.0.key', 2);
  const rows = g.op('Slice', [wpe, past, g.op('Add', [past, shapeDim(g, ids, 1)]), g.constant('int64', [0])]);
  return g.op('Unsqueeze', [rows, g.constant('int64', [0])]);
}

/**
 * The additive causal mask [S, T] of the fed positions over the cache: query j (slot P + j)
 * sees key slots 0..P + j. Built from the shapes alone (ONNX Runtime runs such shape
 * arithmetic on the host and uploads the mask once per run).
 */
function causalMask(g: GraphBuilder): string {
  const scalar = (v: number) => g.constant('int64', [v], []);
  const dim = (x: string, axis: number) => g.op('Gather', [g.op('Shape', [x]), scalar(axis)]);
  const past = dim('past_key_values.0.key', 2);
  const total = g.op('Add', [past, dim('input_ids', 1)]);
  const queryPos = g.op('Range', [past, total, scalar(1)]);
  const keyPos = g.op('Range', [scalar(0), total, scalar(1)]);
  const allowed = g.op('LessOrEqual', [g.op('Unsqueeze', [keyPos, g.constant('int64', [0])]), g.op('Unsqueeze', [queryPos, g.constant('int64', [1])])]);
  return g.op('Where', [allowed, g.constant('float32', [0], []), g.constant('float32', [MASKED], [])]);
}
