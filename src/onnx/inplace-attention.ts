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
 * Row-independent variant (`window`, for graphs whose linear layers compute in int8, where a
 * 1e-7 difference in an activation can move its quantized value and grow through the layers): a
 * row's output is then bitwise the same whatever else its pass carries, so that a verification
 * pass gives each row exactly what one-token passes give it (bench/attention-rows.ts measured the
 * split attention's rows differing by up to 1.1e-6). Each row at slot p sees three parts that
 * share one softmax: the buffer below its anchor p - W + 1 (W = {@link ROW_WINDOW}), its last W
 * slots through a window (values gathered per row from the buffer or the pass's new rows,
 * whichever holds them, whole rows of head_dim by one Gather over the rows of the buffer and of
 * the new values), and the pass's new rows below the anchor (empty unless the row is the
 * W-th or later new row of its sequence: prompt pieces). The window's scores are not computed
 * from gathered keys: they are picked per row from the two products every pass computes anyway,
 * the queries against the buffer and against the pass's new keys; a query-key dot product comes
 * out bitwise the same from either (where a KV head has one query head, both MatMuls get a copy of
 * their first left row appended, as ONNX Runtime's MatMul computes a lone left row by another
 * kernel than two or more; with G >= 2 every product has two rows or more already; and the new
 * keys' product a copy of its first column, a lone right column likewise; measured with
 * test/model/onnx-window-attention.test.ts at head sizes 16, 64 and 128). A row's scores then
 * sit in the same columns with the same values in any pass, and rows whose third part is empty
 * take their probabilities from a softmax over the first two parts alone, whose row length does
 * not depend on the pass (the softmax kernel's summation order depends on the row's length).
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
  /** Present in a `window` attention's masks (module comment). */
  window?: WindowMasks;
}

/**
 * New rows a row-independent (`window`) attention reads through its window: a verification pass
 * carries the last verified token(s) (up to 2, after a round that accepted every candidate) and
 * up to 32 candidates (engine/policy-registry.ts MAX_DRAFT_LIMIT), so every decoding pass's rows
 * are bitwise the same as in one-token passes; longer passes (prompt pieces) are exact in value.
 */
export const ROW_WINDOW = 34;

/** What a `window` attention's layers share per pass (shapes with G = heads / kv_heads, GS = G S rows). */
interface WindowMasks {
  /** [B, 1, GS, C]: 0 where a buffer slot is below both the row's anchor and the sequence's length. */
  buffer: string;
  /** [B, 1, GS, W]: 0 where a window slot is a position (>= 0). */
  window: string;
  /** [GS, S]: 0 where the pass's new row u lies below the row's anchor. */
  third: string;
  /** [GS, 1] bool: the row has a third part (it is the W-th or later new row of its sequence). */
  hasThird: string;
  /** [B, 1, S W, 1] bool: the window slot is in the buffer (else among the pass's new rows). */
  inBuffer: string;
  /** GatherElements indices [B, KV, G S, W] of each row's window slots among the buffer's score columns, and among the new rows' (clipped). */
  scoreSlot: string;
  scoreNew: string;
  /** [B, 1, G S, W] bool: the window slot is in the buffer (else among the pass's new rows). */
  scoreInBuffer: string;
  /** Gather indices [B, KV, S W] of each row's window slots among the value buffer's rows [B KV C, D] and the new values' [B KV S, D]. */
  valueRows: string;
  newRows: string;
  /** [2] int64: C, W (the softmax's first two parts). */
  twoParts: string;
  /** [2] int64: C + W, S. */
  threeParts: string;
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
export function inplaceMasks(g: GraphBuilder, groups: number, window?: { kvHeads: number; headDim: number }): InplaceMasks {
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
    ...(window ? { window: windowMasks(g, groups, window.kvHeads, capacity, fed, steps) } : {}),
  };
}

/** The per-pass part of the `window` attention (module comment; {@link WindowMasks}). */
function windowMasks(g: GraphBuilder, groups: number, kvHeads: number, capacity: string, fed: string, steps: string): WindowMasks {
  const W = ROW_WINDOW;
  const i64 = (v: number[], dims?: number[]) => g.constant('int64', v, dims);
  const zero = g.constant('float32', [0], []);
  const masked = g.constant('float32', [MASKED], []);
  const additive = (allowed: string) => g.op('Where', [allowed, zero, masked]);
  /** [B, S, X] -> [B, 1, G S, X]. */
  const byRow = (t: string) => {
    const one = g.op('Unsqueeze', [t, i64([1])]);
    return groups === 1 ? one : g.op('Tile', [one, i64([1, 1, groups, 1])]);
  };
  const past = g.op('Unsqueeze', [PAST_LENGTH_INPUT, i64([1])]); // [B, 1]
  const slot = g.op('Add', [past, g.op('Unsqueeze', [steps, i64([0])])]); // [B, S]: p
  const windowSlot = g.op('Add', [g.op('Unsqueeze', [slot, i64([2])]), i64(Array.from({ length: W }, (_, i) => i - (W - 1)))]); // [B, S, W]
  const past3 = g.op('Unsqueeze', [past, i64([2])]); // [B, 1, 1]
  const lastSlot = g.op('Sub', [capacity, i64([1])]);
  const lastNew = g.op('Sub', [fed, i64([1])]);
  const flat = (t: string) => g.op('Reshape', [t, i64([0, 1, -1, 1])]); // [B, S, W] -> [B, 1, S W, 1]
  const slotClipped = g.op('Clip', [windowSlot, i64([0], []), g.op('Squeeze', [lastSlot, i64([0])])]); // [B, S, W]
  const newClipped = g.op('Clip', [g.op('Sub', [windowSlot, past3]), i64([0], []), g.op('Squeeze', [lastNew, i64([0])])]);
  const inBuffer = g.op('Less', [windowSlot, past3]);
  // Flat row indices: the value rows of entry b, KV head h start at (b KV + h) C in the buffer and (b KV + h) S in the new values.
  const bySlot = (t: string) => g.op('Reshape', [t, i64([0, 1, -1])]); // [B, S, W] -> [B, 1, S W]
  const rowIndex = bySlot(slotClipped);
  const newRow = bySlot(newClipped);
  const heads = g.op('Mul', [shapeDim(g, PAST_LENGTH_INPUT, 0), i64([kvHeads])]);
  const headRows = g.op('Reshape', [g.op('Range', [i64([0], []), g.op('Squeeze', [heads, i64([0])]), i64([1], [])]), i64([-1, kvHeads, 1])]); // [B, KV, 1]
  const acrossScores = i64([1, kvHeads, 1, 1]);
  // Buffer slots below min(length, anchor), anchor = p - W + 1.
  const limit = g.op('Min', [past, g.op('Add', [slot, i64([-(W - 1)], [])])]); // [B, S]
  const slots = g.op('Range', [i64([0], []), g.op('Squeeze', [capacity, i64([0])]), i64([1], [])]);
  const below = g.op('Less', [slots, g.op('Unsqueeze', [limit, i64([2])])]); // [B, S, C]
  // The pass's new row u is below row j's anchor when u < j - W + 1.
  const thirdAllowed = g.op('Less', [g.op('Unsqueeze', [steps, i64([0])]), g.op('Unsqueeze', [g.op('Add', [steps, i64([-(W - 1)], [])]), i64([1])])]); // [S, S]
  const tileRows = (t: string) => (groups === 1 ? t : g.op('Tile', [t, i64([groups, 1])]));
  return {
    buffer: byRow(additive(below)),
    window: byRow(additive(g.op('GreaterOrEqual', [windowSlot, i64([0], [])]))),
    third: tileRows(additive(thirdAllowed)),
    hasThird: tileRows(g.op('Unsqueeze', [g.op('GreaterOrEqual', [steps, i64([W], [])]), i64([1])])),
    inBuffer: flat(inBuffer),
    scoreSlot: g.op('Expand', [byRow(slotClipped), acrossScores]),
    scoreNew: g.op('Expand', [byRow(newClipped), acrossScores]),
    scoreInBuffer: byRow(inBuffer),
    valueRows: g.op('Add', [g.op('Mul', [headRows, capacity]), rowIndex]),
    newRows: g.op('Add', [g.op('Mul', [headRows, fed]), newRow]),
    twoParts: g.op('Concat', [capacity, i64([W])], { attrs: { axis: 0 } }),
    threeParts: g.op('Concat', [g.op('Add', [capacity, i64([W])]), fed], { attrs: { axis: 0 } }),
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
  if (masks.window) return packedRows(g, windowContext(g, layer, query, split(k!, kvHeads), split(v!, kvHeads), shape, masks.window), shape);
  const pastScores = g.op('Add', [g.op('MatMul', [query, `past_key_values.${layer}.key`]), masks.past]); // [B, KV, G S, C]
  const newScores = g.op('Add', [g.op('MatMul', [query, split(k!, kvHeads, [0, 2, 3, 1])]), masks.causal]); // [B, KV, G S, S]
  const probs = g.op('Softmax', [g.op('Concat', [pastScores, newScores], { attrs: { axis: -1 } })], { attrs: { axis: -1 } });
  const [pastProbs, newProbs] = g.opN('Split', [probs, masks.split], 2, { attrs: { axis: -1 } });
  const context = g.op('Add', [g.op('MatMul', [pastProbs!, `past_key_values.${layer}.value`]), g.op('MatMul', [newProbs!, split(v!, kvHeads)])]); // [B, KV, G S, D]
  return packedRows(g, context, shape);
}

/** An attention's output [B, KV, G S, D] back to the packed rows [1, T, heads D]. */
function packedRows(g: GraphBuilder, context: string, shape: AttentionShape): string {
  const { heads, kvHeads, headDim } = shape;
  const groups = heads / kvHeads;
  const qWidth = heads * headDim;
  // Back to the packed rows: [B, KV, G S, D] -> [B, S, heads D] -> [B S, heads D] -> [1, T, heads D].
  const bySequence =
    groups === 1
      ? g.op('Transpose', [context], { attrs: { perm: [0, 2, 1, 3] } })
      : g.op('Transpose', [g.op('Reshape', [context, g.constant('int64', [0, kvHeads, groups, -1, headDim])])], { attrs: { perm: [0, 3, 1, 2, 4] } });
  const flat = g.op('Reshape', [bySequence, g.constant('int64', [-1, qWidth])]);
  return g.op('Unsqueeze', [g.op('Gather', [flat, PACKED_INDEX_INPUT], { attrs: { axis: 0 } }), g.constant('int64', [0])]);
}

/**
 * The `window` attention's context (module comment) of queries [B, KV, G S, D] (stacked as
 * inplaceAttention stacks them) over layer `layer`'s buffers and the pass's new keys and values
 * [B, KV, S, D]: [B, KV, G S, D].
 */
function windowContext(g: GraphBuilder, layer: number, query: string, newKeys: string, newValues: string, shape: AttentionShape, m: WindowMasks): string {
  const { heads, kvHeads, headDim: D } = shape;
  const G = heads / kvHeads;
  const W = ROW_WINDOW;
  const i64 = (v: number[]) => g.constant('int64', v);
  const keyBuffer = `past_key_values.${layer}.key`; // [B, KV, D, C]
  const valueBuffer = `past_key_values.${layer}.value`; // [B, KV, C, D]
  // One query head per KV head: the MatMuls with the first left row appended (a lone row takes another kernel), dropped after.
  // With G >= 2 query heads per KV head every product has G S >= 2 left rows already.
  const rows = G === 1 ? g.op('Slice', [g.op('Shape', [query]), i64([2]), i64([3])]) : '';
  const padRow = (t: string) => (G === 1 ? g.op('Concat', [t, g.op('Slice', [t, i64([0]), i64([1]), i64([2])])], { attrs: { axis: 2 } }) : t);
  const unpad = (t: string) => (G === 1 ? g.op('Slice', [t, i64([0]), rows, i64([2])]) : t);
  const paddedQuery = padRow(query);
  const gather = (data: string, index: string, axis: number) => g.op('GatherElements', [data, index], { attrs: { axis } });
  // Scores against the buffer [B, KV, G S, C] and against the pass's new keys [B, KV, G S, S], unmasked.
  const rawBuffer = unpad(g.op('MatMul', [paddedQuery, keyBuffer]));
  const newKeysT = g.op('Transpose', [newKeys], { attrs: { perm: [0, 1, 3, 2] } }); // [B, KV, D, S]
  // And the new keys with their first column appended (a lone right column likewise), dropped after.
  const padColumn = g.op('Concat', [newKeysT, g.op('Slice', [newKeysT, i64([0]), i64([1]), i64([3])])], { attrs: { axis: 3 } });
  const rawNew = unpad(g.op('Slice', [g.op('MatMul', [paddedQuery, padColumn]), i64([0]), g.op('Shape', [newKeys], { attrs: { start: 2, end: 3 } }), i64([3])]));
  // Each row's window scores [B, KV, G S, W], picked from whichever product holds the slot's key.
  const windowScores = g.op('Add', [g.op('Where', [m.scoreInBuffer, gather(rawBuffer, m.scoreSlot, 3), gather(rawNew, m.scoreNew, 3)]), m.window]);
  // Window values [B, KV, S W, D]: whole rows of D taken from the buffer or the new values (a Gather over rows, not per element).
  const rowsOf = (t: string, index: string) => g.op('Gather', [g.op('Reshape', [t, i64([-1, D])]), index], { attrs: { axis: 0 } });
  const windowValues = g.op('Where', [m.inBuffer, rowsOf(valueBuffer, m.valueRows), rowsOf(newValues, m.newRows)]);
  const bufferScores = g.op('Add', [rawBuffer, m.buffer]); // [B, KV, G S, C]
  const thirdScores = g.op('Add', [rawNew, m.third]); // [B, KV, G S, S]
  const two = g.op('Softmax', [g.op('Concat', [bufferScores, windowScores], { attrs: { axis: -1 } })], { attrs: { axis: -1 } });
  const three = g.op('Softmax', [g.op('Concat', [bufferScores, windowScores, thirdScores], { attrs: { axis: -1 } })], { attrs: { axis: -1 } });
  const [threeFirst, thirdProbs] = g.opN('Split', [three, m.threeParts], 2, { attrs: { axis: -1 } });
  const [bufferProbs, windowProbs] = g.opN('Split', [g.op('Where', [m.hasThird, threeFirst!, two]), m.twoParts], 2, { attrs: { axis: -1 } });
  const valuesPerRow = g.op('Unsqueeze', [g.op('Reshape', [windowValues, i64([0, 0, -1, W, D])]), i64([2])]); // [B, KV, 1, S, W, D]
  const windowContext = g.op('Reshape', [g.op('MatMul', [g.op('Reshape', [windowProbs!, i64([0, 0, G, -1, 1, W])]), valuesPerRow]), i64([0, 0, -1, D])]);
  const bufferContext = unpad(g.op('MatMul', [padRow(bufferProbs!), valueBuffer]));
  return g.op('Add', [g.op('Add', [bufferContext, windowContext]), g.op('MatMul', [thirdProbs!, newValues])]);
}
