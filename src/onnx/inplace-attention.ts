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

/** Additive mask value of positions a query must not see (exp underflows to 0, and no -Infinity arithmetic). */
export const MASKED = -1e9;

/** Head geometry of an in-place attention. */
export interface AttentionShape {
  heads: number;
  kvHeads: number;
  headDim: number;
}

/** The masks of one pass, built once and shared by every layer (see {@link inplaceMasks}). */
export interface InplaceMasks {
  past: string;
  causal: string;
  split: string;
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
 * [C, S] (the softmax's two parts).
 */
export function inplaceMasks(g: GraphBuilder, groups: number): InplaceMasks {
  const scalar = (v: number) => g.constant('int64', [v], []);
  const capacity = shapeDim(g, 'past_key_values.0.value', 2);
  const fed = shapeDim(g, PADDED_SOURCE_INPUT, 1);
  const slots = g.op('Range', [scalar(0), g.op('Squeeze', [capacity, g.constant('int64', [0])]), scalar(1)]);
  const seen = g.op('Less', [g.op('Unsqueeze', [slots, g.constant('int64', [0])]), g.op('Unsqueeze', [PAST_LENGTH_INPUT, g.constant('int64', [1])])]); // [B, C]
  const past = g.op('Unsqueeze', [g.op('Where', [seen, g.constant('float32', [0], []), g.constant('float32', [MASKED], [])]), g.constant('int64', [1, 2])]);
  const steps = g.op('Range', [scalar(0), g.op('Squeeze', [fed, g.constant('int64', [0])]), scalar(1)]);
  const allowed = g.op('LessOrEqual', [g.op('Unsqueeze', [steps, g.constant('int64', [0])]), g.op('Unsqueeze', [steps, g.constant('int64', [1])])]);
  const causal = g.op('Where', [allowed, g.constant('float32', [0], []), g.constant('float32', [MASKED], [])]);
  return {
    past,
    causal: groups === 1 ? causal : g.op('Tile', [causal, g.constant('int64', [groups, 1])]),
    split: g.op('Concat', [capacity, fed], { attrs: { axis: 0 } }),
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
  const padded = g.op('Squeeze', [g.op('Gather', [qkv, PADDED_SOURCE_INPUT], { attrs: { axis: 1 } }), g.constant('int64', [0])]);
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
  const pastScores = g.op('Add', [g.op('MatMul', [query, `past_key_values.${layer}.key`]), masks.past]); // [B, KV, G S, C]
  const newScores = g.op('Add', [g.op('MatMul', [query, split(k!, kvHeads, [0, 2, 3, 1])]), masks.causal]); // [B, KV, G S, S]
  const probs = g.op('Softmax', [g.op('Concat', [pastScores, newScores], { attrs: { axis: -1 } })], { attrs: { axis: -1 } });
  const [pastProbs, newProbs] = g.opN('Split', [probs, masks.split], 2, { attrs: { axis: -1 } });
  const context = g.op('Add', [g.op('MatMul', [pastProbs!, `past_key_values.${layer}.value`]), g.op('MatMul', [newProbs!, split(v!, kvHeads)])]); // [B, KV, G S, D]
  // Back to the packed rows: [B, KV, G S, D] -> [B, S, heads D] -> [B S, heads D] -> [1, T, heads D].
  const bySequence =
    groups === 1
      ? g.op('Transpose', [context], { attrs: { perm: [0, 2, 1, 3] } })
      : g.op('Transpose', [g.op('Reshape', [context, g.constant('int64', [0, kvHeads, groups, -1, headDim])])], { attrs: { perm: [0, 3, 1, 2, 4] } });
  const flat = g.op('Reshape', [bySequence, g.constant('int64', [-1, qWidth])]);
  return g.op('Unsqueeze', [g.op('Gather', [flat, PACKED_INDEX_INPUT], { attrs: { axis: 0 } }), g.constant('int64', [0])]);
}
