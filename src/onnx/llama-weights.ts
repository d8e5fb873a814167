/**
 * Reading the weights of a Llama-family decoder (Llama, Mistral, Qwen2, Qwen3: RMSNorm, rotary
 * embeddings, grouped-query attention, SwiGLU MLP) out of an exported ONNX graph, by structure
 * rather than by name, and its hyperparameters from config.json:
 *
 * - the token embedding is the constant table a `Gather` reads with `input_ids`;
 * - the RMSNorm gains are, in graph order, the scales of `SimplifiedLayerNormalization` /
 *   `SkipSimplifiedLayerNormalization` / `RMSNormalization` (ONNX opset 23) nodes, or, where the norm is written out
 *   (`ReduceMean` of the square, `Add` epsilon, `Sqrt`, `Div` or `Reciprocal`, `Mul`), the
 *   constant vector of width hidden that the first `Mul` after the `ReduceMean` scales by:
 *   2 per block, then the final one; Qwen3's q/k norms (width head_dim, over each head before
 *   the rotary embeddings) come between a block's two, 4 per block then, the one that
 *   `present.{i}.key` is computed from being the key's;
 * - the linear layers are the `MatMul` nodes with constant weights, 7 per block and the lm_head,
 *   in graph (topological) order: the block's q, k and v projections (any order among them),
 *   o_proj, gate and up (any order), down. Which of the first three is k and which v is told by
 *   which one layer i's `present.{i}.key` / `present.{i}.value` is computed from, which of gate
 *   and up is the gate by the `Sigmoid` its output feeds (SiLU = x sigmoid(x));
 * - q/k/v biases (Qwen2) are the constants of the `Add` consuming the projection; a bias
 *   anywhere else is a reason to refuse;
 * - heads, KV heads, head size, rms_norm_eps, rope_theta and a `llama3` rope_scaling come from
 *   config.json; other rotary scalings, partial rotary embeddings and sliding-window attention
 *   are refused.
 *
 * The rotary embeddings are not read from the graph: they are rebuilt from rope_theta (and
 * rope_scaling, rope.ts) in the convention of transformers' Llama (`rotate_half`).
 * Anything that does not fit is reported as a reason (NotLlamaError), not guessed at.
 */
import { DATA_TYPE, type ModelProto, type NodeProto } from './graph-builder.js';
import type { Llama3RopeScaling } from './rope.js';
import { decoderGraphView, embeddingTables, type DecoderGraphView, type Linear, linears as constantLinears, NotRebuildableError } from './graph-reading.js';

/** transformers' LlamaConfig defaults, used where config.json leaves a field out. */
export const LLAMA_DEFAULT_RMS_NORM_EPS = 1e-6;
export const LLAMA_DEFAULT_ROPE_THETA = 10000;

/** model_type values of config.json read as Llama-family decoders. */
export const LLAMA_FAMILY: readonly string[] = ['llama', 'mistral', 'qwen2', 'qwen3'];

/** A projection [in, out] row-major, with its bias where the model has one. */
export interface Projection {
  weight: Float32Array;
  bias: Float32Array | null;
}

/** One decoder block; matrices stored [in, out], row-major. */
export interface LlamaBlock {
  /** input_layernorm gain [hidden] */
  inputNorm: Float32Array;
  /** [hidden, heads head_dim] */
  q: Projection;
  /** [hidden, kv_heads head_dim] */
  k: Projection;
  /** [hidden, kv_heads head_dim] */
  v: Projection;
  /** [heads head_dim, hidden] */
  o: Float32Array;
  /** post_attention_layernorm gain [hidden] */
  postNorm: Float32Array;
  /** [hidden, intermediate] */
  gate: Float32Array;
  /** [hidden, intermediate] */
  up: Float32Array;
  /** [intermediate, hidden] */
  down: Float32Array;
  /** Qwen3's q_norm / k_norm gains [head_dim]: RMSNorm over each query / key head before the rotary embeddings (absent elsewhere). */
  qNorm?: Float32Array;
  kNorm?: Float32Array;
}

export interface LlamaWeights {
  vocab: number;
  hidden: number;
  intermediate: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  epsilon: number;
  ropeTheta: number;
  /** Llama 3.x's rotary scaling (rope.ts), absent for plain rotary embeddings. */
  ropeScaling?: Llama3RopeScaling;
  /** Whether the exported graph keeps its KV cache in float16 (the rebuild rounds keys and values to it, so that both compute the same). */
  kvFloat16: boolean;
  /** [vocab, hidden] */
  embed: Float32Array;
  blocks: LlamaBlock[];
  /** model.norm gain [hidden] */
  norm: Float32Array;
  /** [hidden, vocab] */
  lmHead: Float32Array;
}

/** What config.json says of a Llama-family decoder (engine/model-dir.ts ModelConfig). */
export interface LlamaConfig {
  modelType: string;
  layers?: number;
  heads?: number;
  kvHeads?: number;
  headDim?: number;
  rmsNormEps?: number;
  ropeTheta?: number;
  ropeVariant?: string;
  ropeScaling?: Llama3RopeScaling;
  slidingWindow?: number;
}

/** Why a graph is not a Llama-family decoder this module can read. */
export class NotLlamaError extends NotRebuildableError {
  override name = 'NotLlamaError';
}

/** Nodes followed from an RMSNorm's ReduceMean to its gain's Mul (Add, Sqrt, Reciprocal/Div, Mul, Cast). */
const RMS_NORM_DEPTH = 6;

/**
 * The weights of `model`, a Llama-family decoder with external data already inlined.
 * @throws NotLlamaError naming what does not fit (a config field, an operator, a count)
 */
export function readLlamaWeights(model: ModelProto, config: LlamaConfig): LlamaWeights {
  if (!LLAMA_FAMILY.includes(config.modelType)) throw new NotLlamaError(`model_type ${config.modelType} is not one of ${LLAMA_FAMILY.join(', ')}`);
  if (config.ropeVariant) throw new NotLlamaError(`${config.ropeVariant}: only plain rotary embeddings and rope_scaling type llama3 are rebuilt`);
  if (config.slidingWindow !== undefined) throw new NotLlamaError(`sliding-window attention (sliding_window ${config.slidingWindow}) is not rebuilt`);
  const { heads, kvHeads, headDim } = config;
  if (heads === undefined || kvHeads === undefined || headDim === undefined) throw new NotLlamaError('config.json does not give num_attention_heads, num_key_value_heads and head_dim');
  if (heads % kvHeads !== 0) throw new NotLlamaError(`${heads} attention heads are not a multiple of ${kvHeads} KV heads`);
  if (headDim % 2 !== 0) throw new NotLlamaError(`head_dim ${headDim} is odd (rotary embeddings rotate pairs)`);

  const view = decoderGraphView(model);
  const embed = embeddingTables(view).tokens;
  if (!embed) throw new NotLlamaError('no token embedding (a Gather of a constant table by input_ids)');
  const [vocab, hidden] = embed.dims as [number, number];
  if (view.nodes.some((n) => view.decoder.has(n) && n.opType === 'LayerNormalization')) throw new NotLlamaError('LayerNormalization nodes: not an RMSNorm decoder');

  // Qwen3 normalizes each query and key head too (q_norm, k_norm), between the block's two norms.
  const qkNorms = config.modelType === 'qwen3';
  const perBlock = qkNorms ? 4 : 2;
  const found = rmsNorms(view, [hidden, headDim]);
  const layers = (found.length - 1) / perBlock;
  if (!Number.isInteger(layers) || layers < 1) throw new NotLlamaError(`${found.length} RMSNorms; a ${config.modelType} block has ${perBlock} and the model 1 more`);
  found.forEach((n, i) => {
    const slot = i % perBlock;
    const width = i < found.length - 1 && qkNorms && (slot === 1 || slot === 2) ? headDim : hidden;
    if (n.gain.length !== width) throw new NotLlamaError(`RMSNorm ${i} (${n.node.name || n.node.output[0]}) has a gain of width ${n.gain.length}, expected ${width}${qkNorms ? ' (a qwen3 block: input norm, q and k norms of width head_dim, post-attention norm)' : ''}`);
  });
  const norms = found.filter((_, i) => i === found.length - 1 || i % perBlock === 0 || i % perBlock === perBlock - 1).map((n) => n.gain);
  if (config.layers !== undefined && config.layers !== layers) throw new NotLlamaError(`${layers} blocks in the graph, ${config.layers} in config.json`);
  const linears = constantLinears(view);
  if (linears.length !== 7 * layers + 1) throw new NotLlamaError(`${linears.length} MatMul nodes with constant weights; ${layers} Llama blocks need ${7 * layers + 1}`);

  const qWidth = heads * headDim;
  const kvWidth = kvHeads * headDim;
  const intermediate = linears[4]!.weight.dims[1]!;
  const take = (l: Linear, rows: number, cols: number, what: string, biasAllowed = false): Projection => {
    if (l.weight.dims[0] !== rows || l.weight.dims[1] !== cols) throw new NotLlamaError(`${what} is [${l.weight.dims.join(', ')}], expected [${rows}, ${cols}]`);
    if (l.bias && !biasAllowed) throw new NotLlamaError(`${what} has a bias`);
    return { weight: l.weight.data, bias: l.bias };
  };
  const blocks: LlamaBlock[] = [];
  for (let b = 0; b < layers; b++) {
    const at = 7 * b;
    const attention = linears.slice(at, at + 3);
    const feeds = (output: string) => {
      const before = view.ancestors(output);
      return attention.filter((l) => before.has(l.node));
    };
    const [keyFeeds, valueFeeds] = [feeds(`present.${b}.key`), feeds(`present.${b}.value`)];
    if (keyFeeds.length !== 1 || valueFeeds.length !== 1 || keyFeeds[0] === valueFeeds[0]) {
      throw new NotLlamaError(`block ${b}: cannot tell the k and v projections apart (present.${b}.key and .value must each come from one of its first 3 MatMuls)`);
    }
    const query = attention.find((l) => l !== keyFeeds[0] && l !== valueFeeds[0])!;
    const [mlpA, mlpB] = [linears[at + 4]!, linears[at + 5]!];
    const gates = [mlpA, mlpB].filter((l) => feedsSigmoid(view, l.node));
    if (gates.length !== 1) throw new NotLlamaError(`block ${b}: ${gates.length} of the MLP's two input projections feed a Sigmoid (SwiGLU's gate does, its up projection does not)`);
    const gate = gates[0]!;
    const up = gate === mlpA ? mlpB : mlpA;
    let headNorms = {};
    if (qkNorms) {
      const pair = [found[perBlock * b + 1]!, found[perBlock * b + 2]!];
      const keys = view.ancestors(`present.${b}.key`);
      const keyNorms = pair.filter((n) => keys.has(n.node));
      if (keyNorms.length !== 1) throw new NotLlamaError(`block ${b}: cannot tell the q and k norms apart (present.${b}.key must come from one of them)`);
      headNorms = { kNorm: keyNorms[0]!.gain, qNorm: pair.find((n) => n !== keyNorms[0])!.gain };
    }
    blocks.push({
      ...headNorms,
      inputNorm: norms[2 * b]!,
      q: take(query, hidden, qWidth, `block ${b} q_proj`, true),
      k: take(keyFeeds[0]!, hidden, kvWidth, `block ${b} k_proj`, true),
      v: take(valueFeeds[0]!, hidden, kvWidth, `block ${b} v_proj`, true),
      o: take(linears[at + 3]!, qWidth, hidden, `block ${b} o_proj`).weight,
      postNorm: norms[2 * b + 1]!,
      gate: take(gate, hidden, intermediate, `block ${b} gate_proj`).weight,
      up: take(up, hidden, intermediate, `block ${b} up_proj`).weight,
      down: take(linears[at + 6]!, intermediate, hidden, `block ${b} down_proj`).weight,
    });
  }
  const lmHead = take(linears[7 * layers]!, hidden, vocab, 'lm_head').weight;
  return {
    vocab,
    hidden,
    intermediate,
    heads,
    kvHeads,
    headDim,
    epsilon: config.rmsNormEps ?? LLAMA_DEFAULT_RMS_NORM_EPS,
    ropeTheta: config.ropeTheta ?? LLAMA_DEFAULT_ROPE_THETA,
    ...(config.ropeScaling ? { ropeScaling: config.ropeScaling } : {}),
    kvFloat16: kvIsFloat16(model),
    embed: embed.data,
    blocks,
    norm: norms[2 * layers]!,
    lmHead,
  };
}

/** An RMSNorm of the graph: its gain and the node that applies it (the fused norm, or the written-out norm's gain Mul). */
interface RmsNorm {
  gain: Float32Array;
  node: NodeProto;
}

/** The RMSNorms whose gains are one of `widths` wide, in graph order (module comment). */
function rmsNorms(view: DecoderGraphView, widths: number[]): RmsNorm[] {
  const norms: RmsNorm[] = [];
  const vector = (name: string | undefined): Float32Array | null => {
    const c = name ? view.constant(name) : null;
    return c && widths.includes(c.data.length) && c.dims.length === 1 ? c.data : null;
  };
  for (const n of view.nodes) {
    if (!view.decoder.has(n)) continue;
    const fused = n.opType === 'SimplifiedLayerNormalization' || n.opType === 'RMSNormalization' ? 1 : n.opType === 'SkipSimplifiedLayerNormalization' ? 2 : -1;
    if (fused > 0) {
      const gain = vector(n.input[fused]);
      if (!gain) throw new NotLlamaError(`${n.opType} ${n.name} has no constant scale of width ${widths.join(' or ')}`);
      norms.push({ gain, node: n });
    } else if (n.opType === 'ReduceMean' && !n.domain && isSquare(view, n.input[0]!)) {
      const norm = normGain(view, n, vector);
      if (!norm) throw new NotLlamaError(`the RMSNorm at ${n.name || n.output[0]} has no constant gain of width ${widths.join(' or ')} within ${RMS_NORM_DEPTH} nodes`);
      norms.push(norm);
    }
  }
  return norms;
}

/** Whether `value` is x * x or x ^ 2. */
function isSquare(view: DecoderGraphView, value: string): boolean {
  const n = view.producer.get(value);
  if (!n || n.domain) return false;
  if (n.opType === 'Mul') return n.input[0] === n.input[1];
  if (n.opType === 'Pow') return view.constant(n.input[1]!)?.data[0] === 2;
  return false;
}

/** The gain of the RMSNorm whose mean square `reduce` computes: the first Mul after it with a constant vector operand. */
function normGain(view: DecoderGraphView, reduce: NodeProto, vector: (name: string | undefined) => Float32Array | null): RmsNorm | null {
  let frontier = [reduce];
  for (let depth = 0; depth < RMS_NORM_DEPTH && frontier.length > 0; depth++) {
    const next: NodeProto[] = [];
    for (const node of frontier) {
      for (const consumer of view.consumers.get(node.output[0]!) ?? []) {
        if (consumer.opType === 'Mul' && !consumer.domain) {
          const gain = vector(consumer.input[0]) ?? vector(consumer.input[1]);
          if (gain) return { gain, node: consumer };
        }
        next.push(consumer);
      }
    }
    frontier = next;
  }
  return null;
}

/** Whether `matmul`'s output (or its bias Add's) feeds a Sigmoid. */
function feedsSigmoid(view: DecoderGraphView, matmul: NodeProto): boolean {
  const direct = view.consumers.get(matmul.output[0]!) ?? [];
  const outputs = direct.length === 1 && direct[0]!.opType === 'Add' ? [...direct, ...(view.consumers.get(direct[0]!.output[0]!) ?? [])] : direct;
  return outputs.some((n) => n.opType === 'Sigmoid' && !n.domain);
}

/** Whether the graph's first KV input is float16. */
function kvIsFloat16(model: ModelProto): boolean {
  const input = model.graph?.input?.find((i) => i.name === 'past_key_values.0.key');
  return input?.type?.tensorType?.elemType === DATA_TYPE.float16;
}
