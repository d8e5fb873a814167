/**
 * Reading the weights of a GPT-2-style decoder out of an exported ONNX graph, by structure
 * rather than by name: the token and position embeddings are the constant tables that
 * `Gather` reads with `input_ids` and `position_ids`; the block weights are, in graph order,
 * the constant operands of the `LayerNormalization` nodes (2 per block, then the final one) and
 * of the `MatMul` nodes (QKV, attention projection, MLP in, MLP out per block, then the
 * lm_head), each MatMul's bias being the constant of the `Add` that consumes it.
 *
 * Constants are resolved as graph-reading.ts does (fp16 behind a Cast, a tied lm_head
 * `Transpose(wte)`). Anything that does not fit this shape is reported as a reason, not guessed at.
 */
import type { ModelProto } from './graph-builder.js';
import type { QuantizedLinear } from './matmul-nbits.js';
import { decoderGraphView, embeddingTables, linears as constantLinears, NotRebuildableError } from './graph-reading.js';

/** A linear layer: weight [in, out] row-major (dequantized when read from a quantized export, whose form `quantized` keeps). */
export interface Gpt2Linear {
  weight: Float32Array;
  bias: Float32Array;
  quantized?: QuantizedLinear;
}

/** One transformer block. */
export interface Gpt2Block {
  ln1: { gain: Float32Array; bias: Float32Array };
  qkv: Gpt2Linear;
  proj: Gpt2Linear;
  ln2: { gain: Float32Array; bias: Float32Array };
  fc: Gpt2Linear;
  out: Gpt2Linear;
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
  /** The lm_head as a quantized export stores it. */
  lmHeadQuantized?: QuantizedLinear;
}

/** Why a graph is not a GPT-2 decoder this module can read. */
export class NotGpt2Error extends NotRebuildableError {
  override name = 'NotGpt2Error';
}

/**
 * The weights of `model`, a GPT-2-style decoder with `heads` attention heads and external data
 * already inlined.
 * @throws NotGpt2Error naming what does not fit
 */
export function readGpt2Weights(model: ModelProto, heads: number): Gpt2Weights {
  if (!model.graph) throw new NotGpt2Error('no graph');
  const view = decoderGraphView(model);
  const { tokens: wte, positions: wpe } = embeddingTables(view);
  if (!wte) throw new NotGpt2Error('no token embedding (a Gather of a constant table by input_ids)');
  if (!wpe) throw new NotGpt2Error('no position embedding (a Gather of a constant table by position_ids)');
  const [vocab, hidden] = wte.dims as [number, number];
  if (wpe.dims[1] !== hidden) throw new NotGpt2Error(`position embedding width ${wpe.dims[1]} differs from the token embedding's ${hidden}`);

  const norms: { gain: Float32Array; bias: Float32Array }[] = [];
  let epsilon: number | undefined;
  for (const n of view.nodes) {
    if (n.domain || !view.decoder.has(n) || n.opType !== 'LayerNormalization') continue;
    const gain = view.constant(n.input[1]!);
    const bias = n.input[2] ? view.constant(n.input[2]) : null;
    if (!gain || !bias) throw new NotGpt2Error(`LayerNormalization ${n.name} has a non-constant scale or bias`);
    const eps = n.attribute.find((a) => a.name === 'epsilon')?.f ?? 1e-5;
    if (epsilon !== undefined && Math.abs(eps - epsilon) > 1e-12) throw new NotGpt2Error('LayerNormalization epsilons differ');
    epsilon = eps;
    norms.push({ gain: gain.data, bias: bias.data });
  }
  const linears = constantLinears(view);
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
    return { weight: l.weight.data, bias: l.bias ?? new Float32Array(cols), ...(l.quantized ? { quantized: l.quantized } : {}) };
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
  const { weight: lmHead, quantized: lmHeadQuantized } = expect(4 * layers, hidden, vocab, 'lm_head', false);
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
    ...(lmHeadQuantized ? { lmHeadQuantized } : {}),
  };
}
