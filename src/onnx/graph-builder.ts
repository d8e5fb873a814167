/**
 * A small builder for ONNX models on top of `onnx-proto` (protobufjs).
 *
 * Values in the graph are referred to by name (plain strings). Every method that
 * creates a value returns its name, so graphs read like straight-line code:
 *
 * ```ts
 * const g = new GraphBuilder({ opset: 17 });
 * const x = g.input('x', 'float32', ['batch', 'seq', 16]);
 * const w = g.initializer('w', new Float32Array(16 * 8), [16, 8]);
 * const y = g.op('MatMul', [x, w]);
 * g.output(y, 'y', 'float32', ['batch', 'seq', 8]);
 * const bytes = g.toBytes();
 * ```
 *
 * Tensors are always stored little-endian in `raw_data`. Large initializers can be
 * written to a side file in the ONNX external-data format (see {@link GraphBuilder.serialize}).
 */
import { closeSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import onnxProto from 'onnx-proto';
import type { onnx as OnnxNs } from 'onnx-proto';
import { ModelLoadError } from '../errors.js';

/** The generated protobuf classes (`onnx.ModelProto`, `onnx.TensorProto`, ...). */
export const onnx = onnxProto.onnx;
export type ModelProto = OnnxNs.ModelProto;
export type GraphProto = OnnxNs.GraphProto;
export type NodeProto = OnnxNs.NodeProto;
export type TensorProto = OnnxNs.TensorProto;
export type ValueInfoProto = OnnxNs.ValueInfoProto;
type TensorProtoInit = OnnxNs.ITensorProto;
type AttributeProtoInit = OnnxNs.IAttributeProto;

/** Element types the builder knows about. */
export type DType = 'float32' | 'float16' | 'int64' | 'int32' | 'bool' | 'uint8' | 'int8';

/** A tensor dimension: a fixed size or a symbolic name such as `'batch_size'`. */
export type Dim = number | string;

/** ONNX `TensorProto.DataType` codes for each {@link DType}. */
export const DATA_TYPE: Readonly<Record<DType, number>> = {
  float32: 1,
  uint8: 2,
  int8: 3,
  int32: 6,
  int64: 7,
  bool: 9,
  float16: 10,
};

const BYTES_PER_ELEMENT: Readonly<Record<DType, number>> = {
  float32: 4,
  int32: 4,
  int64: 8,
  bool: 1,
  float16: 2,
  uint8: 1,
  int8: 1,
};

/**
 * Data accepted for an initializer. The element type is taken from the array type
 * (Float32Array -> float32, BigInt64Array -> int64, Int32Array -> int32) unless
 * `dtype` says otherwise: a Float32Array with `dtype: 'float16'` is converted to
 * half precision, a Uint16Array with `dtype: 'float16'` is taken as raw half bits,
 * a Uint8Array with `dtype: 'bool'` holds 0/1 bytes, and Uint8Array / Int8Array are uint8 / int8
 * (packed quantized weights).
 */
export type TensorData = Float32Array | BigInt64Array | Int32Array | Uint16Array | Uint8Array | Int8Array;

/** A tagged attribute value, for when a plain value would be ambiguous (e.g. a float `1`). */
export type TaggedAttr =
  | { type: 'int'; value: number }
  | { type: 'float'; value: number }
  | { type: 'ints'; value: number[] }
  | { type: 'floats'; value: number[] }
  | { type: 'string'; value: string }
  | { type: 'tensor'; value: TensorProtoInit };

/**
 * A node attribute value. Plain values are mapped as follows: an integer number or
 * bigint -> INT, any other number -> FLOAT, a number array -> INTS if every entry is
 * an integer else FLOATS, a string -> STRING. Use {@link attr} for anything else.
 */
export type AttrValue = number | bigint | number[] | string | TaggedAttr;

/** Helpers that build tagged attribute values. */
export const attr = {
  int: (value: number): TaggedAttr => ({ type: 'int', value }),
  float: (value: number): TaggedAttr => ({ type: 'float', value }),
  ints: (value: number[]): TaggedAttr => ({ type: 'ints', value }),
  floats: (value: number[]): TaggedAttr => ({ type: 'floats', value }),
  string: (value: string): TaggedAttr => ({ type: 'string', value }),
  tensor: (value: TensorProtoInit): TaggedAttr => ({ type: 'tensor', value }),
};

/** Options of {@link GraphBuilder.op}. */
export interface OpOptions {
  /** Node attributes. */
  attrs?: Record<string, AttrValue>;
  /** Operator domain; '' (the default ONNX domain) unless given. */
  domain?: string;
  /** Node name; generated when absent. */
  name?: string;
  /** Output value names; generated when absent. */
  outputs?: string[];
}

/** Options of {@link GraphBuilder.serialize} and {@link GraphBuilder.save}. */
export interface ExternalDataOptions {
  /** File name of the data file, relative to the model file (e.g. `model.onnx_data`). */
  location: string;
  /** Initializers of at least this many bytes go to the data file (default 1024). */
  sizeThreshold?: number;
  /** Alignment of each tensor's offset in the data file (default 4096). */
  alignment?: number;
}

interface Initializer {
  name: string;
  dtype: DType;
  dims: number[];
  bytes: Uint8Array;
}

/** Builds one ONNX graph and wraps it in a model. */
export class GraphBuilder {
  readonly opset: number;
  readonly irVersion: number;
  readonly graphName: string;
  private readonly nodes: NodeProto[] = [];
  private readonly inputs: ValueInfoProto[] = [];
  private readonly outputs: ValueInfoProto[] = [];
  private readonly initializers: Initializer[] = [];
  private readonly metadata: Record<string, string> = {};
  private readonly usedNames = new Set<string>();
  private counter = 0;

  constructor(options: { opset?: number; irVersion?: number; name?: string } = {}) {
    this.opset = options.opset ?? 17;
    this.irVersion = options.irVersion ?? 8;
    this.graphName = options.name ?? 'graph';
  }

  /** Declares a graph input and returns its name. */
  input(name: string, dtype: DType, shape: Dim[]): string {
    this.claim(name);
    this.inputs.push(valueInfo(name, dtype, shape));
    return name;
  }

  /**
   * Marks `value` as a graph output called `name` (an Identity node is inserted when
   * the names differ) and returns the output name.
   */
  output(value: string, name: string, dtype: DType, shape: Dim[]): string {
    if (value !== name) this.op('Identity', [value], { outputs: [name] });
    this.outputs.push(valueInfo(name, dtype, shape));
    return name;
  }

  /** Adds a named initializer (a constant tensor) and returns its name. */
  initializer(name: string, data: TensorData, dims: number[], options: { dtype?: DType } = {}): string {
    this.claim(name);
    const dtype = options.dtype ?? inferDType(data);
    const bytes = tensorBytes(data, dtype);
    const count = dims.reduce((a, b) => a * b, 1);
    if (bytes.byteLength !== count * BYTES_PER_ELEMENT[dtype]) {
      throw new Error(`initializer ${name}: ${bytes.byteLength} bytes do not fit ${dtype}[${dims.join(',')}]`);
    }
    this.initializers.push({ name, dtype, dims: [...dims], bytes });
    return name;
  }

  /**
   * Adds an unnamed constant (as an initializer) and returns its name. `dims`
   * defaults to a 1-D tensor of `values.length`; pass `[]` for a scalar.
   */
  constant(dtype: 'float32' | 'float16' | 'int64' | 'int32', values: number[], dims?: number[]): string {
    const name = this.fresh(`const_${dtype}`);
    const shape = dims ?? [values.length];
    if (dtype === 'int64') return this.initializer(name, BigInt64Array.from(values.map(BigInt)), shape);
    if (dtype === 'int32') return this.initializer(name, Int32Array.from(values), shape);
    return this.initializer(name, Float32Array.from(values), shape, { dtype });
  }

  /** Adds a node with one output and returns the output's name. Pass '' for a skipped optional input. */
  op(opType: string, inputs: string[], options: OpOptions = {}): string {
    return this.opN(opType, inputs, options.outputs?.length ?? 1, options)[0]!;
  }

  /** Adds a node with `numOutputs` outputs and returns their names. */
  opN(opType: string, inputs: string[], numOutputs: number, options: OpOptions = {}): string[] {
    const outputs = options.outputs ?? Array.from({ length: numOutputs }, () => this.fresh(opType));
    outputs.forEach((o) => o !== '' && this.claim(o)); // '' = an optional output left out
    const attribute = Object.entries(options.attrs ?? {}).map(([k, v]) => attributeProto(k, v));
    this.nodes.push(
      onnx.NodeProto.create({
        opType,
        domain: options.domain ?? '',
        name: options.name ?? this.fresh(`${opType}_node`),
        input: inputs,
        output: outputs,
        attribute,
      }),
    );
    return outputs;
  }

  /** Sets a `metadata_props` entry of the model. */
  setMetadata(key: string, value: string): void {
    this.metadata[key] = value;
  }

  /** Builds the model with all tensor data inline. */
  toModel(): ModelProto {
    return this.serializeModel(undefined).model;
  }

  /** Encodes the model with all tensor data inline. */
  toBytes(): Uint8Array {
    return onnx.ModelProto.encode(this.toModel()).finish();
  }

  /**
   * Encodes the model. With `externalData`, initializers of at least `sizeThreshold`
   * bytes are stored in a separate buffer (to be written to `externalData.location`
   * next to the model file) and referenced from the model with
   * `data_location = EXTERNAL` and `location` / `offset` / `length` entries.
   */
  serialize(externalData?: ExternalDataOptions): { model: Uint8Array; data?: Uint8Array } {
    const { model, chunks, size } = this.serializeModel(externalData);
    return { model: onnx.ModelProto.encode(model).finish(), ...(chunks ? { data: concatBytes(chunks, size) } : {}) };
  }

  /**
   * Writes the model to `path`. With `externalData: true` large initializers go to
   * `<path>_data` (e.g. `model.onnx_data`); that file is written even when empty.
   */
  save(path: string, options: { externalData?: boolean; sizeThreshold?: number } = {}): void {
    const ext = options.externalData
      ? { location: `${basename(path)}_data`, sizeThreshold: options.sizeThreshold ?? 1024 }
      : undefined;
    const { model, chunks } = this.serializeModel(ext);
    writeFileSync(path, onnx.ModelProto.encode(model).finish());
    if (!ext) return;
    // Written chunk by chunk: the data of a large model does not fit one buffer.
    const fd = openSync(join(dirname(path), ext.location), 'w');
    try {
      for (const chunk of chunks ?? []) {
        for (let done = 0; done < chunk.byteLength; ) done += writeSync(fd, chunk, done);
      }
    } finally {
      closeSync(fd);
    }
  }

  private serializeModel(ext: ExternalDataOptions | undefined): { model: ModelProto; chunks?: Uint8Array[]; size: number } {
    const chunks: Uint8Array[] = [];
    let offset = 0;
    const initializer = this.initializers.map((init) => {
      const base: TensorProtoInit = { name: init.name, dims: init.dims, dataType: DATA_TYPE[init.dtype] };
      if (!ext || init.bytes.byteLength < (ext.sizeThreshold ?? 1024)) {
        return onnx.TensorProto.create({ ...base, rawData: init.bytes });
      }
      const align = ext.alignment ?? 4096;
      const start = Math.ceil(offset / align) * align;
      if (start > offset) chunks.push(new Uint8Array(start - offset));
      chunks.push(init.bytes);
      offset = start + init.bytes.byteLength;
      return onnx.TensorProto.create({
        ...base,
        dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
        externalData: [
          { key: 'location', value: ext.location },
          { key: 'offset', value: String(start) },
          { key: 'length', value: String(init.bytes.byteLength) },
        ],
      });
    });
    const model = onnx.ModelProto.create({
      irVersion: this.irVersion,
      producerName: 'specd',
      opsetImport: [{ domain: '', version: this.opset }, ...this.extraDomains().map((domain) => ({ domain, version: 1 }))],
      metadataProps: Object.entries(this.metadata).map(([key, value]) => ({ key, value })),
      graph: onnx.GraphProto.create({
        name: this.graphName,
        node: this.nodes,
        input: this.inputs,
        output: this.outputs,
        initializer,
      }),
    });
    return ext ? { model, chunks, size: offset } : { model, size: 0 };
  }

  /** Operator domains other than the default one that the nodes use (e.g. `com.microsoft`), imported at version 1. */
  private extraDomains(): string[] {
    return [...new Set(this.nodes.map((n) => n.domain).filter((d) => d !== '' && d !== 'ai.onnx'))];
  }

  /** Returns an unused name starting with `prefix` (claimed by the caller when used for a value). */
  fresh(prefix: string): string {
    let name: string;
    do name = `${prefix}_${this.counter++}`;
    while (this.usedNames.has(name));
    return name;
  }

  private claim(name: string): void {
    if (this.usedNames.has(name)) throw new Error(`duplicate value name: ${name}`);
    this.usedNames.add(name);
  }
}

/** Decodes ONNX model bytes (external data stays external; see {@link readModelFile}). */
export function readModel(bytes: Uint8Array): ModelProto {
  return onnx.ModelProto.decode(bytes);
}

/** A decoded model's graph, its lists typed as the decoded class instances they are. */
export interface DecodedGraph {
  node: NodeProto[];
  input: ValueInfoProto[];
  output: ValueInfoProto[];
  initializer: TensorProto[];
  valueInfo: ValueInfoProto[];
}

/** The graph of a model decoded by `readModel` (throws when there is none). */
export function decodedGraph(model: ModelProto, file = 'model'): DecodedGraph {
  if (!model.graph) throw new ModelLoadError(`${file}: no graph`, file);
  return model.graph as unknown as DecodedGraph;
}

/**
 * Reads a model file and, unless `inlineExternalData` is false, loads the data of
 * external initializers (paths relative to the model file) into their `raw_data`.
 */
export function readModelFile(path: string, options: { inlineExternalData?: boolean } = {}): ModelProto {
  const model = readModel(readFileSync(path));
  if (options.inlineExternalData === false) return model;
  const files = new Map<string, Buffer>();
  for (const t of model.graph?.initializer ?? []) {
    if (t.dataLocation !== onnx.TensorProto.DataLocation.EXTERNAL) continue;
    const info = Object.fromEntries((t.externalData ?? []).map((e) => [e.key, e.value]));
    const location = join(dirname(path), String(info['location']));
    if (!files.has(location)) files.set(location, readFileSync(location));
    const file = files.get(location)!;
    const start = Number(info['offset'] ?? 0);
    const end = info['length'] !== undefined ? start + Number(info['length']) : file.byteLength;
    t.rawData = new Uint8Array(file.subarray(start, end));
    t.dataLocation = onnx.TensorProto.DataLocation.DEFAULT;
    t.externalData = [];
  }
  return model;
}

/** Converts float32 values to IEEE half-precision bit patterns (round to nearest even). */
export function float32ToFloat16Bits(values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let i = 0; i < values.length; i++) {
    f[0] = values[i]!;
    const x = u[0]!;
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    if (exp === 0xff) {
      out[i] = sign | 0x7c00 | (mant ? 0x200 : 0); // inf / nan
      continue;
    }
    const e = exp - 127 + 15;
    if (e >= 0x1f) {
      out[i] = sign | 0x7c00; // overflow -> inf
    } else if (e <= 0) {
      if (e < -10) {
        out[i] = sign; // underflow -> signed zero
        continue;
      }
      mant |= 0x800000; // subnormal half: shift in the implicit bit
      const shift = 14 - e;
      const half = mant >>> shift;
      const rem = mant & ((1 << shift) - 1);
      const mid = 1 << (shift - 1);
      out[i] = sign | (half + (rem > mid || (rem === mid && half & 1) ? 1 : 0));
    } else {
      const half = (e << 10) | (mant >>> 13);
      const rem = mant & 0x1fff;
      // Rounding may carry into the exponent, which is the correct result (up to inf).
      out[i] = sign | (half + (rem > 0x1000 || (rem === 0x1000 && half & 1) ? 1 : 0));
    }
  }
  return out;
}

/** Converts IEEE half-precision bit patterns to float32 values. */
export function float16BitsToFloat32(bits: ArrayLike<number>): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) {
    const h = bits[i]!;
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0) out[i] = sign * mant * 2 ** -24;
    else if (exp === 0x1f) out[i] = mant ? NaN : sign * Infinity;
    else out[i] = sign * (1 + mant / 1024) * 2 ** (exp - 15);
  }
  return out;
}

/** Builds a standalone TensorProto, e.g. for a tensor attribute (`attr.tensor(tensorProto(...))`). */
export function tensorProto(data: TensorData, dims: number[], options: { dtype?: DType; name?: string } = {}): TensorProto {
  const dtype = options.dtype ?? inferDType(data);
  return onnx.TensorProto.create({
    name: options.name ?? '',
    dims,
    dataType: DATA_TYPE[dtype],
    rawData: tensorBytes(data, dtype),
  });
}

function valueInfo(name: string, dtype: DType, shape: Dim[]): ValueInfoProto {
  return onnx.ValueInfoProto.create({
    name,
    type: {
      tensorType: {
        elemType: DATA_TYPE[dtype],
        shape: { dim: shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  });
}

function inferDType(data: TensorData): DType {
  if (data instanceof Float32Array) return 'float32';
  if (data instanceof BigInt64Array) return 'int64';
  if (data instanceof Int32Array) return 'int32';
  if (data instanceof Int8Array) return 'int8';
  throw new Error(`pass options.dtype for ${data.constructor.name} initializer data`);
}

/** Little-endian bytes of `data` as `dtype` (all supported hosts are little-endian). */
function tensorBytes(data: TensorData, dtype: DType): Uint8Array {
  let typed: ArrayBufferView = data;
  if (dtype === 'float16' && data instanceof Float32Array) typed = float32ToFloat16Bits(data);
  const ok =
    (dtype === 'float32' && typed instanceof Float32Array) ||
    (dtype === 'float16' && typed instanceof Uint16Array) ||
    (dtype === 'int64' && typed instanceof BigInt64Array) ||
    (dtype === 'int32' && typed instanceof Int32Array) ||
    (dtype === 'bool' && typed instanceof Uint8Array) ||
    (dtype === 'uint8' && typed instanceof Uint8Array) ||
    (dtype === 'int8' && typed instanceof Int8Array);
  if (!ok) throw new Error(`cannot store ${data.constructor.name} as ${dtype}`);
  return new Uint8Array(typed.buffer.slice(typed.byteOffset, typed.byteOffset + typed.byteLength));
}

function attributeProto(name: string, value: AttrValue): OnnxNs.AttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  const tagged: TaggedAttr =
    typeof value === 'object' && !Array.isArray(value)
      ? value
      : typeof value === 'bigint'
        ? { type: 'int', value: Number(value) }
        : typeof value === 'string'
          ? { type: 'string', value }
          : typeof value === 'number'
            ? { type: Number.isInteger(value) ? 'int' : 'float', value }
            : value.every(Number.isInteger)
              ? { type: 'ints', value }
              : { type: 'floats', value };
  const init: AttributeProtoInit = { name };
  switch (tagged.type) {
    case 'int':
      Object.assign(init, { type: T.INT, i: tagged.value });
      break;
    case 'float':
      Object.assign(init, { type: T.FLOAT, f: tagged.value });
      break;
    case 'ints':
      Object.assign(init, { type: T.INTS, ints: tagged.value });
      break;
    case 'floats':
      Object.assign(init, { type: T.FLOATS, floats: tagged.value });
      break;
    case 'string':
      Object.assign(init, { type: T.STRING, s: new TextEncoder().encode(tagged.value) });
      break;
    case 'tensor':
      Object.assign(init, { type: T.TENSOR, t: tagged.value });
      break;
  }
  return onnx.AttributeProto.create(init);
}

function concatBytes(chunks: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let pos = 0;
  for (const c of chunks) {
    out.set(c, pos);
    pos += c.byteLength;
  }
  return out;
}
