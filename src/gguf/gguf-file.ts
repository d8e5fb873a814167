/**
 * GGUF, the model file format of llama.cpp / ggml (version 3, as specified in ggml's
 * docs/gguf.md): a header (magic `GGUF`, version, tensor count, metadata count), typed metadata
 * key/value pairs, tensor infos (name, dimensions innermost first, ggml type, offset into the
 * data section), then the tensor data, each tensor aligned to `general.alignment` (default 32).
 * All integers little-endian; strings are a uint64 byte length and UTF-8 bytes.
 *
 * This module writes and reads float32 tensors and every metadata type; other ggml tensor types
 * are read as opaque bytes.
 */
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';

const MAGIC = 0x46554747; // 'GGUF' read as a little-endian uint32
const VERSION = 3;
/** Alignment of tensor data when the file does not set `general.alignment` (ggml's GGUF_DEFAULT_ALIGNMENT). */
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** Metadata value types (ggml's `gguf_type`). */
export const GgufType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;

/** Tensor types (ggml's `ggml_type`) this project names. */
export const GgmlType = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 8 } as const;

/** A typed metadata value; arrays hold one element type. */
export type GgufValue =
  | { type: 'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32' | 'f32' | 'f64' | 'u64' | 'i64'; value: number }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string }
  | { type: 'array'; of: 'string'; value: string[] }
  | { type: 'array'; of: 'i32' | 'u32' | 'f32' | 'u8'; value: number[] };

export interface GgufTensor {
  name: string;
  /** Dimensions innermost first (ggml's ne): a row-major [rows, cols] matrix is [cols, rows]. */
  dims: number[];
  type: number;
  /** float32 values for F32, else the raw bytes. */
  data: Float32Array | Uint8Array;
}

export interface GgufFile {
  metadata: Map<string, GgufValue>;
  tensors: GgufTensor[];
}

const SCALAR_CODES: Record<string, number> = {
  u8: GgufType.UINT8,
  i8: GgufType.INT8,
  u16: GgufType.UINT16,
  i16: GgufType.INT16,
  u32: GgufType.UINT32,
  i32: GgufType.INT32,
  f32: GgufType.FLOAT32,
  bool: GgufType.BOOL,
  string: GgufType.STRING,
  u64: GgufType.UINT64,
  i64: GgufType.INT64,
  f64: GgufType.FLOAT64,
};

/** Growable little-endian byte buffer. */
class Bytes {
  private buf = Buffer.alloc(1 << 16);
  length = 0;
  private room(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const next = Buffer.alloc(Math.max(this.buf.length * 2, this.length + n));
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }
  u8(v: number) { this.room(1); this.buf.writeUInt8(v, this.length); this.length += 1; }
  i8(v: number) { this.room(1); this.buf.writeInt8(v, this.length); this.length += 1; }
  u16(v: number) { this.room(2); this.buf.writeUInt16LE(v, this.length); this.length += 2; }
  i16(v: number) { this.room(2); this.buf.writeInt16LE(v, this.length); this.length += 2; }
  u32(v: number) { this.room(4); this.buf.writeUInt32LE(v, this.length); this.length += 4; }
  i32(v: number) { this.room(4); this.buf.writeInt32LE(v, this.length); this.length += 4; }
  f32(v: number) { this.room(4); this.buf.writeFloatLE(v, this.length); this.length += 4; }
  f64(v: number) { this.room(8); this.buf.writeDoubleLE(v, this.length); this.length += 8; }
  u64(v: number) { this.room(8); this.buf.writeBigUInt64LE(BigInt(v), this.length); this.length += 8; }
  i64(v: number) { this.room(8); this.buf.writeBigInt64LE(BigInt(v), this.length); this.length += 8; }
  string(s: string) {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.room(b.length);
    b.copy(this.buf, this.length);
    this.length += b.length;
  }
  pad(alignment: number) { while (this.length % alignment) this.u8(0); }
  bytes(): Buffer { return this.buf.subarray(0, this.length); }
}

function writeScalar(out: Bytes, type: string, value: number | boolean | string): void {
  switch (type) {
    case 'bool': return out.u8(value ? 1 : 0);
    case 'string': return out.string(value as string);
    default: return (out[type as 'u32'] as (v: number) => void).call(out, value as number);
  }
}

const tensorBytes = (t: GgufTensor): Uint8Array => (t.data instanceof Float32Array ? new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) : t.data);

/**
 * Writes `file` to `path`, tensors in the order given.
 * @throws Error for an F32 tensor whose data does not match its dimensions
 */
export function writeGguf(path: string, file: GgufFile): void {
  const alignment = (file.metadata.get('general.alignment')?.value as number | undefined) ?? GGUF_DEFAULT_ALIGNMENT;
  const head = new Bytes();
  head.u32(MAGIC);
  head.u32(VERSION);
  head.u64(file.tensors.length);
  head.u64(file.metadata.size);
  for (const [key, v] of file.metadata) {
    head.string(key);
    if (v.type === 'array') {
      head.u32(GgufType.ARRAY);
      head.u32(SCALAR_CODES[v.of]!);
      head.u64(v.value.length);
      for (const x of v.value) writeScalar(head, v.of, x);
    } else {
      head.u32(SCALAR_CODES[v.type]!);
      writeScalar(head, v.type, v.value);
    }
  }
  let offset = 0;
  for (const t of file.tensors) {
    const count = t.dims.reduce((a, b) => a * b, 1);
    if (t.type === GgmlType.F32 && t.data.length !== count) throw new Error(`tensor ${t.name}: ${t.data.length} values for dims [${t.dims.join(', ')}]`);
    head.string(t.name);
    head.u32(t.dims.length);
    for (const d of t.dims) head.u64(d);
    head.u32(t.type);
    head.u64(offset);
    offset += tensorBytes(t).byteLength;
    offset = Math.ceil(offset / alignment) * alignment;
  }
  head.pad(alignment);
  const fd = openSync(path, 'w');
  try {
    writeAll(fd, head.bytes());
    let written = 0;
    for (const t of file.tensors) {
      const bytes = tensorBytes(t);
      writeAll(fd, bytes);
      written += bytes.byteLength;
      const padded = Math.ceil(written / alignment) * alignment;
      if (padded > written) writeAll(fd, new Uint8Array(padded - written));
      written = padded;
    }
  } finally {
    closeSync(fd);
  }
}

function writeAll(fd: number, bytes: Uint8Array): void {
  for (let done = 0; done < bytes.byteLength; ) done += writeSync(fd, bytes, done);
}

/**
 * Reads a GGUF file (version 2 or 3).
 * @throws Error naming what is wrong: not GGUF, an unknown version or value type, a truncated file
 */
export function readGguf(path: string): GgufFile {
  const d = readFileSync(path);
  let o = 0;
  const need = (n: number) => {
    if (o + n > d.length) throw new Error(`${path}: truncated GGUF file (needs ${o + n} bytes, has ${d.length})`);
  };
  const u32 = () => (need(4), (o += 4), d.readUInt32LE(o - 4));
  const u64 = () => (need(8), (o += 8), Number(d.readBigUInt64LE(o - 8)));
  const str = () => {
    const n = u64();
    need(n);
    o += n;
    return d.toString('utf8', o - n, o);
  };
  const scalar = (code: number): number | boolean | string => {
    switch (code) {
      case GgufType.UINT8: return (need(1), d.readUInt8(o++));
      case GgufType.INT8: return (need(1), d.readInt8(o++));
      case GgufType.UINT16: return (need(2), (o += 2), d.readUInt16LE(o - 2));
      case GgufType.INT16: return (need(2), (o += 2), d.readInt16LE(o - 2));
      case GgufType.UINT32: return u32();
      case GgufType.INT32: return (need(4), (o += 4), d.readInt32LE(o - 4));
      case GgufType.FLOAT32: return (need(4), (o += 4), d.readFloatLE(o - 4));
      case GgufType.BOOL: return (need(1), d.readUInt8(o++) !== 0);
      case GgufType.STRING: return str();
      case GgufType.UINT64: return u64();
      case GgufType.INT64: return (need(8), (o += 8), Number(d.readBigInt64LE(o - 8)));
      case GgufType.FLOAT64: return (need(8), (o += 8), d.readDoubleLE(o - 8));
      default: throw new Error(`${path}: unknown GGUF value type ${code} at byte ${o}`);
    }
  };
  const names = Object.fromEntries(Object.entries(SCALAR_CODES).map(([k, v]) => [v, k]));
  if (u32() !== MAGIC) throw new Error(`${path}: not a GGUF file`);
  const version = u32();
  if (version !== 2 && version !== 3) throw new Error(`${path}: GGUF version ${version}; 2 and 3 are read`);
  const tensorCount = u64();
  const kvCount = u64();
  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < kvCount; i++) {
    const key = str();
    const code = u32();
    if (code === GgufType.ARRAY) {
      const of = u32();
      const n = u64();
      const value = Array.from({ length: n }, () => scalar(of));
      metadata.set(key, { type: 'array', of: names[of], value } as GgufValue);
    } else {
      metadata.set(key, { type: names[code], value: scalar(code) } as GgufValue);
    }
  }
  const infos: { name: string; dims: number[]; type: number; offset: number }[] = [];
  for (let i = 0; i < tensorCount; i++) {
    const name = str();
    const nd = u32();
    const dims = Array.from({ length: nd }, u64);
    infos.push({ name, dims, type: u32(), offset: u64() });
  }
  const alignment = (metadata.get('general.alignment')?.value as number | undefined) ?? GGUF_DEFAULT_ALIGNMENT;
  const start = Math.ceil(o / alignment) * alignment;
  const tensors = infos.map((t, i) => {
    const end = i + 1 < infos.length ? infos[i + 1]!.offset : d.length - start;
    const count = t.dims.reduce((a, b) => a * b, 1);
    if (t.type === GgmlType.F32) {
      const bytes = new Uint8Array(d.subarray(start + t.offset, start + t.offset + 4 * count));
      if (bytes.length !== 4 * count) throw new Error(`${path}: tensor ${t.name} is truncated`);
      return { ...t, data: new Float32Array(bytes.buffer) };
    }
    return { ...t, data: new Uint8Array(d.subarray(start + t.offset, start + end)) };
  });
  return { metadata, tensors: tensors.map(({ name, dims, type, data }) => ({ name, dims, type, data })) };
}
