/**
 * Block-wise weight quantization into ONNX Runtime's `com.microsoft` `MatMulNBits` operator
 * (onnxruntime/core/graph/contrib_ops/contrib_defs.cc, "MatMulNBits"; its CPU kernel is
 * MLAS's SQNBitGemm):
 *
 *   Y[M, N] = A[M, K] x dequant(B), dequant(B)[k, n] = (q[n, k] - zero_point[n, k / block]) * scale[n, k / block]
 *
 * `B` is stored transposed, one row per output column n: `[N, blocks, block * bits / 8]` bytes,
 * `blocks = ceil(K / block)`, the K axis padded with zeros to whole blocks; for 4 bits element 2i
 * of a byte pair sits in the low nibble and 2i+1 in the high one. `scales` is `[N * blocks]`
 * float32; `zero_points` (optional) `[N * ceil(blocks * bits / 8)]` packed the same way, and
 * without it the zero point is 2^(bits-1) (8 for 4 bits, 128 for 8 bits), i.e. symmetric.
 *
 * Symmetric quantization here is round-to-nearest with scale = max|w| / (2^(bits-1) - 1) per block
 * (7 for 4 bits, 127 for 8 bits), the values clamped to the representable range; asymmetric
 * (with zero points) maps [min(w, 0), max(w, 0)] onto [0, 2^bits - 1], as ONNX Runtime's
 * `MatMulNBitsQuantizer` (onnxruntime/python/tools/quantization/matmul_nbits_quantizer.py) does.
 */
import type { GraphBuilder } from './graph-builder.js';

const MS = 'com.microsoft';

/** Bit widths this module writes (MatMulNBits also knows 2). */
export type QuantBits = 4 | 8;

/**
 * `accuracy_level` of a MatMulNBits node (the contrib op's attribute): the type its CPU kernel
 * computes in. 0 = unset (float32), 1 = float32, 2 = float16, 3 = bfloat16, 4 = int8 (the
 * activations are quantized to int8 per block of each row, then integer dot products).
 */
export type AccuracyLevel = 0 | 1 | 2 | 3 | 4;

/** How the weights of linear layers are stored: `q8` / `q4` are MatMulNBits with 8 / 4 bits. */
export type WeightDtype = 'fp32' | 'q8' | 'q4';
export const WEIGHT_DTYPES: readonly WeightDtype[] = ['fp32', 'q8', 'q4'];

/** A linear layer's weight in MatMulNBits form (module comment for the layout). */
export interface QuantizedLinear {
  bits: QuantBits;
  /** Rows of a block along K: a power of two, at least 16. */
  blockSize: number;
  /** Input width. */
  k: number;
  /** Output width. */
  n: number;
  /** [N, blocks, blockSize * bits / 8] */
  packed: Uint8Array;
  /** [N * blocks] */
  scales: Float32Array;
  /** [N * ceil(blocks * bits / 8)], packed as `packed` is; absent: 2^(bits-1) (symmetric). */
  zeroPoints?: Uint8Array;
}

export interface QuantizeOptions {
  bits: QuantBits;
  blockSize: number;
  /** Without zero points (default true). */
  symmetric?: boolean;
}

/** Blocks per column of a K-row weight. */
export const blocksOf = (k: number, blockSize: number): number => Math.ceil(k / blockSize);

/**
 * Quantizes `weight` ([K, N] float32, row-major, the layout of an ONNX MatMul's constant
 * operand) block-wise along K.
 * @throws Error for a block size that is not a power of two >= 16 or a weight of the wrong size
 */
export function quantizeLinear(weight: Float32Array, k: number, n: number, options: QuantizeOptions): QuantizedLinear {
  const { bits, blockSize } = options;
  const symmetric = options.symmetric ?? true;
  if (blockSize < 16 || (blockSize & (blockSize - 1)) !== 0) throw new Error(`block size ${blockSize} is not a power of two >= 16`);
  if (weight.length !== k * n) throw new Error(`weight of ${weight.length} values is not [${k}, ${n}]`);
  const blocks = blocksOf(k, blockSize);
  const blob = (blockSize * bits) / 8;
  const packed = new Uint8Array(n * blocks * blob);
  const scales = new Float32Array(n * blocks);
  const zpBytesPerColumn = Math.ceil((blocks * bits) / 8);
  const zeroPoints = symmetric ? undefined : new Uint8Array(n * zpBytesPerColumn);
  const qmax = (1 << bits) - 1;
  const half = 1 << (bits - 1);
  const q = new Uint8Array(blockSize);
  for (let col = 0; col < n; col++) {
    for (let b = 0; b < blocks; b++) {
      const start = b * blockSize;
      const end = Math.min(k, start + blockSize);
      let scale: number;
      let zp: number;
      if (symmetric) {
        let absmax = 0;
        for (let r = start; r < end; r++) absmax = Math.max(absmax, Math.abs(weight[r * n + col]!));
        scale = absmax / (half - 1);
        zp = half;
      } else {
        let lo = 0;
        let hi = 0;
        for (let r = start; r < end; r++) {
          const w = weight[r * n + col]!;
          lo = Math.min(lo, w);
          hi = Math.max(hi, w);
        }
        scale = (hi - lo) / qmax;
        zp = scale === 0 ? half : Math.min(qmax, Math.max(0, Math.round(-lo / scale)));
      }
      scale = Math.fround(scale);
      const inv = scale === 0 ? 0 : 1 / scale;
      q.fill(zp);
      for (let r = start; r < end; r++) q[r - start] = Math.min(qmax, Math.max(0, Math.round(weight[r * n + col]! * inv) + zp));
      scales[col * blocks + b] = scale;
      packBlock(q, bits, packed, (col * blocks + b) * blob);
      if (zeroPoints) setPacked(zeroPoints, col * zpBytesPerColumn, b, bits, zp);
    }
  }
  return { bits, blockSize, k, n, packed, scales, ...(zeroPoints ? { zeroPoints } : {}) };
}

/** The float32 weight [K, N] a quantized linear stands for (what MatMulNBits multiplies by). */
export function dequantizeLinear(w: QuantizedLinear): Float32Array {
  const { bits, blockSize, k, n } = w;
  const blocks = blocksOf(k, blockSize);
  const blob = (blockSize * bits) / 8;
  const zpBytesPerColumn = Math.ceil((blocks * bits) / 8);
  const out = new Float32Array(k * n);
  for (let col = 0; col < n; col++) {
    for (let b = 0; b < blocks; b++) {
      const scale = w.scales[col * blocks + b]!;
      const zp = w.zeroPoints ? getPacked(w.zeroPoints, col * zpBytesPerColumn, b, bits) : 1 << (bits - 1);
      const base = (col * blocks + b) * blob;
      for (let r = b * blockSize; r < Math.min(k, (b + 1) * blockSize); r++) {
        out[r * n + col] = Math.fround((getPacked(w.packed, base, r - b * blockSize, bits) - zp) * scale);
      }
    }
  }
  return out;
}

/** `w` with the scales of output columns [from, to) multiplied by `factor` (a scale folded into the weight). */
export function scaleColumns(w: QuantizedLinear, from: number, to: number, factor: number): QuantizedLinear {
  const blocks = blocksOf(w.k, w.blockSize);
  const scales = w.scales.slice();
  for (let col = from; col < to; col++) for (let b = 0; b < blocks; b++) scales[col * blocks + b] = Math.fround(scales[col * blocks + b]! * factor);
  return { ...w, scales };
}

/**
 * Emits `Y = input x dequant(w)` as one MatMulNBits node with its initializers named `<name>.*`;
 * returns Y's name.
 */
export function matMulNBits(g: GraphBuilder, input: string, name: string, w: QuantizedLinear, accuracyLevel: AccuracyLevel, bias?: string): string {
  const blocks = blocksOf(w.k, w.blockSize);
  const packed = g.initializer(`${name}.qweight`, w.packed, [w.n, blocks, (w.blockSize * w.bits) / 8], { dtype: 'uint8' });
  const scales = g.initializer(`${name}.scales`, w.scales, [w.n * blocks]);
  const zp = w.zeroPoints ? g.initializer(`${name}.zero_points`, w.zeroPoints, [w.zeroPoints.length], { dtype: 'uint8' }) : '';
  const inputs = [input, packed, scales, zp];
  if (bias) inputs.push('', bias); // g_idx left out
  while (inputs[inputs.length - 1] === '') inputs.pop();
  return g.op('MatMulNBits', inputs, {
    domain: MS,
    attrs: { K: w.k, N: w.n, bits: w.bits, block_size: w.blockSize, accuracy_level: accuracyLevel },
  });
}

/** Writes a block's `bits`-wide codes into `out` from byte `offset` on. */
function packBlock(q: Uint8Array, bits: QuantBits, out: Uint8Array, offset: number): void {
  if (bits === 8) {
    out.set(q, offset);
    return;
  }
  for (let i = 0; i < q.length; i += 2) out[offset + i / 2] = (q[i]! & 0x0f) | ((q[i + 1]! & 0x0f) << 4);
}

function setPacked(out: Uint8Array, offset: number, index: number, bits: QuantBits, value: number): void {
  if (bits === 8) {
    out[offset + index] = value;
    return;
  }
  const at = offset + (index >> 1);
  out[at] = index & 1 ? (out[at]! & 0x0f) | (value << 4) : (out[at]! & 0xf0) | value;
}

function getPacked(data: Uint8Array, offset: number, index: number, bits: QuantBits | number): number {
  if (bits === 8) return data[offset + index]!;
  const byte = data[offset + (index >> 1)]!;
  return index & 1 ? byte >> 4 : byte & 0x0f;
}
