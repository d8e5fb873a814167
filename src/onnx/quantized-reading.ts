/**
 * Linear layers of quantized exports, read for the in-place rebuild (graph-reading.ts `linears`):
 *
 * - `MatMulNBits` (com.microsoft), as onnx-community's `model_q4.onnx` files and ONNX Runtime's
 *   `MatMulNBitsQuantizer` write it: 4 or 8 bits, uint8 zero points or none, no `g_idx`.
 * - `MatMulInteger` as ONNX Runtime's `quantize_dynamic` writes a MatMul (its QOperator form, in
 *   `model_quantized.onnx` / `model_int8.onnx` / `model_uint8.onnx`): `DynamicQuantizeLinear(A)`,
 *   `MatMulInteger(A_q, W_q, A_zero_point, W_zero_point)`, `Cast` to float, and a `Mul` by
 *   `A_scale * W_scale`; W_q int8 or uint8, its scale and zero point per tensor or per column.
 *   Its weights are taken over exactly as 8-bit MatMulNBits blocks (uint8 codes, the column's
 *   scale and zero point in every block); the activations are no longer quantized per tensor,
 *   which made a row's result depend on the other rows of its pass.
 *
 * Each comes back as the float32 weight it stands for and its quantized form.
 */
import { DATA_TYPE, type TensorProto } from './graph-builder.js';
import type { Constant, DecoderGraphView } from './graph-reading.js';
import { NotRebuildableError } from './graph-reading.js';
import { blocksOf, dequantizeLinear, type QuantBits, type QuantizedLinear } from './matmul-nbits.js';
import type { NodeProto } from './graph-builder.js';

/** The quantized form of each dequantized weight this module returned (so that rebuilds that take weights apart and join them can find it). */
const forms = new WeakMap<Float32Array, QuantizedLinear>();

/** The quantized form `weight` was dequantized from, if it was read from a quantized linear. */
export function quantizedFormOf(weight: Float32Array): QuantizedLinear | undefined {
  return forms.get(weight);
}

function dequantized(q: QuantizedLinear): Constant {
  const data = dequantizeLinear(q);
  forms.set(data, q);
  return { data, dims: [q.k, q.n] };
}

/** Block size given to the weights of a MatMulInteger (any size holds a per-column scale exactly). */
const INTEGER_BLOCK_SIZE = 32;

/** A quantized linear layer read from a graph. */
export interface QuantizedRead {
  /** The node whose output is the layer's product. */
  output: NodeProto;
  weight: Constant;
  quantized: QuantizedLinear;
  /** The bias MatMulNBits adds itself (its input 5), if any. */
  bias: Float32Array | null;
}

const attrInt = (n: NodeProto, name: string): number | undefined => {
  const a = n.attribute.find((x) => x.name === name);
  return a?.i === undefined || a.i === null ? undefined : Number(a.i);
};

/**
 * The weights of a com.microsoft MatMulNBits node with constant operands.
 * @throws NotRebuildableError for a form this reader does not take (2 bits, float zero points, g_idx)
 */
export function readMatMulNBits(view: DecoderGraphView, n: NodeProto, inits: Map<string, TensorProto>): QuantizedRead | null {
  const k = attrInt(n, 'K');
  const cols = attrInt(n, 'N');
  const bits = attrInt(n, 'bits') ?? 4;
  const blockSize = attrInt(n, 'block_size');
  const where = `MatMulNBits ${n.name}`;
  if (k === undefined || cols === undefined || blockSize === undefined) throw new NotRebuildableError(`${where} has no K, N or block_size`);
  if (bits !== 4 && bits !== 8) throw new NotRebuildableError(`${where} has ${bits}-bit weights; 4 and 8 are read`);
  if (n.input[4]) throw new NotRebuildableError(`${where} has a g_idx (act-order) input, which is not read`);
  const packed = integerData(inits.get(n.input[1]!));
  const scales = view.constant(n.input[2]!);
  if (!packed || !scales) return null;
  const blocks = blocksOf(k, blockSize);
  if (packed.length !== (cols * blocks * blockSize * bits) / 8 || scales.data.length !== cols * blocks) {
    throw new NotRebuildableError(`${where}: weight or scales of the wrong size for K ${k}, N ${cols}, block ${blockSize}`);
  }
  let zeroPoints: Uint8Array | undefined;
  if (n.input[3]) {
    const zp = inits.get(n.input[3]);
    if (!zp || (zp.dataType !== DATA_TYPE.uint8 && zp.dataType !== DATA_TYPE.int8)) throw new NotRebuildableError(`${where} has zero points that are not a uint8 constant`);
    zeroPoints = Uint8Array.from(integerData(zp)!);
  }
  let bias: Float32Array | null = null;
  if (n.input[5]) {
    bias = view.constant(n.input[5])?.data ?? null;
    if (!bias) throw new NotRebuildableError(`${where} has a bias that is not a constant`);
  }
  const quantized: QuantizedLinear = { bits: bits as QuantBits, blockSize, k, n: cols, packed: Uint8Array.from(packed), scales: scales.data, ...(zeroPoints ? { zeroPoints } : {}) };
  return { output: n, weight: dequantized(quantized), quantized, bias };
}

/** The weights of a `quantize_dynamic` MatMulInteger (module comment), or null when `n` is not one. */
export function readMatMulInteger(view: DecoderGraphView, n: NodeProto, inits: Map<string, TensorProto>): QuantizedRead | null {
  const w = inits.get(n.input[1]!);
  if (!w || w.dims.length !== 2) return null;
  const signed = w.dataType === DATA_TYPE.int8;
  const codes = integerData(w);
  if (!codes) return null;
  const [k, cols] = w.dims.map(Number) as [number, number];
  const only = (value: string, op: string): NodeProto | null => {
    const c = view.consumers.get(value);
    return c?.length === 1 && c[0]!.opType === op && !c[0]!.domain ? c[0]! : null;
  };
  const cast = only(n.output[0]!, 'Cast');
  const mul = cast && only(cast.output[0]!, 'Mul');
  if (!mul) return null;
  const scaleMul = view.producer.get(mul.input[0] === cast.output[0] ? mul.input[1]! : mul.input[0]!);
  if (!scaleMul || scaleMul.opType !== 'Mul') return null;
  const wScale = view.constant(scaleMul.input[1]!) ?? view.constant(scaleMul.input[0]!);
  if (!wScale || (wScale.data.length !== 1 && wScale.data.length !== cols)) return null;
  const zpData = n.input[3] ? integerData(inits.get(n.input[3])) : new Int8Array(1);
  if (!zpData || (zpData.length !== 1 && zpData.length !== cols)) return null;

  const blockSize = INTEGER_BLOCK_SIZE;
  const blocks = blocksOf(k, blockSize);
  const offset = signed ? 128 : 0;
  const packed = new Uint8Array(cols * blocks * blockSize);
  const scales = new Float32Array(cols * blocks);
  const zeroPoints = new Uint8Array(cols * blocks);
  for (let c = 0; c < cols; c++) {
    const zp = zpData[zpData.length === 1 ? 0 : c]! + offset;
    const scale = wScale.data[wScale.data.length === 1 ? 0 : c]!;
    zeroPoints.fill(zp, c * blocks, (c + 1) * blocks);
    scales.fill(scale, c * blocks, (c + 1) * blocks);
    // Padding rows of the last block hold the zero point (they multiply zero activations anyway).
    packed.fill(zp, c * blocks * blockSize, (c + 1) * blocks * blockSize);
    for (let r = 0; r < k; r++) packed[c * blocks * blockSize + r] = codes[r * cols + c]! + offset;
  }
  const quantized: QuantizedLinear = { bits: 8, blockSize, k, n: cols, packed, scales, zeroPoints };
  return { output: mul, weight: dequantized(quantized), quantized, bias: null };
}

/** An int8 / uint8 initializer's values (raw or int32_data), or null for other types. */
function integerData(t: TensorProto | undefined): Int8Array | Uint8Array | null {
  if (!t) return null;
  const count = t.dims.map(Number).reduce((a, b) => a * b, 1);
  if (t.dataType !== DATA_TYPE.int8 && t.dataType !== DATA_TYPE.uint8) return null;
  const signed = t.dataType === DATA_TYPE.int8;
  if (t.rawData && t.rawData.byteLength > 0) {
    const bytes = Uint8Array.from(t.rawData.subarray(0, count));
    return signed ? new Int8Array(bytes.buffer) : bytes;
  }
  if (t.int32Data.length === count) return signed ? Int8Array.from(t.int32Data) : Uint8Array.from(t.int32Data);
  return null;
}
