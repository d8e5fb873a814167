/**
 * The attention of a rebuilt decoder over KV buffers the caller keeps and writes (the `inplace`
 * graphs of gpt2-graph.ts and llama-graph.ts; the buffers are engine/kv-pool.ts's slots), shared
 * by every rebuilt family.
 *
 * Interface: the KV inputs are the caller's buffers of a fixed capacity C, keys transposed,
 * `past_key_values.{i}.key` [entries, kv_heads, head_dim, C] and `past_key_values.{i}.value`
 * [entries, kv_heads, C, head_dim], of which each sequence's first `past_sequence_length[e]`
 * positions hold its past. Tokens come packed: `input_ids` and `position_ids` [1, T] hold every
 * sequence's new tokens one after the other (no padding), and everything but the attention runs
 * on those T rows. The attention runs per sequence on a padded [B, S] layout: `padded_source`
 * [B, S] gives the packed row each padded position takes (padding repeats a real row; it is
 * masked from the real queries), and `packed_index` [T] the flat padded position (b S + j) each
 * packed row comes back from.
 *
 * It reads the buffers where they lie, in two parts that share one softmax: the queries against
 * the whole buffer (positions at or past the sequence's length masked) and against the pass's own
 * new keys (causally). Nothing is copied: the graph hands back only the new rows of each layer
 * (`kv_rows.{i}` [1, T, (heads + 2 kv_heads) head_dim]: queries, then keys and values, head-major,
 * keys as they are cached, i.e. after any rotary embedding), which the caller writes into its
 * buffers. A pass costs the same at any length up to C (the buffer is read whole).
 *
 * Row-independent variant (`rows`, for graphs whose linear layers compute in int8, where a 1e-7
 * difference in an activation can move its quantized value and grow through the layers): a row's
 * output is then bitwise the same whatever else its pass carries, so that a verification pass
 * gives each row exactly what one-token passes give it (bench/attention-rows.ts measured the split
 * attention's rows differing by up to 1.1e-6: a candidate's key sits among the pass's new keys in
 * a verification and in the buffer in a one-token pass, so the softmax and the value product sum
 * it in another order). Here every key and value sits at its position's slot: the pass's new keys
 * and values are scattered into copies of the layer's buffers (`ScatterElements` at slot
 * past_sequence_length[b] + j; padding rows repeat their sequence's last row, so a slot written
 * twice gets the same row twice), and each row reads the whole copy with one query-key MatMul,
 * one softmax over the copy's C' slots (slots after the row's own masked; their exp is 0) and one
 * value MatMul. A row's scores then sit in the same columns with the same values in any pass of
 * the same capacity, and the softmax's and the value product's summation orders depend on C' alone.
 * C' = max(C, max past + S): the buffers are padded with zeros where a pass does not fit (a prompt
 * fed with the one-slot empty buffers of kv-pool.ts), which is exact in value but not bitwise
 * row-independent, and only prompts do it. ONNX Runtime's MatMul computes a lone left row by
 * another kernel than two or more: where a KV head has one query head, each sequence's padded
 * layout gets one more position, a copy of its first (scattered to the first's slot, dropped from
 * the output), so that every product has two rows or more (with G >= 2 it has G S >= 2 already).
 * Each layer copies its two buffers once per pass (C' rows of kv_heads head_dim floats each).
 *
 * Grouped-query attention (kv_heads < heads, G = heads / kv_heads query heads per KV head, query
 * head h reading KV head floor(h / G) as in transformers' `repeat_kv`): the G query heads of a KV
 * head are stacked along the query axis, [B, kv_heads, G S, head_dim], so that each KV head is
 * read once per pass by one MatMul, with no copy of the KV heads.
 */
import type { GraphBuilder } from './graph-builder.js';

/** Inputs of an in-place graph besides input_ids, the KV buffers and logits_from (module comment). */
export const POSITION_IDS_INPUT = 'position_ids';
export const PAST_LENGTH_INPUT = 'past_sequence_length';
export const PADDED_SOURCE_INPUT = 'padded_source';
export const PACKED_INDEX_INPUT = 'packed_index';

/** Outputs of an in-place graph: layer i's new rows, queries, keys and values of the packed tokens [1, T, (heads + 2 kv_heads) head_dim]. */
export const KV_ROWS_PREFIX = 'kv_rows.';
export const kvRowsOutput = (layer: number) => `${KV_ROWS_PREFIX}${layer}`;

/** What a row-independent graph's `specd.graph` metadata (gpt2-graph.ts GRAPH_KIND_KEY) says of its attention. */
export const ROW_INDEPENDENT_KIND = 'attention=inplace-rows';

/** Additive mask value of positions a query must not see (exp underflows to 0, and no -Infinity arithmetic). */
export const MASKED = -1e9;

/** Head geometry of an in-place attention. */
export interface AttentionShape {
  heads: number;
  kvHeads: number;
  headDim: number;
}

/** The masks of one pass, built once and shared by every layer (see {@link inplaceMasks}): the split attention's or the row-independent one's. */
export type InplaceMasks = { split: SplitMasks; rows?: undefined } | { rows: RowMasks; split?: undefined };

/** What the split attention's layers share per pass. */
interface SplitMasks {
  past: string;
  causal: string;
  /** [2] int64: C, S (the softmax's two parts). */
  parts: string;
}

/** What a row-independent attention's layers share per pass (S' = S + 1: each sequence's padded layout with a copy of its first position). */
interface RowMasks {
  /** Gather indices [B, S'] of the padded layout's rows among the packed rows. */
  source: string;
  /** Gather indices [T] of each packed row among the flat padded rows [B S']. */
  packed: string;
  /** ScatterElements indices (axis 3) of each new key's score column [B, KV, G S', S'] in the scores against the buffer [B, KV, G S', C]. */
  scoreSlots: string;
  /** ScatterElements indices (axis 2) of each new value's row [B, KV, S', D] in the value buffer [B, KV, C, D]. */
  valueSlots: string;
  /** [B, 1, G S', C]: 0 where slot t is at or below the row's own slot. */
  mask: string;
}

/** Declares the in-place inputs (packed tokens, lengths, layouts and the KV buffers of `layers` layers) on `g`. */
export function inplaceInputs(g: GraphBuilder, layers: number, shape: AttentionShape): void {
  g.input(POSITION_IDS_INPUT, 'int64', ['batch_size', 'sequence_length']);
  g.input(PAST_LENGTH_INPUT, 'int64', ['entries']);
  g.input(PADDED_SOURCE_INPUT, 'int64', ['entries', 'entry_length']);
  g.input(PACKED_INDEX_INPUT, 'int64', ['sequence_length']);
  for (let i = 0; i < layers; i++) {
    g.input(`past_key_values.${i}.key`, 'float32', ['entries', shape.kvHeads, shape.headDim, 'kv_capacity']);
    g.input(`past_key_values.${i}.value`, 'float32', ['entries', shape.kvHeads, 'kv_capacity', shape.headDim]);
  }
}

/** Dimension `axis` of `x`'s shape as a [1] int64 tensor. */
export function shapeDim(g: GraphBuilder, x: string, axis: number): string {
  return g.op('Slice', [g.op('Shape', [x]), g.constant('int64', [axis]), g.constant('int64', [axis + 1])]);
}

/**
 * The masks of the in-place attention, built once per pass from the shapes and the past lengths:
 * `past` [B, 1, 1, C] (0 where position t < past_sequence_length[b], else MASKED), `causal`
 * [G S, S] (new query j sees new keys 0..j; the G query heads of a KV head stacked), and `split`
 * [C, S] (the softmax's two parts); with `rowIndependent`, what the row-independent attention
 * reads (module comment).
 */
export function inplaceMasks(g: GraphBuilder, groups: number, rowIndependent?: { kvHeads: number; headDim: number }): InplaceMasks {
  const scalar = (v: number) => g.constant('int64', [v], []);
  const capacity = shapeDim(g, 'past_key_values.0.value', 2);
  const fed = shapeDim(g, PADDED_SOURCE_INPUT, 1);
  if (rowIndependent) return { rows: rowMasks(g, groups, rowIndependent.kvHeads, rowIndependent.headDim, capacity, fed) };
  const slots = g.op('Range', [scalar(0), g.op('Squeeze', [capacity, g.constant('int64', [0])]), scalar(1)]);
  const seen = g.op('Less', [g.op('Unsqueeze', [slots, g.constant('int64', [0])]), g.op('Unsqueeze', [PAST_LENGTH_INPUT, g.constant('int64', [1])])]); // [B, C]
  const past = g.op('Unsqueeze', [g.op('Where', [seen, g.constant('float32', [0], []), g.constant('float32', [MASKED], [])]), g.constant('int64', [1, 2])]);
  const steps = g.op('Range', [scalar(0), g.op('Squeeze', [fed, g.constant('int64', [0])]), scalar(1)]);
  const allowed = g.op('LessOrEqual', [g.op('Unsqueeze', [steps, g.constant('int64', [0])]), g.op('Unsqueeze', [steps, g.constant('int64', [1])])]);
  const causal = g.op('Where', [allowed, g.constant('float32', [0], []), g.constant('float32', [MASKED], [])]);
  return {
    split: {
      past,
      causal: groups === 1 ? causal : g.op('Tile', [causal, g.constant('int64', [groups, 1])]),
      parts: g.op('Concat', [capacity, fed], { attrs: { axis: 0 } }),
    },
  };
}

/** The per-pass part of the row-independent attention (module comment; {@link RowMasks}). */
function rowMasks(g: GraphBuilder, groups: number, kvHeads: number, headDim: number, capacity: string, fed: string): RowMasks {
  const i64 = (v: number[], dims?: number[]) => g.constant('int64', v, dims);
  // One more padded position per sequence, a copy of its first (module comment).
  const first = g.op('Slice', [PADDED_SOURCE_INPUT, i64([0]), i64([1]), i64([1])]); // [B, 1]
  const source = g.op('Concat', [PADDED_SOURCE_INPUT, first], { attrs: { axis: 1 } }); // [B, S']
  // Slot of padded position j: past + (its packed row - the first's), i.e. past + j, and for padding
  // (which repeats the sequence's last row) the last row's slot.
  const slots = g.op('Add', [g.op('Unsqueeze', [PAST_LENGTH_INPUT, i64([1])]), g.op('Sub', [source, first])]); // [B, S']
  const allowed = g.op('LessOrEqual', [
    g.op('Range', [i64([0], []), g.op('Squeeze', [capacity, i64([0])]), i64([1], [])]),
    g.op('Unsqueeze', [slots, i64([2])]),
  ]); // [B, S', C]
  const mask = g.op('Unsqueeze', [g.op('Where', [allowed, g.constant('float32', [0], []), g.constant('float32', [MASKED], [])]), i64([1])]); // [B, 1, S', C]
  const rows = g.op('Mul', [g.op('Add', [fed, i64([1])]), i64([groups])]); // [1]: G S'
  return {
    source,
    packed: g.op('Add', [PACKED_INDEX_INPUT, g.op('Div', [PACKED_INDEX_INPUT, fed])]), // b S + j -> b S' + j
    scoreSlots: g.op('Expand', [g.op('Unsqueeze', [slots, i64([1, 2])]), g.op('Concat', [i64([1, kvHeads]), rows, i64([1])], { attrs: { axis: 0 } })]),
    valueSlots: g.op('Expand', [g.op('Unsqueeze', [slots, i64([1, 3])]), i64([1, kvHeads, 1, headDim])]),
    mask: groups === 1 ? mask : g.op('Tile', [mask, i64([1, 1, groups, 1])]),
  };
}

/**
 * Layer `layer`'s attention over its KV buffers and the pass's own rows.
 * @param qkv the packed rows [1, T, (heads + 2 kv_heads) head_dim]: queries already scaled by
 *   1 / sqrt(head_dim) (and rotated, where the family does), keys as cached, values
 * @returns the attention's output for the packed rows [1, T, heads head_dim], heads in order
 */
export function inplaceAttention(g: GraphBuilder, layer: number, qkv: string, shape: AttentionShape, masks: InplaceMasks): string {
  const { heads, kvHeads, headDim } = shape;
  const groups = heads / kvHeads;
  const qWidth = heads * headDim;
  const kvWidth = kvHeads * headDim;
  // Packed rows to the padded layout: [1, T, W] -> [B, S, W].
  const padded = g.op('Squeeze', [g.op('Gather', [qkv, masks.rows?.source ?? PADDED_SOURCE_INPUT], { attrs: { axis: 1 } }), g.constant('int64', [0])]);
  const [q, k, v] = g.opN('Split', [padded, g.constant('int64', [qWidth, kvWidth, kvWidth])], 3, { attrs: { axis: -1 } });
  /** [B, S, n D] split into heads: [B, n, S, D] (or another order of those axes with `perm`). */
  const split = (t: string, n: number, perm = [0, 2, 1, 3]): string =>
    g.op('Transpose', [g.op('Reshape', [t, g.constant('int64', [0, 0, n, headDim])])], { attrs: { perm } });
  // Queries [B, KV, G S, D]: query head kv G + g at rows g S .. g S + S - 1 of KV head kv.
  const query =
    groups === 1
      ? split(q!, heads)
      : g.op('Reshape', [
          g.op('Transpose', [g.op('Reshape', [q!, g.constant('int64', [0, 0, kvHeads, groups, headDim])])], { attrs: { perm: [0, 2, 3, 1, 4] } }),
          g.constant('int64', [0, kvHeads, -1, headDim]),
        ]);
  if (masks.rows) return packedRows(g, rowContext(g, layer, query, split(k!, kvHeads, [0, 2, 3, 1]), split(v!, kvHeads), masks.rows), shape, masks.rows.packed);
  const m = masks.split;
  const pastScores = g.op('Add', [g.op('MatMul', [query, `past_key_values.${layer}.key`]), m.past]); // [B, KV, G S, C]
  const newScores = g.op('Add', [g.op('MatMul', [query, split(k!, kvHeads, [0, 2, 3, 1])]), m.causal]); // [B, KV, G S, S]
  const probs = g.op('Softmax', [g.op('Concat', [pastScores, newScores], { attrs: { axis: -1 } })], { attrs: { axis: -1 } });
  const [pastProbs, newProbs] = g.opN('Split', [probs, m.parts], 2, { attrs: { axis: -1 } });
  const context = g.op('Add', [g.op('MatMul', [pastProbs!, `past_key_values.${layer}.value`]), g.op('MatMul', [newProbs!, split(v!, kvHeads)])]); // [B, KV, G S, D]
  return packedRows(g, context, shape);
}

/** An attention's output [B, KV, G S, D] back to the packed rows [1, T, heads D] (`packed`: each packed row's flat padded position). */
function packedRows(g: GraphBuilder, context: string, shape: AttentionShape, packed = PACKED_INDEX_INPUT): string {
  const { heads, kvHeads, headDim } = shape;
  const groups = heads / kvHeads;
  const qWidth = heads * headDim;
  // Back to the packed rows: [B, KV, G S, D] -> [B, S, heads D] -> [B S, heads D] -> [1, T, heads D].
  const bySequence =
    groups === 1
      ? g.op('Transpose', [context], { attrs: { perm: [0, 2, 1, 3] } })
      : g.op('Transpose', [g.op('Reshape', [context, g.constant('int64', [0, kvHeads, groups, -1, headDim])])], { attrs: { perm: [0, 3, 1, 2, 4] } });
  const flat = g.op('Reshape', [bySequence, g.constant('int64', [-1, qWidth])]);
  return g.op('Unsqueeze', [g.op('Gather', [flat, packed], { attrs: { axis: 0 } }), g.constant('int64', [0])]);
}

/**
 * The row-independent attention's context (module comment) of queries [B, KV, G S', D] (stacked
 * as inplaceAttention stacks them) over layer `layer`'s buffers and the pass's new keys [B, KV, D,
 * S'] and values [B, KV, S', D], each at its slot: [B, KV, G S', D].
 */
function rowContext(g: GraphBuilder, layer: number, query: string, newKeys: string, newValues: string, m: RowMasks): string {
  // Scores against the buffer [B, KV, G S', C], the new keys' columns overwritten by the scores against them.
  const bufferScores = g.op('MatMul', [query, `past_key_values.${layer}.key`]);
  const scores = g.op('ScatterElements', [bufferScores, m.scoreSlots, g.op('MatMul', [query, newKeys])], { attrs: { axis: 3 } });
  const probs = g.op('Softmax', [g.op('Add', [scores, m.mask])], { attrs: { axis: -1 } });
  // A copy of the value buffer with the new values in their slots [B, KV, C, D].
  const values = g.op('ScatterElements', [`past_key_values.${layer}.value`, m.valueSlots, newValues], { attrs: { axis: 2 } });
  return g.op('MatMul', [probs, values]);
}
