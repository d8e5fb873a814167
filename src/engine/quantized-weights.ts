/**
 * Which file holds a model's weights at a quantized dtype (`q8`, `q4`):
 *
 * 1. the model's own variant file (`onnx/model_q4.onnx`, `onnx/model_quantized.onnx` for q8, as
 *    transformers.js names them), exported elsewhere or written by `specd models quantize`; one
 *    that specd wrote records the sha256 of the model it came from and is refused when
 *    `onnx/model.onnx` has changed since;
 * 2. else a copy of `onnx/model.onnx` with its linear layers quantized (onnx/quantize-model.ts),
 *    made on first use in the cache directory and named by the source's sha256, the dtype and the
 *    quantization format, so that it can never be stale: `$SPECD_CACHE_DIR`, else
 *    `$XDG_CACHE_HOME/specd`, else `~/.cache/specd`, under `quantized/`.
 */
import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { ModelLoadError } from '../errors.js';
import { onnx, readModelFile } from '../onnx/graph-builder.js';
import { type LinearQuantization, QUANT_ACCURACY_LEVEL, QUANT_BLOCK_SIZE } from '../onnx/linear-emitter.js';
import { modelSha256, QUANTIZATION_KEY, QUANTIZED_FROM_KEY, quantizeDecoderModel } from '../onnx/quantize-model.js';
import { sha256File, SOURCE_SHA256_KEY } from '../onnx/model-identity.js';

/** Dtypes specd quantizes itself when the model has no file of its own. */
export const QUANTIZED_DTYPES = ['q8', 'q4'] as const;
export type QuantizedDtype = (typeof QUANTIZED_DTYPES)[number];

/** Changes whenever the quantized files specd writes would come out different (part of the cache key). */
const QUANT_FORMAT = `nbits-b${QUANT_BLOCK_SIZE}-sym-acc${QUANT_ACCURACY_LEVEL}-v1`;

export const isQuantizedDtype = (dtype: string): dtype is QuantizedDtype => (QUANTIZED_DTYPES as readonly string[]).includes(dtype);

/** The MatMulNBits settings of a dtype (linear-emitter.ts for the choice). */
export function quantizationOf(dtype: QuantizedDtype): LinearQuantization {
  return { bits: dtype === 'q8' ? 8 : 4, blockSize: QUANT_BLOCK_SIZE, accuracyLevel: QUANT_ACCURACY_LEVEL, symmetric: true };
}

/** specd's cache directory (module comment). */
export function cacheDir(): string {
  if (process.env.SPECD_CACHE_DIR) return process.env.SPECD_CACHE_DIR;
  return join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'specd');
}

/**
 * `source` (an fp32 `model.onnx`) with its linear layers quantized to `dtype`, as an ONNX model
 * whose data is inline, with the metadata that identifies its source.
 * @returns the encoded model and the number of linear layers quantized
 */
export function quantizeModelFile(source: string, dtype: QuantizedDtype, sourceSha = modelSha256(source)): { bytes: Uint8Array; quantized: number } {
  const model = readModelFile(source);
  const identity = model.metadataProps.find((p) => p.key === SOURCE_SHA256_KEY)?.value;
  const q = quantizationOf(dtype);
  const { quantized } = quantizeDecoderModel(model, q, {
    [QUANTIZED_FROM_KEY]: sourceSha,
    [QUANTIZATION_KEY]: `${dtype} ${QUANT_FORMAT}`,
    // A quantized draft is the same draft for an acceptance head (heads/runtime/prepare-draft.ts draftIdentity).
    ...(identity ? {} : { [SOURCE_SHA256_KEY]: sha256File(source) }),
  });
  if (quantized === 0) throw new ModelLoadError(`${source}: no linear layer with a constant float weight to quantize`, source);
  return { bytes: onnx.ModelProto.encode(model).finish(), quantized };
}

/**
 * The file holding `dir`'s weights at `dtype` (module comment), quantizing into the cache when
 * needed; `variantPath` is the model's own variant file for that dtype, `basePath` its model.onnx.
 * @throws ModelLoadError for a stale variant file or a model with neither file
 */
export function quantizedWeightsFile(variantPath: string, basePath: string, dtype: QuantizedDtype): string {
  if (existsSync(variantPath)) {
    const header = readModelFile(variantPath, { inlineExternalData: false });
    const from = header.metadataProps.find((p) => p.key === QUANTIZED_FROM_KEY)?.value;
    if (from && existsSync(basePath) && modelSha256(basePath) !== from) {
      throw new ModelLoadError(`${variantPath} was quantized from another ${basePath} (sha256 ${from.slice(0, 12)}...); write it again with specd models quantize, or delete it`, variantPath);
    }
    return variantPath;
  }
  if (!existsSync(basePath)) throw new ModelLoadError(`missing ${variantPath} and ${basePath} to quantize it from`, variantPath);
  const sha = modelSha256(basePath);
  const dir = join(cacheDir(), 'quantized');
  const file = join(dir, `${sha}.${dtype}.${QUANT_FORMAT}.onnx`);
  if (existsSync(file)) return file;
  const { bytes } = quantizeModelFile(basePath, dtype, sha);
  try {
    mkdirSync(dir, { recursive: true });
    // Written beside and renamed, so that a concurrent loader never reads a partial file.
    const partial = `${file}.${process.pid}.partial`;
    writeFileSync(partial, bytes);
    renameSync(partial, file);
  } catch (err) {
    throw new ModelLoadError(`cannot write the quantized copy of ${basePath} to ${dir}: ${(err as Error).message} (set SPECD_CACHE_DIR to a writable directory)`, basePath);
  }
  return file;
}
