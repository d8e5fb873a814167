/**
 * A round's draft phase as one ONNX graph: an ONNX `Loop` whose body is a draft step of an
 * in-place decoder graph (inplace-attention.ts), with the candidate's choice and the stop rule
 * of the draft policies computed inside, so that a round's drafting is one `session.run()`
 * instead of one per candidate (on the bundled pair a draft step's run and its bindings cost
 * more than its arithmetic).
 *
 * Each iteration s = 1, 2, ... feeds the decoder every token of the phase so far, x's tokens
 * the draft has not seen and the candidates y_1..y_{s-1}, after the sequence's cached past
 * (the KV buffers are read, not written: the body's attention sees the phase's tokens as the
 * pass's own rows), and from the last row's logits it takes
 *
 *   y_s = argmax(logits)                          (greedy decoding: the first maximum)
 *   q_s(y_s) = softmax(logits)[y_s]               (temperature 1, as the confidence rule reads it)
 *   P_s = sigmoid(g_s + w . [1, log q_s(y_s), log max q_s, H(q_s)])
 *
 * where g_s is the fused acceptance head's logit at that row (0 for a draft without a head) and
 * w the candidate weights already combined for the decoding temperature (candidate-features.ts:
 * w_f = sum_j lambda_j(T) u_{j,f}). The loop goes on while none of these holds:
 *
 *   s >= K_min and 1 - P_1 ... P_s > h             (SpecDec++, arXiv 2405.19715)
 *   q_s(y_s) < p_min                               (confidence: llama.cpp's rule)
 *
 * and at most `max_steps` times (fixed K, K_max and the round's cap all come in through it).
 * Recomputing the phase's earlier tokens at every step costs a few rows of projections on the
 * small models this is for; it keeps the decoder's graph unchanged (its nodes are the body).
 *
 * Interface: inputs `draft_ids` [1, n] (the unseen tokens, n >= 1), `past_sequence_length` [1]
 * and the KV buffers as the decoder takes them, `max_steps` [] int64, `k_min` [] int64,
 * `threshold` [] float (h; > 1 turns the rule off), `p_min` [] float (0: off), `candidate_weights`
 * [4] float. Outputs: `draft_tokens` [steps, 1] int64, `accept_probs` [steps, 1] and
 * `draft_probs` [steps, 1] float (P_s and q_s(y_s) per step), and `phase_kv_rows.{i}`
 * [1, n + steps - 1, width]: the new KV rows of every token the phase fed (the last candidate is
 * not fed), for the caller to write into its buffers as after a pass.
 */
import { DATA_TYPE, decodedGraph, onnx, type ModelProto, type NodeProto, type TensorProto, type ValueInfoProto } from './graph-builder.js';
import { DRAFT_SCATTER_PREFIX, DRAFT_SUBSET_IDS, DRAFT_SUBSET_LOGITS } from './draft-vocab-graph.js';
import { KV_ROWS_PREFIX, PACKED_INDEX_INPUT, PADDED_SOURCE_INPUT, PAST_LENGTH_INPUT, POSITION_IDS_INPUT } from './inplace-attention.js';

/** Inputs and outputs of the draft-phase graph (module comment). */
export const PHASE_IDS_INPUT = 'draft_ids';
export const PHASE_MAX_STEPS_INPUT = 'max_steps';
export const PHASE_K_MIN_INPUT = 'k_min';
export const PHASE_THRESHOLD_INPUT = 'threshold';
export const PHASE_P_MIN_INPUT = 'p_min';
export const PHASE_WEIGHTS_INPUT = 'candidate_weights';
export const PHASE_TOKENS_OUTPUT = 'draft_tokens';
export const PHASE_ACCEPT_OUTPUT = 'accept_probs';
export const PHASE_PROBS_OUTPUT = 'draft_probs';
export const phaseKvRowsOutput = (layer: number) => `phase_${KV_ROWS_PREFIX}${layer}`;
/** Number of candidate weights after combining them for a temperature: bias, log q(y), log max q, entropy. */
export const PHASE_WEIGHTS = 4;

/** Why a decoder graph cannot run as a draft phase (the engine then drafts step by step). */
export class NoDraftPhaseError extends Error {
  override name = 'NoDraftPhaseError';
}

/** Decoder inputs the body computes itself (the decoder's other inputs come from the outer graph). */
const BODY_COMPUTED = ['input_ids', POSITION_IDS_INPUT, PADDED_SOURCE_INPUT, PACKED_INDEX_INPUT, 'logits_from'];
const ACCEPT_LOGIT = 'accept_logit';
/** k_min - 1, computed once per run: step s = iteration + 1 applies the rule once iteration >= k_min - 1. */
const K_MIN_LESS_ONE = 'phase/k_min_less_one';

/** A tiny node factory over raw protos (the body is a GraphProto of its own). */
class Nodes {
  readonly list: NodeProto[] = [];
  private n = 0;
  constructor(private readonly prefix: string) {}

  op(opType: string, inputs: string[], attrs: Record<string, number | number[]> = {}, outputs?: string[]): string {
    const out = outputs ?? [`${this.prefix}${opType.toLowerCase()}_${this.n++}`];
    const attribute = Object.entries(attrs).map(([name, v]) =>
      Array.isArray(v)
        ? onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.INTS, ints: v })
        : onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.INT, i: v }),
    );
    this.list.push(onnx.NodeProto.create({ opType, name: `${out[0]}/node`, input: inputs, output: out, attribute }));
    return out[0]!;
  }

  constant(name: string, dtype: 'int64' | 'float32' | 'bool', values: number[], dims: number[]): string {
    const raw =
      dtype === 'int64'
        ? new Uint8Array(BigInt64Array.from(values, BigInt).buffer)
        : dtype === 'float32'
          ? new Uint8Array(Float32Array.from(values).buffer)
          : Uint8Array.from(values);
    const value = onnx.TensorProto.create({ name, dims, dataType: DATA_TYPE[dtype], rawData: raw });
    const out = `${this.prefix}${name}_${this.n++}`;
    this.list.push(
      onnx.NodeProto.create({
        opType: 'Constant',
        name: `${out}/node`,
        output: [out],
        attribute: [onnx.AttributeProto.create({ name: 'value', type: onnx.AttributeProto.AttributeType.TENSOR, t: value })],
      }),
    );
    return out;
  }
}

function valueInfo(name: string, dtype: 'int64' | 'float32' | 'bool', dims?: (number | string)[]): ValueInfoProto {
  const shape = dims && { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) };
  return onnx.ValueInfoProto.create({ name, type: { tensorType: { elemType: DATA_TYPE[dtype], shape } } });
}

/**
 * The draft-phase graph of an in-place decoder graph (module comment).
 * @param decoder an in-place decoder (gpt2-graph.ts or llama-graph.ts `inplace`), optionally
 *   with the acceptance head fused in (`accept_logit`); it is not modified
 * @throws NoDraftPhaseError when `decoder` is not an in-place graph of one it can run (no grouped-query attention, float32 rows)
 */
export function buildDraftLoopGraph(decoder: ModelProto): ModelProto {
  const src = decodedGraph(decoder);
  const inputNames = src.input.map((i) => i.name ?? '');
  if (!inputNames.includes(PAST_LENGTH_INPUT)) throw new NoDraftPhaseError('the draft phase runs in-place decoder graphs only (--graph inplace)');
  const outputNames = src.output.map((o) => o.name ?? '');
  const kvRows = outputNames.filter((n) => n.startsWith(KV_ROWS_PREFIX));
  const widthOf = (name: string): number => {
    const dim = src.output.find((o) => o.name === name)?.type?.tensorType?.shape?.dim?.at(-1);
    const width = Number(dim?.dimValue ?? 0);
    if (!(width > 0)) throw new NoDraftPhaseError(`${name} has no fixed width`);
    return width;
  };
  for (const name of kvRows) {
    if (src.output.find((o) => o.name === name)?.type?.tensorType?.elemType !== DATA_TYPE.float32) throw new NoDraftPhaseError(`${name} is not float32`);
  }
  const logitsInfo = src.output.find((o) => o.name === 'logits');
  // A draft restricted to a token map (draft-vocab-graph.ts): the candidate is chosen over the
  // kept columns and mapped to its token id; the columns outside (q = 0) change neither the
  // argmax nor q(y) nor the entropy, so the spread into the full row is left out of the step.
  const subsetIds = src.initializer.find((t) => t.name === DRAFT_SUBSET_IDS);
  const vocab = subsetIds ? Number(subsetIds.dims?.[0] ?? 0) : Number(logitsInfo?.type?.tensorType?.shape?.dim?.at(-1)?.dimValue ?? 0);
  if (!(vocab > 0)) throw new NoDraftPhaseError('the decoder graph has no fixed vocabulary size on logits');
  const hasHead = outputNames.includes(ACCEPT_LOGIT);

  // The body: one draft step. It feeds `ids` (x's unseen tokens on the first step, the last
  // candidate after), whose rows come after the `rows_in` of the phase's earlier tokens.
  const b = new Nodes('step/');
  // The decoder's own inputs the loop carries keep their names (`input_ids`, `packed_index`, `logits_from`).
  const [iter, condIn, ids, prod] = ['step/iteration', 'step/cond_in', 'input_ids', 'step/prod'];
  const rowsIn = kvRows.map((_, i) => `step/rows_in.${i}`);
  // What depends only on how many tokens a step feeds (n on the first, 1 after) is carried by
  // the loop rather than computed at every step: each node of the body costs about a
  // microsecond per step on the CPU, whatever its size.
  const [fed, before, packedIndex, logitsFrom, lastRows] = ['step/fed', 'step/before', PACKED_INDEX_INPUT, 'logits_from', 'step/last_rows'];
  const i64 = (name: string, v: number[], dims: number[] = [v.length]) => b.constant(name, 'int64', v, dims);
  const zero = i64('zero', [0], []);
  const one = i64('one', [1], []);
  const axis0 = i64('axis0', [0]);
  const seen = b.op('Add', [fed, before], {}, ['step/seen']); // t
  b.op('Unsqueeze', [b.op('Add', [b.op('Range', [before, seen, one]), PAST_LENGTH_INPUT]), axis0], {}, [POSITION_IDS_INPUT]);
  b.op('Unsqueeze', [b.op('Range', [zero, seen, one]), axis0], {}, [PADDED_SOURCE_INPUT]);
  // After the first step every step feeds one token: n = 1, rows [0], logits from row 0, the last row.
  const carriedAfter = { fed: i64('fed_next', [1], []), packed: i64('packed_next', [0]), logitsFrom: i64('logits_from_next', [0]), lastRows: i64('last_rows_next', [-1]) };
  const end = i64('end', [Number.MAX_SAFE_INTEGER]);
  const producer = new Map<string, NodeProto>();
  for (const node of src.node) for (const out of node.output) producer.set(out, node);
  const queryValues = new Set<string>();
  const keepLast = new Map<string, string>(); // value -> its last n rows along the query axis
  const lastOf = (value: string, axis: number): string => {
    if (!keepLast.has(value)) keepLast.set(value, b.op('Slice', [value, lastRows, end, i64(`axis_${keepLast.size}`, [axis])]));
    return keepLast.get(value)!;
  };
  // Each layer's rows as the attention reads them (an output may be an Identity of that value).
  const rowValues = kvRows.map((name) => {
    const node = producer.get(name);
    return node?.opType === 'Identity' ? node.input[0]! : name;
  });
  for (const node of src.node) {
    if (subsetIds && (node.name ?? '').startsWith(DRAFT_SCATTER_PREFIX)) continue;
    // A layer's rows leave the body as the value the attention reads (no Identity per step).
    if (node.opType === 'Identity' && kvRows.includes(node.output[0] ?? '')) continue;
    const copy = onnx.NodeProto.decode(onnx.NodeProto.encode(node).finish());
    const layer = rowValues.indexOf(node.output[0] ?? '');
    if (layer >= 0) {
      // The layer's rows: the earlier tokens' (carried) and the fed ones', which the attention reads as one pass.
      copy.output = [`step/fed_rows.${layer}`];
      b.list.push(copy);
      b.op('Concat', [rowsIn[layer]!, `step/fed_rows.${layer}`], { axis: 1 }, [rowValues[layer]!]);
      continue;
    }
    // Queries of the fed tokens only: the earlier tokens' outputs were computed by earlier steps.
    if (node.opType === 'MatMul' && /^past_key_values\.\d+\.key$/.test(node.input[1] ?? '')) queryValues.add(node.input[0]!);
    b.list.push(copy);
  }
  for (const node of b.list) {
    if (node.opType !== 'MatMul' || !queryValues.has(node.input[0] ?? '')) continue;
    node.input[0] = lastOf(node.input[0]!, 2);
    // Its scores' mask: the causal one [t, t] (rows of the fed tokens), or the past one (broadcast, kept).
    const add = b.list.find((n) => n.opType === 'Add' && n.input[0] === node.output[0]);
    const mask = add?.input[1];
    if (!add || !mask) throw new NoDraftPhaseError('unexpected attention layout: a score without its mask');
    if (producer.get(mask)?.opType === 'Tile') throw new NoDraftPhaseError('the draft phase runs decoders without grouped-query attention only');
    if (producer.get(mask)?.opType === 'Where') add.input[1] = lastOf(mask, 0);
  }
  // The candidate, its features and the stop rule, from the last row (module comment).
  const row = b.op('Reshape', [subsetIds ? DRAFT_SUBSET_LOGITS : 'logits', i64('vocab', [vocab])]); // [V], or [K] kept columns
  const column = b.op('ArgMax', [row], { axis: 0, keepdims: 1 }); // [1]
  const token = subsetIds ? b.op('Gather', [DRAFT_SUBSET_IDS, column]) : column;
  const max = b.op('ReduceMax', [row], { keepdims: 1 });
  const d = b.op('Sub', [row, max]);
  const e = b.op('Exp', [d]);
  const z = b.op('ReduceSum', [e], { keepdims: 1 }); // [1]
  const s = b.op('ReduceSum', [b.op('Mul', [e, d])], { keepdims: 1 });
  const logZ = b.op('Log', [z]);
  const logQ = b.op('Sub', [b.op('Gather', [d, column]), logZ]);
  const negLogZ = b.op('Neg', [logZ]);
  const entropy = b.op('Sub', [logZ, b.op('Div', [s, z])]);
  const base = b.op('Concat', [b.constant('one_f', 'float32', [1], [1]), logQ, negLogZ, entropy], { axis: 0 }); // [4]
  const g = hasHead
    ? b.op('Reshape', [b.op('Slice', [b.op('Reshape', [ACCEPT_LOGIT, i64('flat', [-1])]), i64('last', [-1]), i64('end', [Number.MAX_SAFE_INTEGER])]), i64('one_d', [1])])
    : b.constant('no_head', 'float32', [0], [1]);
  const acceptP = b.op('Sigmoid', [b.op('Add', [g, b.op('ReduceSum', [b.op('Mul', [base, PHASE_WEIGHTS_INPUT])], { keepdims: 1 })])]); // [1]
  const prob = b.op('Exp', [logQ]); // [1]
  const prodOut = b.op('Mul', [prod, acceptP], {}, ['step/prod_out']);
  const ruleOn = b.op('GreaterOrEqual', [iter, K_MIN_LESS_ONE]); // step iter + 1 >= k_min
  const unlikely = b.op('Greater', [b.op('Sub', [b.constant('one_f2', 'float32', [1], [1]), prodOut]), PHASE_THRESHOLD_INPUT]);
  const unsure = b.op('Less', [prob, PHASE_P_MIN_INPUT]);
  const stop = b.op('Or', [b.op('And', [ruleOn, unlikely]), unsure]); // [1]
  b.op('Squeeze', [b.op('Not', [stop]), i64('ax0e', [0])], {}, ['step/cond_out']);
  b.op('Unsqueeze', [token, i64('ax0f', [0])], {}, ['step/ids_out']); // [1, 1]: the next step feeds the candidate

  const carriedIn = [fed, before, packedIndex, logitsFrom, lastRows];
  const carriedOut = [carriedAfter.fed, seen, carriedAfter.packed, carriedAfter.logitsFrom, carriedAfter.lastRows];
  const o = new Nodes('phase/');
  const hoisted = hoistInvariants(b.list, src.initializer, new Set([iter, condIn, ids, prod, ...rowsIn, ...carriedIn]));
  const body = onnx.GraphProto.create({
    name: 'draft_step',
    node: topologicalOrder(hoisted.body),
    // The weights live in the body, as its own constants: ONNX Runtime pre-packs a MatMul's
    // constant weights and folds constants only within a graph (read from the outer scope they
    // are fed to every iteration as plain inputs).
    initializer: src.initializer,
    input: [
      valueInfo(iter, 'int64', []),
      valueInfo(condIn, 'bool', []),
      valueInfo(ids, 'int64'),
      valueInfo(prod, 'float32'),
      ...rowsIn.map((n) => valueInfo(n, 'float32')),
      valueInfo(fed, 'int64', []),
      valueInfo(before, 'int64', []),
      valueInfo(packedIndex, 'int64', ['fed']),
      ...[logitsFrom, lastRows].map((n) => valueInfo(n, 'int64', [1])),
    ],
    output: [
      valueInfo('step/cond_out', 'bool', []),
      valueInfo('step/ids_out', 'int64'),
      valueInfo('step/prod_out', 'float32'),
      ...rowValues.map((n) => valueInfo(n, 'float32')),
      ...carriedOut.map((n, i) => valueInfo(n, 'int64', i < 2 ? [] : i === 2 ? ['fed_next'] : [1])),
      valueInfo(token, 'int64'),
      valueInfo(acceptP, 'float32'),
      valueInfo(prob, 'float32'),
    ],
  });

  // The outer graph: the decoder's weights and KV inputs, the policy's knobs, what the body
  // computes once per run (hoisted), one Loop.
  o.list.push(...hoisted.outer);
  o.op('Sub', [PHASE_K_MIN_INPUT, o.constant('one', 'int64', [1], [])], {}, [K_MIN_LESS_ONE]);
  const axis = o.constant('axis0', 'int64', [0], [1]);
  const n = o.op('Squeeze', [o.op('Slice', [o.op('Shape', [PHASE_IDS_INPUT]), o.constant('ax1', 'int64', [1], [1]), o.constant('ax2', 'int64', [2], [1])]), axis]);
  const firstCarried = [
    n,
    o.constant('before_init', 'int64', [0], []),
    o.op('Range', [o.constant('zero', 'int64', [0], []), n, o.constant('one_r', 'int64', [1], [])]),
    o.op('Unsqueeze', [o.op('Sub', [n, o.constant('one_s', 'int64', [1], [])]), axis]),
    o.op('Unsqueeze', [o.op('Neg', [n]), axis]),
  ];
  const emptyRows = kvRows.map((name, i) => o.constant(`rows_init.${i}`, 'float32', [], [1, 0, widthOf(name)]));
  const loopInputs = [PHASE_MAX_STEPS_INPUT, o.constant('cond_init', 'bool', [1], []), PHASE_IDS_INPUT, o.constant('prod_init', 'float32', [1], [1]), ...emptyRows, ...firstCarried];
  const loopOutputs = [
    'phase/ids_final',
    'phase/prod_final',
    ...kvRows.map((_, i) => phaseKvRowsOutput(i)),
    ...carriedIn.map((_, i) => `phase/carried_final.${i}`),
    PHASE_TOKENS_OUTPUT,
    PHASE_ACCEPT_OUTPUT,
    PHASE_PROBS_OUTPUT,
  ];
  o.list.push(
    onnx.NodeProto.create({
      opType: 'Loop',
      name: 'phase/loop',
      input: loopInputs,
      output: loopOutputs,
      attribute: [onnx.AttributeProto.create({ name: 'body', type: onnx.AttributeProto.AttributeType.GRAPH, g: body })],
    }),
  );
  const kept = src.input.filter((i) => !BODY_COMPUTED.includes(i.name ?? ''));
  const graph = onnx.GraphProto.create({
    name: 'draft_phase',
    node: o.list,
    initializer: hoisted.initializers,
    input: [
      valueInfo(PHASE_IDS_INPUT, 'int64', [1, 'fed']),
      ...kept.map((i) => onnx.ValueInfoProto.create(i)),
      valueInfo(PHASE_MAX_STEPS_INPUT, 'int64', []),
      valueInfo(PHASE_K_MIN_INPUT, 'int64', []),
      valueInfo(PHASE_THRESHOLD_INPUT, 'float32', []),
      valueInfo(PHASE_P_MIN_INPUT, 'float32', []),
      valueInfo(PHASE_WEIGHTS_INPUT, 'float32', [PHASE_WEIGHTS]),
    ],
    output: [
      valueInfo(PHASE_TOKENS_OUTPUT, 'int64', ['steps', 1]),
      valueInfo(PHASE_ACCEPT_OUTPUT, 'float32', ['steps', 1]),
      valueInfo(PHASE_PROBS_OUTPUT, 'float32', ['steps', 1]),
      ...kvRows.map((n, i) => valueInfo(phaseKvRowsOutput(i), 'float32', [1, 'phase_fed', widthOf(n)])),
    ],
  });
  return onnx.ModelProto.create({ irVersion: decoder.irVersion, opsetImport: decoder.opsetImport, producerName: 'specd', graph, metadataProps: decoder.metadataProps });
}

/**
 * The nodes of a loop body that compute the same value at every step (loop-invariant code
 * motion): a node is moved to the outer graph when each of its inputs comes from the outer
 * graph (not a loop-carried input, not a weight of the body) or from a moved node, and at
 * least one is a value of the outer graph's (a constant alone is folded by ONNX Runtime
 * anyway). On the in-place decoder this moves the attention's mask over the cached past (its
 * positions at or past the sequence's length), which depends on the KV buffers' shape and the
 * past length only. Constant nodes and small initializers a moved node reads are copied out
 * under new names; the moved nodes keep their outputs' names, which the body then reads from
 * the outer scope.
 * @param nodes the body's nodes
 * @param initializers the body's initializers (they stay in the body)
 * @param bodyInputs the body's inputs (iteration, condition, loop-carried values)
 * @returns the nodes that stay, the nodes for the outer graph and the initializers they read
 */
export function hoistInvariants(nodes: readonly NodeProto[], initializers: readonly TensorProto[], bodyInputs: ReadonlySet<string>): { body: NodeProto[]; outer: NodeProto[]; initializers: TensorProto[] } {
  const produced = new Set(nodes.flatMap((n) => n.output));
  const inits = new Map(initializers.map((t) => [t.name ?? '', t]));
  const constants = new Map(nodes.filter((n) => n.opType === 'Constant').map((n) => [n.output[0]!, n]));
  const outerScope = (v: string) => !produced.has(v) && !bodyInputs.has(v) && !inits.has(v);
  const moved = new Set<NodeProto>();
  const movedValues = new Set<string>();
  for (let changed = true; changed; ) {
    changed = false;
    for (const node of nodes) {
      if (moved.has(node) || node.opType === 'Constant' || node.attribute.some((a) => a.g || a.graphs?.length)) continue;
      const inputs = node.input.filter((i) => i !== '');
      const invariant = inputs.every((i) => outerScope(i) || movedValues.has(i) || constants.has(i) || (inits.has(i) && smallTensor(inits.get(i)!)));
      if (!invariant || !inputs.some((i) => outerScope(i) || movedValues.has(i))) continue;
      moved.add(node);
      for (const out of node.output) movedValues.add(out);
      changed = true;
    }
  }
  const outer: NodeProto[] = [];
  const copied: TensorProto[] = [];
  const renamed = new Map<string, string>();
  const outerName = (v: string): string => {
    if (!constants.has(v) && !inits.has(v)) return v;
    if (!renamed.has(v)) {
      const name = `phase/hoisted/${v}`;
      renamed.set(v, name);
      if (constants.has(v)) {
        const copy = onnx.NodeProto.decode(onnx.NodeProto.encode(constants.get(v)!).finish());
        copy.output = [name];
        copy.name = `${name}/node`;
        outer.push(copy);
      } else copied.push(onnx.TensorProto.create({ ...inits.get(v)!, name }));
    }
    return renamed.get(v)!;
  };
  for (const node of nodes) {
    if (!moved.has(node)) continue;
    const copy = onnx.NodeProto.decode(onnx.NodeProto.encode(node).finish());
    copy.input = copy.input.map((i) => (i === '' ? i : outerName(i)));
    outer.push(copy);
  }
  return { body: nodes.filter((n) => !moved.has(n)), outer: topologicalOrder(outer), initializers: copied };
}

/** Whether an initializer is a small constant (a shape, an axis), not a weight. */
function smallTensor(t: TensorProto): boolean {
  return (t.dims ?? []).reduce((n, d) => n * Number(d), 1) <= 16;
}

/** `nodes` ordered so that every value is produced before it is read (values no node produces come from outside). */
function topologicalOrder(nodes: NodeProto[]): NodeProto[] {
  const produced = new Set(nodes.flatMap((n) => n.output));
  const ready = new Set<string>();
  const order: NodeProto[] = [];
  let pending = nodes;
  while (pending.length > 0) {
    const next: NodeProto[] = [];
    for (const node of pending) {
      if (node.input.every((i) => i === '' || !produced.has(i) || ready.has(i))) {
        order.push(node);
        for (const o of node.output) ready.add(o);
      } else next.push(node);
    }
    if (next.length === pending.length) throw new RangeError(`the draft step's graph has a cycle at ${next[0]!.name}`);
    pending = next;
  }
  return order;
}
