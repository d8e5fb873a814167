/**
 * Reading the weights of a GPT-2-style decoder out of an exported ONNX graph, by structure
 * rather than by name: the token and position embeddings are the constant tables that
 * `Gather` reads with `input_ids` and `position_ids`; the block weights are, in graph order,
 * the constant operands of the `LayerNormalization` nodes (2 per block, then the final one) and
 * of the `MatMul` nodes (QKV, attention projection, MLP in, MLP out per block, then the
 * lm_head), each MatMul's bias being the constant of the `Add` that consumes it.
 *
 * Constants may be initializers or initializers behind `Cast` / `Identity` / `Transpose`
 * (stored fp16 and cast in the graph, or a tied lm_head `Transpose(wte)`); they come back as
 * float32. Anything that does not fit this shape is reported as a reason, not guessed at.
 */
import { DATA_TYPE, decodedGraph, float16BitsToFloat32, type ModelProto, type NodeProto, type TensorProto } from './graph-builder.js';

/** One transformer block; matrices stored [in, out], row-major. */
export interface Gpt2Block {
  ln1: { gain: Float32Array; bias: Float32Array };
  qkv: { weight: Float32Array; bias: Float32Array };
  proj: { weight: Float32Array; bias: Float32Array };
  ln2: { gain: Float32Array; bias: Float32Array };
  fc: { weight: Float32Array; bias: Float32Array };
  out: { weight: Float32Array; bias: Float32Array };
}

export interface Gpt2Weights {
  vocab: number;
  hidden: number;
  inner: number;
  heads: number;
  positions: number;
  epsilon: number;
  /** [vocab, hidden] */
  wte: Float32Array;
  /** [positions, hidden] */
  wpe: Float32Array;
  blocks: Gpt2Block[];
  lnf: { gain: Float32Array; bias: Float32Array };
  /** [hidden, vocab] */
  lmHead: Float32Array;
}

interface Constant {
  data: Float32Array;
  dims: number[];
}

/** Why a graph is not a GPT-2 decoder this module can read. */
export class NotGpt2Error extends Error {
  override name = 'NotGpt2Error';
}

/**
 * The weights of `model`, a GPT-2-style decoder with `heads` attention heads and external data
 * already inlined.
 * @throws NotGpt2Error naming what does not fit
 */
export function readGpt2Weights(model: ModelProto, heads: number): Gpt2Weights {
  if (!model.graph) throw new NotGpt2Error('no graph');
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
  // Only the decoder proper: the nodes `logits` and `present.*` depend on (not, say, a fused acceptance head).
  const decoder = new Set<NodeProto>();
  const stack = graph.output.map((o) => o.name ?? '').filter((n) => n === 'logits' || n.startsWith('present.'));
  while (stack.length > 0) {
    const node = producer.get(stack.pop()!);
    if (!node || decoder.has(node)) continue;
    decoder.add(node);
    stack.push(...node.input);
  }
  const cache = new Map<string, Constant | null>();
  const constant = (name: string): Constant | null => {
    if (!cache.has(name)) cache.set(name, resolveConstant(name, inits, producer, constant));
    return cache.get(name)!;
  };

  // Embeddings.
  let wte: Constant | null = null;
  let wpe: Constant | null = null;
  for (const n of nodes) {
    if (n.opType !== 'Gather' || n.domain || !decoder.has(n)) continue;
    const table = constant(n.input[0]!);
    if (!table || table.dims.length !== 2) continue;
    if (n.input[1] === 'input_ids') wte = table;
    else if (n.input[1] === 'position_ids') wpe = table;
  }
  if (!wte) throw new NotGpt2Error('no token embedding (a Gather of a constant table by input_ids)');
  if (!wpe) throw new NotGpt2Error('no position embedding (a Gather of a constant table by position_ids)');
  const [vocab, hidden] = wte.dims as [number, number];
  if (wpe.dims[1] !== hidden) throw new NotGpt2Error(`position embedding width ${wpe.dims[1]} differs from the token embedding's ${hidden}`);

  const norms: { gain: Float32Array; bias: Float32Array }[] = [];
  const linears: { weight: Constant; bias: Float32Array | null }[] = [];
  let epsilon: number | undefined;
  for (const n of nodes) {
    if (n.domain || !decoder.has(n)) continue;
    if (n.opType === 'LayerNormalization') {
      const gain = constant(n.input[1]!);
      const bias = n.input[2] ? constant(n.input[2]) : null;
      if (!gain || !bias) throw new NotGpt2Error(`LayerNormalization ${n.name} has a non-constant scale or bias`);
      const eps = n.attribute.find((a) => a.name === 'epsilon')?.f ?? 1e-5;
      if (epsilon !== undefined && Math.abs(eps - epsilon) > 1e-12) throw new NotGpt2Error('LayerNormalization epsilons differ');
      epsilon = eps;
      norms.push({ gain: gain.data, bias: bias.data });
    } else if (n.opType === 'MatMul') {
      const weight = constant(n.input[1]!);
      if (!weight || weight.dims.length !== 2) continue;
      const add = consumers.get(n.output[0]!);
      let bias: Float32Array | null = null;
      if (add?.length === 1 && add[0]!.opType === 'Add' && !add[0]!.domain) {
        const other = add[0]!.input[0] === n.output[0] ? add[0]!.input[1]! : add[0]!.input[0]!;
        const b = constant(other);
        if (b && b.data.length === weight.dims[1]) bias = b.data;
      }
      linears.push({ weight, bias });
    }
  }
  const layers = (norms.length - 1) / 2;
  if (!Number.isInteger(layers) || layers < 1) throw new NotGpt2Error(`${norms.length} LayerNormalization nodes; a GPT-2 block has 2 and the model 1 more`);
  if (linears.length !== 4 * layers + 1) throw new NotGpt2Error(`${linears.length} MatMul nodes with constant weights; ${layers} GPT-2 blocks need ${4 * layers + 1}`);
  if (hidden % heads !== 0) throw new NotGpt2Error(`width ${hidden} is not a multiple of ${heads} heads`);

  const inner = linears[2]!.weight.dims[1]!;
  const expect = (i: number, rows: number, cols: number, what: string, needBias = true) => {
    const l = linears[i]!;
    if (l.weight.dims[0] !== rows || l.weight.dims[1] !== cols) {
      throw new NotGpt2Error(`${what} is [${l.weight.dims.join(', ')}], expected [${rows}, ${cols}]`);
    }
    if (needBias && !l.bias) throw new NotGpt2Error(`${what} has no constant bias`);
    return { weight: l.weight.data, bias: l.bias ?? new Float32Array(cols) };
  };
  const blocks: Gpt2Block[] = [];
  for (let b = 0; b < layers; b++) {
    blocks.push({
      ln1: norms[2 * b]!,
      qkv: expect(4 * b, hidden, 3 * hidden, `block ${b} QKV`),
      proj: expect(4 * b + 1, hidden, hidden, `block ${b} attention projection`),
      ln2: norms[2 * b + 1]!,
      fc: expect(4 * b + 2, hidden, inner, `block ${b} MLP in`),
      out: expect(4 * b + 3, inner, hidden, `block ${b} MLP out`),
    });
  }
  const lmHead = expect(4 * layers, hidden, vocab, 'lm_head', false).weight;
  return {
    vocab,
    hidden,
    inner,
    heads,
    positions: wpe.dims[0]!,
    epsilon: epsilon ?? 1e-5,
    wte: wte.data,
    wpe: wpe.data,
    blocks,
    lnf: norms[2 * layers]!,
    lmHead,
  };
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
