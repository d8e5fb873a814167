/**
 * The SpecDec++ acceptance head (arXiv 2405.19715) as ONNX graphs.
 *
 * The head predicts whether the target will accept candidate y, drafted from the draft's
 * distribution q at some position. Its inputs are the draft's last hidden state x at that
 * position (the one that produced q) and the candidate features phi(q, y, T): a bias,
 * log q(y), log max q and the entropy of q, weighted by the decoding temperature's
 * interpolation weights over a few knot temperatures (candidate-features.ts):
 *
 *   P(accept y) = sigmoid(x3 . v + c + phi . u),  x_t = x_{t-1} + SiLU(x_{t-1} W + b), x_0 = x
 *
 * The residual block with shared weights applied {@link HEAD_BLOCKS} times and the linear
 * output are the paper's (its `Linear(width, 2)` + softmax is the sigmoid of one logit). The
 * candidate term is this project's: the hidden state that produced q is known before y is
 * sampled, so the head judges each candidate as soon as it is drafted, where the paper's head,
 * reading the hidden state at y's own position, learns y's fate only one draft step later.
 *
 * Graphs built from the same description:
 * - the inference head (`buildHeadGraph`): `hidden` [..., width] -> `accept_logit` [...], the
 *   candidate-independent part x3 . v + c, with the parameters as initializers; it runs on its
 *   own or spliced into a draft graph, and the engine adds phi . u (`acceptProbability`);
 * - the loss graph (`buildHeadLossGraph`): parameters, a minibatch of feature rows
 *   [x, phi] and soft labels in; the soft-label weighted BCE loss, the predicted probabilities
 *   and, for training, the gradients of the loss with respect to every parameter out. The
 *   backward pass is written out op by op, so ONNX Runtime does all matrix products of training.
 *
 * Shapes: N rows, h = width (of the hidden state), F = CANDIDATE_FEATURES; a feature row is
 * h + F wide. Weights are stored [in, out] (x W, not W x).
 */
import { CANDIDATE_FEATURES } from '../../engine/candidate-features.js';
import { GraphBuilder } from '../../onnx/graph-builder.js';

/** How many times the shared residual block is applied. */
export const HEAD_BLOCKS = 3;
/**
 * Default weight of the reject class in the loss: 1, the plain soft-label BCE, whose
 * predictions are calibrated. The paper uses w = 6; predictions then run low by a roughly
 * constant factor, which the product over candidates compounds, so a single threshold h cannot
 * absorb it for every draft length. Measured on the bundled pair (greedy GSM8K, best threshold
 * against the best fixed K): w = 6 +2.7%, w = 1 +7.3%.
 */
export const DEFAULT_MISMATCH_WEIGHT = 1;
/** The inference head's input and output names. */
export const HEAD_INPUT = 'hidden';
export const HEAD_OUTPUT = 'accept_logit';
/** Candidate features per row after the hidden state (candidate-features.ts). */
export { CANDIDATE_FEATURES };

/** The head's parameters. */
export interface HeadParams {
  width: number;
  /** Shared block weight // [width, width], [in, out] */
  W: Float32Array;
  /** Shared block bias // [width] */
  b: Float32Array;
  /** Output weight // [width] */
  v: Float32Array;
  /** Output bias // [1] */
  c: Float32Array;
  /** Weights of the candidate features // [CANDIDATE_FEATURES] */
  u: Float32Array;
}

/** Parameter names in the order the loss graph takes them and returns their gradients. */
export const PARAM_NAMES = ['W', 'b', 'v', 'c', 'u'] as const;
export type ParamName = (typeof PARAM_NAMES)[number];

export function paramShape(name: ParamName, width: number): number[] {
  return name === 'W' ? [width, width] : name === 'c' ? [1] : name === 'u' ? [CANDIDATE_FEATURES] : [width];
}

export function cloneParams(p: HeadParams): HeadParams {
  return { width: p.width, W: p.W.slice(), b: p.b.slice(), v: p.v.slice(), c: p.c.slice(), u: p.u.slice() };
}

/** Floats per feature row of a head of this hidden width: the hidden state, then the candidate features. */
export function rowStride(width: number): number {
  return width + CANDIDATE_FEATURES;
}

/** Total number of parameters: width^2 + 2 width + 1 + CANDIDATE_FEATURES. */
export function paramCount(width: number): number {
  return width * width + 2 * width + 1 + CANDIDATE_FEATURES;
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

/**
 * The head computed directly (float64 accumulation), the reference the ONNX graphs are tested
 * against. Slow for large widths; for tests and small checks.
 * @param x feature rows [hidden, candidate features] // [n, width + CANDIDATE_FEATURES]
 * @returns P(accept) // [n]
 */
export function headReference(params: HeadParams, x: Float32Array, n: number): Float64Array {
  const h = params.width;
  const stride = h + CANDIDATE_FEATURES;
  const out = new Float64Array(n);
  const cur = new Float64Array(h);
  const z = new Float64Array(h);
  for (let r = 0; r < n; r++) {
    for (let j = 0; j < h; j++) cur[j] = x[r * stride + j]!;
    for (let block = 0; block < HEAD_BLOCKS; block++) {
      for (let j = 0; j < h; j++) {
        let s = params.b[j]!;
        for (let i = 0; i < h; i++) s += cur[i]! * params.W[i * h + j]!;
        z[j] = s;
      }
      for (let j = 0; j < h; j++) cur[j]! += z[j]! * sigmoid(z[j]!);
    }
    let logit = params.c[0]!;
    for (let j = 0; j < h; j++) logit += cur[j]! * params.v[j]!;
    for (let f = 0; f < CANDIDATE_FEATURES; f++) logit += x[r * stride + h + f]! * params.u[f]!;
    out[r] = sigmoid(logit);
  }
  return out;
}

/**
 * The soft-label weighted BCE of the paper:
 * L = sum[w (1 - a) (-log P_rej) + a (-log P_acc)] / sum[w (1 - a) + a].
 */
export function weightedBce(probs: ArrayLike<number>, labels: ArrayLike<number>, mismatchWeight = DEFAULT_MISMATCH_WEIGHT): number {
  let num = 0;
  let den = 0;
  const eps = 1e-12;
  for (let i = 0; i < labels.length; i++) {
    const a = labels[i]!;
    const p = probs[i]!;
    num += mismatchWeight * (1 - a) * -Math.log(Math.max(1 - p, eps)) + a * -Math.log(Math.max(p, eps));
    den += mismatchWeight * (1 - a) + a;
  }
  return den > 0 ? num / den : 0;
}

/** Adds the shared residual blocks and the output layer; returns the logit value [...]. */
function headBody(g: GraphBuilder, x: string, W: string, b: string, v: string, c: string, trace?: { z: string[]; s: string[]; x: string[] }): string {
  let cur = x;
  trace?.x.push(cur);
  for (let block = 0; block < HEAD_BLOCKS; block++) {
    const z = g.op('Add', [g.op('MatMul', [cur, W]), b]);
    const s = g.op('Sigmoid', [z]);
    cur = g.op('Add', [cur, g.op('Mul', [z, s])]);
    trace?.z.push(z);
    trace?.s.push(s);
    trace?.x.push(cur);
  }
  return g.op('Add', [g.op('MatMul', [cur, v]), c]);
}

/**
 * The inference head: input `hidden` [..., width] (any leading dims), output `accept_logit`
 * [...] (the leading dims: x3 . v + c, without the candidate term), parameters as
 * initializers. `prefix` names every value and initializer, so the nodes can be spliced into
 * another graph without clashes.
 */
export function buildHeadGraph(params: HeadParams, options: { opset?: number; prefix?: string; inputShape?: (string | number)[] } = {}): GraphBuilder {
  const h = params.width;
  const pre = options.prefix ?? '';
  const g = new GraphBuilder({ opset: options.opset ?? 17, name: 'acceptance_head' });
  const shape = options.inputShape ?? ['batch', h];
  const x = g.input(HEAD_INPUT, 'float32', shape);
  const W = g.initializer(`${pre}W`, params.W, [h, h]);
  const b = g.initializer(`${pre}b`, params.b, [h]);
  const v = g.initializer(`${pre}v`, params.v, [h]);
  const c = g.initializer(`${pre}c`, params.c, [1]);
  const logit = headBody(g, x, W, b, v, c);
  g.output(g.op('Identity', [logit]), HEAD_OUTPUT, 'float32', shape.slice(0, -1));
  g.setMetadata('specd.head', JSON.stringify({ architecture: 'shared-residual-silu', blocks: HEAD_BLOCKS, width: h }));
  return g;
}

/**
 * The loss graph for training and validation. Inputs: `W`, `b`, `v`, `c`, `u` (the
 * parameters), `features` [N, width + F] (rows [x, phi]), `labels` [N] (soft labels in
 * [0, 1]), `mismatch_weight` [] (w). Outputs: `loss` [], `probs` [N] and, with `gradients`,
 * `grad_W`, `grad_b`, `grad_v`, `grad_c`, `grad_u` (same shapes as the parameters).
 *
 * Backward pass, with l the logit, sigma the sigmoid and D = sum[w (1 - a) + a]:
 *   dL/dl      = (w (1 - a) sigma(l) - a sigma(-l)) / D
 *   dv         = x3^T dl,  dc = sum dl,  du = phi^T dl,  dx3 = dl v^T
 *   block t = 3..1 (x_t = x_{t-1} + SiLU(z_t), z_t = x_{t-1} W + b):
 *     dz_t     = dx_t * sigma(z_t) (1 + z_t (1 - sigma(z_t)))      (SiLU')
 *     dW      += x_{t-1}^T dz_t,  db += sum_rows dz_t
 *     dx_{t-1} = dx_t + dz_t W^T
 */
export function buildHeadLossGraph(width: number, options: { gradients?: boolean } = {}): GraphBuilder {
  const h = width;
  const g = new GraphBuilder({ opset: 17, name: 'acceptance_head_loss' });
  const W = g.input('W', 'float32', [h, h]);
  const b = g.input('b', 'float32', [h]);
  const v = g.input('v', 'float32', [h]);
  const c = g.input('c', 'float32', [1]);
  const u = g.input('u', 'float32', [CANDIDATE_FEATURES]);
  const rowsIn = g.input('features', 'float32', ['N', h + CANDIDATE_FEATURES]);
  const a = g.input('labels', 'float32', ['N']);
  const w = g.input('mismatch_weight', 'float32', []);
  const one = g.constant('float32', [1], []);
  const axis1 = g.constant('int64', [1]);
  const X = g.op('Slice', [rowsIn, g.constant('int64', [0]), g.constant('int64', [h]), axis1]); // [N, h]
  const phi = g.op('Slice', [rowsIn, g.constant('int64', [h]), g.constant('int64', [h + CANDIDATE_FEATURES]), axis1]); // [N, F]

  const trace = { z: [] as string[], s: [] as string[], x: [] as string[] };
  const logit = g.op('Add', [headBody(g, X, W, b, v, c, trace), g.op('MatMul', [phi, u])]); // [N]
  const probs = g.op('Sigmoid', [logit]);
  g.output(probs, 'probs', 'float32', ['N']);

  // Loss: -log P_rej = softplus(l), -log P_acc = softplus(-l).
  const wRej = g.op('Mul', [w, g.op('Sub', [one, a])]); // w (1 - a) // [N]
  const den = g.op('ReduceSum', [g.op('Add', [wRej, a])], { attrs: { keepdims: 0 } });
  const perRow = g.op('Add', [g.op('Mul', [wRej, g.op('Softplus', [logit])]), g.op('Mul', [a, g.op('Softplus', [g.op('Neg', [logit])])])]);
  const loss = g.op('Div', [g.op('ReduceSum', [perRow], { attrs: { keepdims: 0 } }), den]);
  g.output(loss, 'loss', 'float32', []);
  if (!options.gradients) return g;

  // dL/dl = (w (1 - a) sigma(l) - a (1 - sigma(l))) / D
  const dl = g.op('Div', [g.op('Sub', [g.op('Mul', [wRej, probs]), g.op('Mul', [a, g.op('Sub', [one, probs])])]), den]); // [N]
  const x3 = trace.x[HEAD_BLOCKS]!;
  g.output(g.op('MatMul', [dl, x3]), 'grad_v', 'float32', [h]); // [N] x [N, h] -> [h]
  g.output(g.op('ReduceSum', [dl, g.constant('int64', [0])], { attrs: { keepdims: 1 } }), 'grad_c', 'float32', [1]);
  g.output(g.op('MatMul', [dl, phi]), 'grad_u', 'float32', [CANDIDATE_FEATURES]); // [N] x [N, F] -> [F]
  let dx = g.op('Mul', [g.op('Unsqueeze', [dl, g.constant('int64', [1])]), v]); // [N, 1] * [h] -> [N, h]

  let dW = '';
  let db = '';
  const rows = g.constant('int64', [0]);
  for (let t = HEAD_BLOCKS - 1; t >= 0; t--) {
    const z = trace.z[t]!;
    const s = trace.s[t]!;
    const siluGrad = g.op('Mul', [s, g.op('Add', [one, g.op('Mul', [z, g.op('Sub', [one, s])])])]);
    const dz = g.op('Mul', [dx, siluGrad]); // [N, h]
    const dWt = g.op('Gemm', [trace.x[t]!, dz], { attrs: { transA: 1 } }); // [h, N] x [N, h]
    const dbt = g.op('ReduceSum', [dz, rows], { attrs: { keepdims: 0 } });
    dW = dW ? g.op('Add', [dW, dWt]) : dWt;
    db = db ? g.op('Add', [db, dbt]) : dbt;
    if (t > 0) dx = g.op('Add', [dx, g.op('Gemm', [dz, W], { attrs: { transB: 1 } })]);
  }
  g.output(dW, 'grad_W', 'float32', [h, h]);
  g.output(db, 'grad_b', 'float32', [h]);
  return g;
}
