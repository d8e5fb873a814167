/**
 * A draft graph whose logits cover another vocabulary than its lm_head's: the draft's logits
 * row is laid out in the target's token ids (the two share one tokenizer, so id j is the same
 * token in both), with -Infinity (q = 0) in every column the draft does not compute.
 *
 * Two uses, one rewrite:
 * - FR-Spec (arXiv 2502.14856, token-map.ts): the lm_head's MatMul keeps only the columns of a
 *   frequency-ranked token map, [hidden, V'] instead of [hidden, V], which is most of a small
 *   draft's pass at V = 151,936;
 * - draft and target vocabularies of different padded sizes (Qwen2.5-0.5B pads to 151,936,
 *   Qwen2.5-7B to 152,064): the draft's row is cut or padded to the target's width, and ids the
 *   draft's embedding has no row for (the target's padding, which only a target with random or
 *   untrained padding rows ever emits) are read as the draft's last id, which changes what the
 *   draft proposes and never what is accepted.
 *
 * After the rewrite, for logits rows [B, T, K] of the kept columns (named DRAFT_SUBSET_LOGITS):
 *
 *   logits = Gather(Pad(subset, last axis + 1 column of -Infinity), columnOf, axis 2)  // [B, T, V_out]
 *
 * where columnOf[j] is j's place among the kept ids, or K (the -Infinity column) for an id not
 * kept. The kept ids are an initializer (DRAFT_SUBSET_IDS, int64 [K]) so that a consumer that
 * only needs the argmax (draft-loop-graph.ts) can take it over K columns and map it back.
 *
 * With `columns: 'kept'` the graph leaves the spread out: `logits` is [B, T, K], the kept
 * columns in ascending id order, and the engine maps a chosen column c back to ids[c]
 * (engine/vocab-map.ts). At K = 32,768 of V = 151,936 that saves writing, copying out and
 * scanning 119,168 columns of -Infinity per row (600 KB a row at V = 151,936, float32).
 *
 * Why this is exact (speculative decoding stays distributed as the target): q is the draft's
 * softmax over the kept columns and 0 elsewhere; candidates are drawn from that q, acceptance
 * compares p(y) / q(y) for a kept y, and the residual norm(max(0, p - q)) puts mass on every
 * token the target gives more than q, including every token outside the map.
 */
import { DATA_TYPE, decodedGraph, onnx, type ModelProto, type NodeProto, type TensorProto } from './graph-builder.js';

/** Value holding the logits of the kept columns [B, T, K]. */
export const DRAFT_SUBSET_LOGITS = 'draft_vocab/subset_logits';
/** Initializer holding the kept token ids, ascending (int64 [K]). */
export const DRAFT_SUBSET_IDS = 'draft_vocab/token_ids';
/** Name prefix of the nodes that spread the subset into the full row (a consumer of the subset alone may leave them out). */
export const DRAFT_SCATTER_PREFIX = 'draft_vocab/scatter';
/** Metadata key recording the rewrite. */
export const DRAFT_VOCAB_KEY = 'specd.draft_vocab';

/** What the rewritten graph computes (module comment). */
export interface DraftVocabMap {
  /** Token ids whose logits the draft computes, ascending, each below min(draftVocab, outVocab). // [K] */
  ids: Int32Array;
  /** Columns of the draft's own lm_head (its config's vocab_size). */
  draftVocab: number;
  /** Width of the logits row the graph outputs (the target's vocab_size). */
  outVocab: number;
}

/** Why a graph cannot be rewritten (an lm_head this module does not read). */
export class DraftVocabError extends Error {
  override name = 'DraftVocabError';
}

/**
 * The map for a draft of `draftVocab` columns verifying against a target of `outVocab`,
 * restricted to `keep` (a token map's ids) when given.
 * @throws RangeError for ids that are not ascending and unique
 */
export function draftVocabMap(draftVocab: number, outVocab: number, keep?: Int32Array): DraftVocabMap {
  const shared = Math.min(draftVocab, outVocab);
  let ids: Int32Array;
  if (keep) {
    for (let i = 1; i < keep.length; i++) if (!(keep[i]! > keep[i - 1]!)) throw new RangeError('token-map ids must be ascending and unique');
    ids = keep.filter((id) => id >= 0 && id < shared);
  } else ids = Int32Array.from({ length: shared }, (_, i) => i);
  return { ids, draftVocab, outVocab };
}

/** Whether `map` changes anything (all of the draft's columns kept and the widths equal: no). */
export function changesLogits(map: DraftVocabMap): boolean {
  return map.ids.length !== map.draftVocab || map.outVocab !== map.draftVocab;
}

/** What a rewritten draft's `logits` hold: a row of the target's width, or the kept columns alone. */
export type LogitColumns = 'vocabulary' | 'kept';

/**
 * Rewrites `model` in place (module comment): the lm_head producing `logits` keeps the columns
 * `map.ids`, the output `logits` becomes [B, T, map.outVocab] (`columns` 'vocabulary') or
 * [B, T, map.ids.length] (`columns` 'kept': column c is token map.ids[c]), and `input_ids` at or
 * above `map.draftVocab` are read as `map.draftVocab - 1`.
 * @param model a decoder graph with its weights inline (a rebuilt graph: gpt2-graph.ts, llama-graph.ts)
 * @throws DraftVocabError when `logits` does not come from a MatMul or MatMulNBits over a
 *   constant weight of map.draftVocab columns, or the graph was rewritten already
 */
export function mapDraftVocab(model: ModelProto, map: DraftVocabMap, columns: LogitColumns = 'vocabulary'): void {
  const graph = decodedGraph(model);
  if (model.metadataProps.some((p) => p.key === DRAFT_VOCAB_KEY)) throw new DraftVocabError('the draft graph was already restricted to a vocabulary');
  const producer = new Map<string, NodeProto>();
  for (const n of graph.node) for (const o of n.output) producer.set(o, n);
  const inits = new Map<string, TensorProto>(graph.initializer.map((t) => [t.name ?? '', t]));

  // The lm_head: the MatMul(NBits) that `logits` is (an Identity of).
  let value = 'logits';
  let node = producer.get(value);
  while (node?.opType === 'Identity') {
    value = node.input[0]!;
    node = producer.get(value);
  }
  if (!node || (node.opType !== 'MatMul' && node.opType !== 'MatMulNBits')) throw new DraftVocabError(`logits come from ${node?.opType ?? 'no node'}, not from an lm_head MatMul`);
  const lmHead = node;
  const K = map.ids.length;
  if (K === 0) throw new DraftVocabError('no token of the map is in the draft\'s vocabulary');
  const replaced = lmHead.input.slice(1);
  const gathered = lmHead.opType === 'MatMul' ? gatherMatMulColumns(inits, lmHead, map) : gatherNBitsRows(inits, lmHead, map);
  lmHead.output[0] = DRAFT_SUBSET_LOGITS;

  // The full row: one -Infinity column padded on, then every output id gathered from its column.
  const columnOf = new BigInt64Array(map.outVocab).fill(BigInt(K));
  map.ids.forEach((id, c) => (columnOf[id] = BigInt(c)));
  const added: TensorProto[] = [
    tensor(DRAFT_SUBSET_IDS, 'int64', new Uint8Array(BigInt64Array.from(map.ids, BigInt).buffer), [K]),
    tensor(`${DRAFT_SCATTER_PREFIX}/column_of`, 'int64', new Uint8Array(columnOf.buffer), [map.outVocab]),
    tensor(`${DRAFT_SCATTER_PREFIX}/pads`, 'int64', new Uint8Array(BigInt64Array.of(0n, 0n, 0n, 0n, 0n, 1n).buffer), [6]),
    tensor(`${DRAFT_SCATTER_PREFIX}/minus_inf`, 'float32', new Uint8Array(Float32Array.of(-Infinity).buffer), []),
  ];
  const padded = `${DRAFT_SCATTER_PREFIX}/padded`;
  const kept = onnx.NodeProto.create({ opType: 'Identity', name: `${DRAFT_SCATTER_PREFIX}/kept`, input: [DRAFT_SUBSET_LOGITS], output: ['logits'] });
  const scatter = columns === 'kept' ? [kept] : [
    onnx.NodeProto.create({ opType: 'Pad', name: `${DRAFT_SCATTER_PREFIX}/pad`, input: [DRAFT_SUBSET_LOGITS, `${DRAFT_SCATTER_PREFIX}/pads`, `${DRAFT_SCATTER_PREFIX}/minus_inf`], output: [padded] }),
    onnx.NodeProto.create({
      opType: 'Gather',
      name: `${DRAFT_SCATTER_PREFIX}/gather`,
      input: [padded, `${DRAFT_SCATTER_PREFIX}/column_of`],
      output: ['logits'],
      attribute: [onnx.AttributeProto.create({ name: 'axis', type: onnx.AttributeProto.AttributeType.INT, i: 2 })],
    }),
  ];
  // Nodes between the lm_head and `logits` (Identities) go; the scatter takes their place.
  const between = new Set<NodeProto>();
  for (let n = producer.get('logits'); n && n !== lmHead; n = producer.get(n.input[0]!)) between.add(n);
  const nodes = graph.node.filter((n) => !between.has(n));

  // Ids beyond the draft's embedding read its last row (module comment).
  const clamp: NodeProto[] = [];
  if (map.outVocab > map.draftVocab) {
    const clamped = 'draft_vocab/input_ids';
    added.push(tensor('draft_vocab/last_id', 'int64', new Uint8Array(BigInt64Array.of(BigInt(map.draftVocab - 1)).buffer), []));
    for (const n of nodes) n.input = n.input.map((i) => (i === 'input_ids' ? clamped : i));
    clamp.push(onnx.NodeProto.create({ opType: 'Min', name: 'draft_vocab/clamp', input: ['input_ids', 'draft_vocab/last_id'], output: [clamped] }));
  }
  graph.node = [...clamp, ...nodes, ...scatter];
  // The full-vocabulary weights go unless another node reads them (an lm_head tied in the graph itself).
  const read = new Set(graph.node.flatMap((n) => n.input));
  graph.initializer = [...graph.initializer.filter((t) => !replaced.includes(t.name ?? '') || read.has(t.name ?? '')), ...gathered, ...added.filter((t) => read.has(t.name ?? '') || t.name === DRAFT_SUBSET_IDS)];
  const out = graph.output.find((o) => o.name === 'logits');
  const dims = out?.type?.tensorType?.shape?.dim;
  if (dims && dims.length > 0) dims[dims.length - 1] = onnx.TensorShapeProto.Dimension.create({ dimValue: columns === 'kept' ? K : map.outVocab });
  model.metadataProps.push(onnx.StringStringEntryProto.create({ key: DRAFT_VOCAB_KEY, value: `kept=${K} draft_vocab=${map.draftVocab} out_vocab=${map.outVocab} columns=${columns}` }));
}

function tensor(name: string, dtype: 'int64' | 'float32', rawData: Uint8Array, dims: number[]): TensorProto {
  return onnx.TensorProto.create({ name, dims, dataType: DATA_TYPE[dtype], rawData }) as TensorProto;
}

function constantWeight(inits: Map<string, TensorProto>, name: string, what: string): TensorProto {
  const t = inits.get(name);
  if (!t) throw new DraftVocabError(`the lm_head's ${what} ${name} is not a constant of the graph`);
  if (!t.rawData || t.rawData.byteLength === 0 || (t.externalData?.length ?? 0) > 0) throw new DraftVocabError(`the lm_head's ${what} ${name} is not stored inline (a rebuilt graph's weights are)`);
  return t;
}

/** MatMul [.., E] x [E, V]: the weight's columns `map.ids` become a new [E, K] initializer. */
function gatherMatMulColumns(inits: Map<string, TensorProto>, lmHead: NodeProto, map: DraftVocabMap): TensorProto[] {
  const w = constantWeight(inits, lmHead.input[1]!, 'weight');
  const [E, V] = (w.dims ?? []).map(Number);
  if (w.dataType !== DATA_TYPE.float32 || w.dims?.length !== 2 || V !== map.draftVocab) {
    throw new DraftVocabError(`the lm_head's weight is not float32 [hidden, ${map.draftVocab}] (dims [${(w.dims ?? []).join(', ')}])`);
  }
  const raw = w.rawData!;
  const src = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  const K = map.ids.length;
  const out = new Float32Array(E! * K);
  for (let e = 0; e < E!; e++) {
    const row = e * V;
    const to = e * K;
    for (let c = 0; c < K; c++) out[to + c] = src[row + map.ids[c]!]!;
  }
  const name = `${w.name}/draft_vocab`;
  lmHead.input[1] = name;
  return [tensor(name, 'float32', new Uint8Array(out.buffer), [E!, K])];
}

/** MatMulNBits: its weight, scales and zero points are laid out by output column (N-major), so the kept columns are rows of each. */
function gatherNBitsRows(inits: Map<string, TensorProto>, lmHead: NodeProto, map: DraftVocabMap): TensorProto[] {
  const nAttr = lmHead.attribute.find((a) => a.name === 'N');
  if (!nAttr || Number(nAttr.i) !== map.draftVocab) throw new DraftVocabError(`the lm_head's MatMulNBits has N = ${nAttr ? Number(nAttr.i) : 'none'}, not ${map.draftVocab}`);
  const K = map.ids.length;
  const out: TensorProto[] = [];
  for (const slot of [1, 2, 3]) {
    const name = lmHead.input[slot];
    if (!name) continue;
    const t = constantWeight(inits, name, `MatMulNBits input ${slot}`);
    const raw = t.rawData!;
    const stride = raw.byteLength / map.draftVocab;
    if (!Number.isInteger(stride)) throw new DraftVocabError(`the lm_head's ${name} does not hold ${map.draftVocab} equal rows`);
    const rows = new Uint8Array(K * stride);
    map.ids.forEach((id, c) => rows.set(raw.subarray(id * stride, (id + 1) * stride), c * stride));
    const dims = (t.dims ?? []).map(Number);
    const outDims = dims.length === 3 ? [K, dims[1]!, dims[2]!] : [(dims[0]! / map.draftVocab) * K];
    const renamed = `${name}/draft_vocab`;
    out.push(onnx.TensorProto.create({ name: renamed, dims: outDims, dataType: t.dataType, rawData: rows }) as TensorProto);
    lmHead.input[slot] = renamed;
  }
  nAttr.i = K;
  return out;
}
