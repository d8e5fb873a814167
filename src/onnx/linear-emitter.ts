/**
 * How a rebuilt decoder graph (gpt2-graph.ts, llama-graph.ts) emits its linear layers: a float32
 * `MatMul`, or a `MatMulNBits` (matmul-nbits.ts) with weights quantized at build time or carried
 * over from a quantized export.
 *
 * The settings chosen (bench/matmul-kernels.ts, bench/results/matmul-kernels.json, 2-core AMD
 * EPYC with AVX-512 VNNI, onnxruntime-node 1.30): symmetric blocks of 32 along K.
 *
 * - 8-bit and 4-bit weights in the in-place graphs: int8 compute (`accuracy_level` 4,
 *   {@link inplaceAccuracyLevel}: the activations quantized per block of 32 of each row, as
 *   llama.cpp quantizes them for its Q8_0 / Q4_0 dot products): the fastest 8-bit kernel by far,
 *   at one row about as fast as 4 bits in float32 compute, and a row's result is bitwise the same
 *   however many rows a pass carries (4 bits in float32 compute dequantizes its weight for a
 *   product of more than one row, so a 5-row verification cost 1.4 one-row passes). The attention
 *   there is the row-independent one (inplace-attention.ts), so a verification pass gives each row
 *   bitwise what the one-token passes of decoding without a draft give it: greedy speculation
 *   stays exact. (With the split attention a row differed by float rounding, ~1e-5 on the logits,
 *   and int8 activations grew that to 0.1 and changed greedy tokens.)
 * - In a quantized file written for the exported path ({@link QUANT_ACCURACY_LEVEL}), float32
 *   compute (`accuracy_level` 1): the exported attention is not row-independent, and there a row
 *   differs from its one-row pass by float rounding only. ONNX Runtime 1.30's 8-bit kernel has no
 *   float32 path (it dequantizes its whole weight on every pass), so q8 on the exported path is
 *   exact but slow.
 */
import type { GraphBuilder } from './graph-builder.js';
import { quantizedFormOf } from './quantized-reading.js';
import { blocksOf, matMulNBits, quantizeLinear, scaleColumns, type AccuracyLevel, type QuantBits, type QuantizedLinear, type WeightDtype } from './matmul-nbits.js';

/** Weights of linear layers as MatMulNBits. */
export interface LinearQuantization {
  bits: QuantBits;
  /** Block size along K; a quantized export's larger blocks are split to this size (exactly). */
  blockSize: number;
  accuracyLevel: AccuracyLevel;
  symmetric: boolean;
}

/** Block size and compute type chosen for this CPU (module comment). */
export const QUANT_BLOCK_SIZE = 32;
export const QUANT_ACCURACY_LEVEL: AccuracyLevel = 1;
/**
 * Compute type of an in-place graph's MatMulNBits by the bit width of its first block's QKV
 * weights (module comment): quantized weights in int8 (`accuracy_level` 4, with the
 * row-independent attention), float32 (1) otherwise. Measured with bench/pass-profile.ts (bundled
 * target, 300 positions, variants in alternation on the loaded 2-core machine, one thread): q8
 * int8 5.6-8.0 ms for one row against 44-48 at float32 compute; q4 int8 6.0 / 7.6-9.1 ms for
 * 1 / 5 rows against 5.1-5.8 / 12-14 at float32 compute with the split attention
 * (bench/results/pass-profile-q4-rows*-loaded.json for 2, 5 and 8 rows on two threads).
 */
export function inplaceAccuracyLevel(bits: QuantBits | undefined): AccuracyLevel {
  return bits === undefined ? QUANT_ACCURACY_LEVEL : 4;
}

/** Whether a rebuilt graph computes its linear layers in int8: quantized (asked, or its weights' own form) at accuracy_level 4. */
export function computesInInt8(w: { weight: Float32Array; quantized?: QuantizedLinear }, quantization: LinearQuantization | 'fp32' | undefined, accuracyLevel: AccuracyLevel): boolean {
  if (quantization === 'fp32') return false;
  if (quantization !== undefined) return quantization.accuracyLevel === 4;
  return accuracyLevel === 4 && (w.quantized ?? quantizedFormOf(w.weight)) !== undefined;
}

/**
 * The quantization a weight dtype asks for: `fp32` = float32 MatMul even for a quantized export
 * (its weights dequantized), `q8` / `q4` = MatMulNBits with 8 / 4 bits; undefined = as the weights
 * come (float32, or a quantized export's own bits).
 */
export function quantizationFor(dtype: WeightDtype | undefined): LinearQuantization | 'fp32' | undefined {
  if (dtype === undefined) return undefined;
  if (dtype === 'fp32') return 'fp32';
  return { bits: dtype === 'q8' ? 8 : 4, blockSize: QUANT_BLOCK_SIZE, accuracyLevel: QUANT_ACCURACY_LEVEL, symmetric: true };
}

/** A linear layer's weight: float32 [k, n] row-major, and its quantized form when it was read from a quantized export. */
export interface LinearWeight {
  weight: Float32Array;
  quantized?: QuantizedLinear;
  k: number;
  n: number;
}

/** A scale folded into the first `columns` output columns (GPT-2's softmax scale into the query columns). */
export interface ColumnFold {
  columns: number;
  factor: number;
}

export type EmitLinear = (input: string, name: string, w: LinearWeight, fold?: ColumnFold) => string;

/** A function that emits `input x W` as the quantization asks (module comment); it returns the product's name. */
export function linearEmitter(g: GraphBuilder, quantization?: LinearQuantization | 'fp32', accuracyLevel: AccuracyLevel = QUANT_ACCURACY_LEVEL): EmitLinear {
  return (input, name, w, fold) => {
    const asked = quantization === 'fp32' ? undefined : quantization;
    const source = quantization === 'fp32' ? undefined : (w.quantized ?? quantizedFormOf(w.weight));
    if (source && (asked === undefined || asked.bits === source.bits)) {
      const reblocked = splitBlocks(source, Math.min(source.blockSize, asked?.blockSize ?? QUANT_BLOCK_SIZE));
      const folded = fold ? scaleColumns(reblocked, 0, fold.columns, fold.factor) : reblocked;
      return matMulNBits(g, input, name, folded, asked?.accuracyLevel ?? accuracyLevel);
    }
    let weight = w.weight;
    if (fold) {
      weight = weight.slice();
      for (let r = 0; r < w.k; r++) for (let c = 0; c < fold.columns; c++) weight[r * w.n + c]! *= fold.factor;
    }
    if (quantization === undefined || quantization === 'fp32') return g.op('MatMul', [input, g.initializer(name, weight, [w.k, w.n])]);
    return matMulNBits(g, input, name, quantizeLinear(weight, w.k, w.n, quantization), quantization.accuracyLevel);
  };
}

/**
 * `w` with its blocks split into blocks of `blockSize` (a power of two no larger than w's): the
 * same values, each new block keeping its old block's scale and zero point.
 */
export function splitBlocks(w: QuantizedLinear, blockSize: number): QuantizedLinear {
  if (blockSize === w.blockSize) return w;
  if (blockSize > w.blockSize || w.blockSize % blockSize !== 0) throw new Error(`cannot split blocks of ${w.blockSize} into blocks of ${blockSize}`);
  const per = w.blockSize / blockSize;
  const oldBlocks = blocksOf(w.k, w.blockSize);
  const blocks = blocksOf(w.k, blockSize);
  const oldBlob = (w.blockSize * w.bits) / 8;
  const blob = (blockSize * w.bits) / 8;
  const packed = new Uint8Array(w.n * blocks * blob);
  const scales = new Float32Array(w.n * blocks);
  const oldZpBytes = Math.ceil((oldBlocks * w.bits) / 8);
  const zpBytes = Math.ceil((blocks * w.bits) / 8);
  const zeroPoints = w.zeroPoints ? new Uint8Array(w.n * zpBytes) : undefined;
  for (let col = 0; col < w.n; col++) {
    for (let j = 0; j < blocks; j++) {
      const b = Math.floor(j / per);
      const from = (col * oldBlocks + b) * oldBlob + (j % per) * blob;
      packed.set(w.packed.subarray(from, from + blob), (col * blocks + j) * blob);
      scales[col * blocks + j] = w.scales[col * oldBlocks + b]!;
      if (zeroPoints) {
        const zp = w.bits === 8 ? w.zeroPoints![col * oldZpBytes + b]! : (w.zeroPoints![col * oldZpBytes + (b >> 1)]! >> ((b & 1) * 4)) & 0x0f;
        if (w.bits === 8) zeroPoints[col * zpBytes + j] = zp;
        else zeroPoints[col * zpBytes + (j >> 1)]! |= zp << ((j & 1) * 4);
      }
    }
  }
  return { ...w, blockSize, packed, scales, ...(zeroPoints ? { zeroPoints } : {}) };
}

/**
 * The weights of linear layers that share an input, joined along N ([k, n1 + n2 + ...], as a
 * rebuild fuses q/k/v or gate/up into one MatMul): the floats, and the quantized forms joined
 * when every part has one of the same bit width (blocks split to the smallest block size).
 */
export function joinColumns(parts: { weight: Float32Array; n: number }[], k: number): LinearWeight {
  const n = parts.reduce((sum, p) => sum + p.n, 0);
  const weight = new Float32Array(k * n);
  for (let r = 0; r < k; r++) {
    let at = 0;
    for (const p of parts) {
      weight.set(p.weight.subarray(r * p.n, (r + 1) * p.n), r * n + at);
      at += p.n;
    }
  }
  const forms = parts.map((p) => quantizedFormOf(p.weight));
  if (forms.some((f) => !f || f.bits !== forms[0]!.bits)) return { weight, k, n };
  const blockSize = Math.min(...forms.map((f) => f!.blockSize));
  const split = forms.map((f) => splitBlocks(f!, blockSize));
  const bits = split[0]!.bits;
  const blocks = blocksOf(k, blockSize);
  const zpBytes = Math.ceil((blocks * bits) / 8);
  const anyZp = split.some((f) => f.zeroPoints);
  const defaultZp = bits === 8 ? 1 << 7 : 0x88; // 2^(bits-1) in every packed field
  const zeroPoints = anyZp ? new Uint8Array(n * zpBytes) : undefined;
  let col = 0;
  for (const f of split) {
    if (zeroPoints) {
      if (f.zeroPoints) zeroPoints.set(f.zeroPoints, col * zpBytes);
      else zeroPoints.fill(defaultZp, col * zpBytes, (col + f.n) * zpBytes);
    }
    col += f.n;
  }
  const quantized: QuantizedLinear = {
    bits,
    blockSize,
    k,
    n,
    packed: concat(split.map((f) => f.packed)),
    scales: new Float32Array(concat(split.map((f) => new Uint8Array(f.scales.buffer, f.scales.byteOffset, f.scales.byteLength))).buffer),
    ...(zeroPoints ? { zeroPoints } : {}),
  };
  return { weight, k, n, quantized };
}

function concat(arrays: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(arrays.reduce((s, a) => s + a.byteLength, 0));
  let at = 0;
  for (const a of arrays) {
    out.set(a, at);
    at += a.byteLength;
  }
  return out;
}
