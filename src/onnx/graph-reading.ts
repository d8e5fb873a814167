/**
 * Questions asked of an exported decoder graph when its weights are read by structure
 * (gpt2-weights.ts, llama-weights.ts): which nodes compute the decoder's outputs, who produces
 * and who consumes a value, and which values are constants.
 *
 * Constants may be initializers or initializers behind `Cast` / `Identity` / `Transpose` /
 * `Constant` (stored fp16 and cast in the graph, or a tied lm_head `Transpose(wte)`); they come
 * back as float32.
 */
import { DATA_TYPE, decodedGraph, float16BitsToFloat32, type ModelProto, type NodeProto, type TensorProto } from './graph-builder.js';
import type { QuantizedLinear } from './matmul-nbits.js';
import { readMatMulInteger, readMatMulNBits } from './quantized-reading.js';

/** A constant tensor of the graph as float32, row-major. */
export interface Constant {
  data: Float32Array;
  dims: number[];
}

/** Why a graph is not a decoder these readers can rebuild (the reason is shown to the user). */
export class NotRebuildableError extends Error {
  override name = 'NotRebuildableError';
}

export interface DecoderGraphView {
  /** Every node, in graph (topological) order. */
  nodes: NodeProto[];
  /** The nodes `logits` and `present.*` depend on (not, say, a fused acceptance head). */
  decoder: Set<NodeProto>;
  producer: Map<string, NodeProto>;
  consumers: Map<string, NodeProto[]>;
  /** The value `name` as a float32 constant, or null when it is computed from the inputs. */
  constant(name: string): Constant | null;
  /** The nodes output `name` depends on. */
  ancestors(name: string): Set<NodeProto>;
  /** The graph's initializers by name (quantized weights are read from them as they are). */
  initializers: Map<string, TensorProto>;
}

/** @throws NotRebuildableError when the model has no graph */
export function decoderGraphView(model: ModelProto): DecoderGraphView {
  if (!model.graph) throw new NotRebuildableError('no graph');
  const graph = decodedGraph(model);
  const nodes = graph.node;
  const inits = new Map<string, TensorProto>();
  for (const t of graph.initializer) inits.set(t.name, t);
  const producer = new Map<string, NodeProto>();
  const consumers = new Map<string, NodeProto[]>();
  for (const n of nodes) {
    for (const o of n.output) producer.set(o, n);
    for (const i of n.input) consumers.set(i, [...(consumers.get(i) ?? []), n]);
  }
  const ancestors = (...names: string[]): Set<NodeProto> => {
    const seen = new Set<NodeProto>();
    const stack = [...names];
    while (stack.length > 0) {
      const node = producer.get(stack.pop()!);
      if (!node || seen.has(node)) continue;
      seen.add(node);
      stack.push(...node.input);
    }
    return seen;
  };
  const cache = new Map<string, Constant | null>();
  const constant = (name: string): Constant | null => {
    if (!cache.has(name)) cache.set(name, resolveConstant(name, inits, producer, constant));
    return cache.get(name)!;
  };
  const outputs = graph.output.map((o) => o.name ?? '').filter((n) => n === 'logits' || n.startsWith('present.'));
  return { nodes, decoder: ancestors(...outputs), producer, consumers, constant, ancestors: (name) => ancestors(name), initializers: inits };
}

/**
 * The token embedding table [vocab, hidden]: the constant 2-D table a decoder node `Gather`s by
 * `input_ids`; also the one gathered by `position_ids` (learned position embeddings), if any.
 */
export function embeddingTables(view: DecoderGraphView): { tokens: Constant | null; positions: Constant | null } {
  let tokens: Constant | null = null;
  let positions: Constant | null = null;
  for (const n of view.nodes) {
    if (n.opType !== 'Gather' || n.domain || !view.decoder.has(n)) continue;
    const table = view.constant(n.input[0]!);
    if (!table || table.dims.length !== 2) continue;
    if (n.input[1] === 'input_ids') tokens = table;
    else if (n.input[1] === 'position_ids') positions = table;
  }
  return { tokens, positions };
}

/**
 * A decoder MatMul with a constant 2-D weight [in, out], and the constant of the `Add` that alone
 * consumes its output, if that is a vector of width out (its bias). Quantized linears
 * (quantized-reading.ts: MatMulNBits, quantize_dynamic's MatMulInteger) come with their weight
 * dequantized and their quantized form; `node` is then the node that outputs the product.
 */
export interface Linear {
  node: NodeProto;
  weight: Constant;
  bias: Float32Array | null;
  quantized?: QuantizedLinear;
}

/** The decoder's linear layers with constant weights, in graph order. */
export function linears(view: DecoderGraphView): Linear[] {
  const out: Linear[] = [];
  for (const n of view.nodes) {
    if (!view.decoder.has(n)) continue;
    let read: { node: NodeProto; weight: Constant; bias: Float32Array | null; quantized?: QuantizedLinear } | null = null;
    if (n.opType === 'MatMul' && !n.domain) {
      const weight = view.constant(n.input[1]!);
      if (weight && weight.dims.length === 2) read = { node: n, weight, bias: null };
    } else if (n.opType === 'MatMulNBits' && n.domain === 'com.microsoft') {
      const q = readMatMulNBits(view, n, view.initializers);
      if (q) read = { node: q.output, weight: q.weight, bias: q.bias, quantized: q.quantized };
    } else if (n.opType === 'MatMulInteger' && !n.domain) {
      const q = readMatMulInteger(view, n, view.initializers);
      if (q) read = { node: q.output, weight: q.weight, bias: null, quantized: q.quantized };
    }
    if (!read) continue;
    const add = view.consumers.get(read.node.output[0]!);
    if (!read.bias && add?.length === 1 && add[0]!.opType === 'Add' && !add[0]!.domain) {
      const other = add[0]!.input[0] === read.node.output[0] ? add[0]!.input[1]! : add[0]!.input[0]!;
      const b = view.constant(other);
      if (b && b.data.length === read.weight.dims[1]) read.bias = b.data;
    }
    out.push(read);
  }
  return out;
}

function resolveConstant(
  name: string,
  inits: Map<string, TensorProto>,
  producer: Map<string, NodeProto>,
  constant: (name: string) => Constant | null,
): Constant | null {
  const init = inits.get(name);
  if (init) return tensorFloats(init);
  const node = producer.get(name);
  if (!node || node.domain) return null;
  if (node.opType === 'Identity' || node.opType === 'Cast') return constant(node.input[0]!);
  if (node.opType === 'Transpose') {
    const src = constant(node.input[0]!);
    const perm = node.attribute.find((a) => a.name === 'perm')?.ints?.map(Number);
    if (!src || src.dims.length !== 2 || (perm && (perm[0] !== 1 || perm[1] !== 0))) return null;
    const [r, c] = src.dims as [number, number];
    const out = new Float32Array(r * c);
    for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) out[j * r + i] = src.data[i * c + j]!;
    return { data: out, dims: [c, r] };
  }
  if (node.opType === 'Constant') {
    const value = node.attribute.find((a) => a.name === 'value')?.t;
    return value ? tensorFloats(value as TensorProto) : null;
  }
  return null;
}

/** A float32 / float16 tensor's values (inline data only), or null for other types. */
function tensorFloats(t: TensorProto): Constant | null {
  const dims = t.dims.map(Number);
  const count = dims.reduce((a, b) => a * b, 1);
  // A copy, aligned at offset 0 (protobufjs may hand out a view into a larger, shared buffer).
  const raw = t.rawData && t.rawData.byteLength > 0 ? new Uint8Array(t.rawData) : null;
  if (t.dataType === DATA_TYPE.float32) {
    if (raw) return { data: new Float32Array(raw.buffer, 0, count), dims };
    if (t.floatData.length === count) return { data: Float32Array.from(t.floatData), dims };
    return null;
  }
  if (t.dataType === DATA_TYPE.float16) {
    if (raw) return { data: float16BitsToFloat32(new Uint16Array(raw.buffer, 0, count)), dims };
    if (t.int32Data.length === count) return { data: float16BitsToFloat32(Uint16Array.from(t.int32Data)), dims };
    return null;
  }
  return null;
}
