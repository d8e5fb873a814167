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
 * Interface (`inplace`): the KV inputs are the caller's buffers of a fixed capacity C
 * (engine/kv-pool.ts), keys transposed, `past_key_values.{i}.key` [batch, heads, head_dim, C]
 * and `past_key_values.{i}.value` [batch, heads, C, head_dim], of which each sequence's first
 * `past_sequence_length[b]` positions hold its past. Attention reads them where they lie, in two
 * parts that share one softmax: the queries against the whole buffer (positions at or past the
 * sequence's length masked) and against the pass's own new keys (causally). Nothing is copied:
 * the graph does not hand back the cache, only the S new rows of each layer (`kv_rows.{i}`, the
 * packed QKV projection [batch, S, 3 * hidden]: keys at [hidden, 2 hidden), values at
 * [2 hidden, 3 hidden), head-major), which the caller writes into its buffers. A pass costs the
 * same at any length up to C (the buffer is read whole), so the caller keeps C close to the
 * longest sequence. Inputs: `input_ids` [batch, S], `position_ids` [batch, S] (int64),
 * `past_sequence_length` [batch] (int64), the KV buffers, `logits_from`. Every sequence of a
 * batch is fed S tokens; a shorter one is padded at its end, and its length afterwards is its
 * real length.
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

const MS = 'com.microsoft';

/** Input of a built graph: the first fed position whose logits are computed ([1] int64). */
export const LOGITS_FROM_INPUT = 'logits_from';

/** Metadata key a built graph carries, naming how it was built. */
export const GRAPH_KIND_KEY = 'specd.graph';

export type Gpt2Part = 'ops' | 'fused';

/** How a block's attention is built (module comment). */
export type Gpt2Attention = Gpt2Part | 'inplace';

/**
 * Inputs of an `inplace` graph besides input_ids, the KV buffers and logits_from. Its tokens
 * come packed: input_ids and position_ids [1, T] hold every sequence's new tokens one after the
 * other (no padding), and everything but the attention runs on those T rows. The attention runs
 * per sequence on a padded [B, S] layout: `padded_source` [B, S] gives the packed row each padded
 * position takes (padding repeats a real row; it is masked from the real queries), and
 * `packed_index` [T] the flat padded position (b S + j) each packed row comes back from.
 * `past_sequence_length` [B] is each sequence's cached length.
 */
export const POSITION_IDS_INPUT = 'position_ids';
export const PAST_LENGTH_INPUT = 'past_sequence_length';
export const PADDED_SOURCE_INPUT = 'padded_source';
export const PACKED_INDEX_INPUT = 'packed_index';

/** Additive mask value of positions a query must not see (exp underflows to 0, and no -Infinity arithmetic). */
const MASKED = -1e9;

/** Outputs of an `inplace` graph: layer i's new rows, as its QKV projection of the packed tokens [1, T, 3 * hidden]. */
export const KV_ROWS_PREFIX = 'kv_rows.';
export const kvRowsOutput = (layer: number) => `${KV_ROWS_PREFIX}${layer}`;

export interface Gpt2GraphOptions {
  attention?: Gpt2Attention;
  norms?: Gpt2Part;
  gelu?: Gpt2Part;
  /** Also output `last_hidden_state` (the lm_head's input), as a draft prepared for an acceptance head does. */
  hiddenOutput?: boolean;
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
  if (inplace) {
    g.input(POSITION_IDS_INPUT, 'int64', ['batch_size', 'sequence_length']);
    g.input(PAST_LENGTH_INPUT, 'int64', ['entries']);
    g.input(PADDED_SOURCE_INPUT, 'int64', ['entries', 'entry_length']);
    g.input(PACKED_INDEX_INPUT, 'int64', ['sequence_length']);
  }
  for (let i = 0; i < layers; i++) {
    g.input(`past_key_values.${i}.key`, 'float32', inplace ? ['entries', w.heads, headDim, 'kv_capacity'] : kvShape);
    g.input(`past_key_values.${i}.value`, 'float32', inplace ? ['entries', w.heads, 'kv_capacity', headDim] : kvShape);
  }
  g.setMetadata(GRAPH_KIND_KEY, `gpt2 attention=${parts.attention} norms=${parts.norms} gelu=${parts.gelu}`);
  const param = (name: string, data: Float32Array, dims: number[]) => g.initializer(name, data, dims);
  const vector = (name: string, data: Float32Array) => param(name, data, [data.length]);

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
  const inplaceMasks = inplace ? bufferMasks(g) : undefined;
  /** The QKV projection with the softmax scale folded into the query columns of its weight and bias. */
  const scaledQkv = (i: number, a: string, b: Gpt2Block): string => {
    const scale = 1 / Math.sqrt(headDim);
    const weight = b.qkv.weight.slice();
    const bias = b.qkv.bias.slice();
    for (let r = 0; r < E; r++) for (let c = 0; c < E; c++) weight[r * 3 * E + c]! *= scale;
    for (let c = 0; c < E; c++) bias[c]! *= scale;
    return g.op('Add', [g.op('MatMul', [a, param(`l${i}.qkv.weight`, weight, [E, 3 * E])]), vector(`l${i}.qkv.bias`, bias)]);
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
      // Packed rows to the padded layout: [1, T, 3E] -> [B, S, 3E].
      const padded = g.op('Squeeze', [g.op('Gather', [qkv, PADDED_SOURCE_INPUT], { attrs: { axis: 1 } }), g.constant('int64', [0])]);
      const [q, k, v] = splitQkv(padded);
      const query = heads(q); // [B, N, S, H]
      const pastScores = g.op('Add', [g.op('MatMul', [query, `past_key_values.${i}.key`]), inplaceMasks!.past]); // [B, N, S, C]
      const newKeys = heads(k, [0, 2, 3, 1]); // [B, N, H, S]
      const newScores = g.op('Add', [g.op('MatMul', [query, newKeys]), inplaceMasks!.causal]); // [B, N, S, S]
      const probs = g.op('Softmax', [g.op('Concat', [pastScores, newScores], { attrs: { axis: -1 } })], { attrs: { axis: -1 } });
      const [pastProbs, newProbs] = g.opN('Split', [probs, inplaceMasks!.split], 2, { attrs: { axis: -1 } });
      const context = g.op('Add', [g.op('MatMul', [pastProbs!, `past_key_values.${i}.value`]), g.op('MatMul', [newProbs!, heads(v)])]);
      // Back to the packed rows: [B, N, S, H] -> [B S, E] -> [1, T, E].
      const flat = g.op('Reshape', [g.op('Transpose', [context], { attrs: { perm: [0, 2, 1, 3] } }), g.constant('int64', [-1, E])]);
      return g.op('Unsqueeze', [g.op('Gather', [flat, PACKED_INDEX_INPUT], { attrs: { axis: 0 } }), g.constant('int64', [0])]);
    }
    if (parts.attention === 'fused') {
      const qkv = g.op('MatMul', [a, param(`l${i}.qkv.weight`, b.qkv.weight, [E, 3 * E])]);
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
    const proj = g.op('MatMul', [attention(i, a, b), param(`l${i}.proj.weight`, b.proj.weight, [E, E])]);
    [a, x] = addNorm(proj, x, vector(`l${i}.ln2.gain`, b.ln2.gain), vector(`l${i}.ln2.bias`, b.ln2.bias), vector(`l${i}.proj.bias`, b.proj.bias));
    const fc = g.op('MatMul', [a, param(`l${i}.fc.weight`, b.fc.weight, [E, w.inner])]);
    const out = g.op('MatMul', [gelu(fc, vector(`l${i}.fc.bias`, b.fc.bias)), param(`l${i}.out.weight`, b.out.weight, [w.inner, E])]);
    const [next, nextName] = i + 1 < layers ? [w.blocks[i + 1]!.ln1, `l${i + 1}.ln1`] : [w.lnf, 'lnf'];
    [a, x] = addNorm(out, x, vector(`${nextName}.gain`, next.gain), vector(`${nextName}.bias`, next.bias), vector(`l${i}.out.bias`, b.out.bias));
  }
  // Logits only from position logits_from on: a prompt needs its last row, a verification its last
  // k + 1, and with a large vocabulary the other rows would dominate the lm_head and the download.
  const from = g.input(LOGITS_FROM_INPUT, 'int64', [1]);
  const kept = g.op('Slice', [a, from, g.constant('int64', [Number.MAX_SAFE_INTEGER]), g.constant('int64', [1])]);
  g.output(g.op('MatMul', [kept, param('lm_head.weight', w.lmHead, [E, w.vocab])]), 'logits', 'float32', ['batch_size', 'logits_length', w.vocab]);
  const presentShape = ['batch_size', w.heads, 'total_sequence_length', headDim];
  for (let i = 0; i < layers && !inplace; i++) {
    g.output(`present.${i}.key`, `present.${i}.key`, 'float32', presentShape);
    g.output(`present.${i}.value`, `present.${i}.value`, 'float32', presentShape);
  }
  if (options.hiddenOutput) g.output(a, 'last_hidden_state', 'float32', ['batch_size', 'sequence_length', E]);
  return g;
}

/** Dimension `axis` of `x`'s shape as a [1] int64 tensor. */
function shapeDim(g: GraphBuilder, x: string, axis: number): string {
  return g.op('Slice', [g.op('Shape', [x]), g.constant('int64', [axis]), g.constant('int64', [axis + 1])]);
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

/**
 * The masks of the in-place attention, built once per pass from the shapes and the past lengths:
 * `past` [B, 1, 1, C] (0 where position t < past_sequence_length[b], else MASKED), `causal`
 * [S, S] (new query j sees new keys 0..j), and `split` [C, S] (the softmax's two parts).
 */
function bufferMasks(g: GraphBuilder): { past: string; causal: string; split: string } {
  const scalar = (v: number) => g.constant('int64', [v], []);
  const capacity = shapeDim(g, 'past_key_values.0.value', 2);
  const fed = shapeDim(g, PADDED_SOURCE_INPUT, 1);
  const slots = g.op('Range', [scalar(0), g.op('Squeeze', [capacity, g.constant('int64', [0])]), scalar(1)]);
  const seen = g.op('Less', [g.op('Unsqueeze', [slots, g.constant('int64', [0])]), g.op('Unsqueeze', [PAST_LENGTH_INPUT, g.constant('int64', [1])])]); // [B, C]
  const past = g.op('Unsqueeze', [g.op('Where', [seen, g.constant('float32', [0], []), g.constant('float32', [MASKED], [])]), g.constant('int64', [1, 2])]);
  const steps = g.op('Range', [scalar(0), g.op('Squeeze', [fed, g.constant('int64', [0])]), scalar(1)]);
  const allowed = g.op('LessOrEqual', [g.op('Unsqueeze', [steps, g.constant('int64', [0])]), g.op('Unsqueeze', [steps, g.constant('int64', [1])])]);
  const causal = g.op('Where', [allowed, g.constant('float32', [0], []), g.constant('float32', [MASKED], [])]);
  return { past, causal, split: g.op('Concat', [capacity, fed], { attrs: { axis: 0 } }) };
}
