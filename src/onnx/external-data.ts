/**
 * A check of an ONNX model's external data files before ONNX Runtime opens them.
 *
 * A graph file may keep its initializers in other files (`model.onnx_data`, `model.onnx_data_1`,
 * ...), each tensor at an offset and length given in the graph. When such a file is missing or
 * truncated, ONNX Runtime's error names the graph file ("External initializer ... out of
 * bounds"); this check names the data file instead. It reads the graph file only when data files
 * sit next to it (the names exporters give them start with the graph file's name), and never
 * reads the data itself: a file's size is compared with the furthest byte any tensor needs.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import onnxProto from 'onnx-proto';
import { ModelLoadError } from '../errors.js';
import { readModel } from './graph-builder.js';

const { onnx } = onnxProto;

/** Bytes per element of TensorProto data types (4-bit types pack two per byte). */
const ELEMENT_BYTES: Record<number, number> = {
  1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 14: 8, 15: 16, 16: 2,
  17: 1, 18: 1, 19: 1, 20: 1, 21: 0.5, 22: 0.5,
};

/** Whether the graph file's directory holds files named like its external data. */
function hasExternalDataFiles(onnxPath: string): boolean {
  const name = basename(onnxPath);
  return readdirSync(dirname(onnxPath)).some((f) => f !== name && f.startsWith(name));
}

/** For each data file the graph refers to, the furthest byte a tensor needs and that tensor. */
function externalDataExtents(onnxPath: string): Map<string, { end: number; tensor: string }> {
  let model: ReturnType<typeof readModel>;
  try {
    model = readModel(readFileSync(onnxPath));
  } catch (err) {
    throw new ModelLoadError(`cannot load ${onnxPath}: not a readable ONNX model (${(err as Error).message})`, onnxPath);
  }
  const extents = new Map<string, { end: number; tensor: string }>();
  for (const t of model.graph?.initializer ?? []) {
    if (t.dataLocation !== onnx.TensorProto.DataLocation.EXTERNAL) continue;
    const info = Object.fromEntries((t.externalData ?? []).map((e) => [e.key, e.value]));
    if (!info['location']) continue;
    const file = join(dirname(onnxPath), String(info['location']));
    const offset = Number(info['offset'] ?? 0);
    const length = info['length'] !== undefined ? Number(info['length']) : tensorBytes(t.dims ?? [], t.dataType ?? 0);
    const end = offset + (length ?? 0);
    const known = extents.get(file);
    if (!known || end > known.end) extents.set(file, { end, tensor: t.name ?? '' });
  }
  return extents;
}

/**
 * @throws ModelLoadError naming the data file when one the graph refers to is missing or shorter
 *   than its tensors need
 */
export function checkExternalData(onnxPath: string): void {
  if (!hasExternalDataFiles(onnxPath)) return;
  for (const [file, { end, tensor }] of externalDataExtents(onnxPath)) {
    if (!existsSync(file)) throw new ModelLoadError(`missing ${file} (external data of ${onnxPath})`, file);
    const size = statSync(file).size;
    if (size < end) {
      throw new ModelLoadError(`${file} is truncated: ${size} bytes, but tensor ${tensor} of ${onnxPath} ends at byte ${end}`, file);
    }
  }
}

/** Bytes of a tensor's data, when its type has a fixed element size. */
function tensorBytes(dims: ReadonlyArray<number | { toString(): string }>, dataType: number): number | undefined {
  const size = ELEMENT_BYTES[dataType];
  if (size === undefined) return undefined;
  return Math.ceil(dims.reduce<number>((n, d) => n * Number(d), 1) * size);
}
