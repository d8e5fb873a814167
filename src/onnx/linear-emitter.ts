/**
 * How a rebuilt decoder graph (gpt2-graph.ts, llama-graph.ts) emits its linear layers: a float32
 * `MatMul`, or a `MatMulNBits` (matmul-nbits.ts) with weights quantized at build time or carried
 * over from a quantized export.
 *
 * The settings chosen for this CPU (bench/matmul-kernels.ts, bench/results/matmul-kernels.json):
 * symmetric blocks of 32 along K, `accuracy_level` 4 (int8 compute). At accuracy_level 0 the
 * 8-bit kernel dequantizes the whole weight on every pass (8-30x slower than float32 MatMul);
 * at level 4 both widths beat float32 several times over. Blocks of 16 and 32 at level 4 keep
 * each row's result bitwise the same however many rows a pass carries, which speculation's
 * exactness rests on (a verification's rows must equal the target's own one-token passes); blocks
 * of 64 and 128 and level 0 do not.
 */
import type { GraphBuilder } from './graph-builder.js';
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
export const QUANT_ACCURACY_LEVEL: AccuracyLevel = 4;

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
export function linearEmitter(g: GraphBuilder, quantization?: LinearQuantization | 'fp32'): EmitLinear {
  return (input, name, w, fold) => {
    const asked = quantization === 'fp32' ? undefined : quantization;
    const source = quantization === 'fp32' ? undefined : w.quantized;
    if (source && (asked === undefined || asked.bits === source.bits)) {
      const reblocked = splitBlocks(source, Math.min(source.blockSize, asked?.blockSize ?? QUANT_BLOCK_SIZE));
      const folded = fold ? scaleColumns(reblocked, 0, fold.columns, fold.factor) : reblocked;
      return matMulNBits(g, input, name, folded, asked?.accuracyLevel ?? QUANT_ACCURACY_LEVEL);
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
