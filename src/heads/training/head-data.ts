/**
 * The acceptance head's training data on disk (written by collect.ts, read by train.ts and
 * eval.ts). A data directory holds:
 *
 *   manifest.json   {format: "specd-head-data/4", width, candidate_features, draft, target,
 *                   settings, costs, created}: what was collected, how, and with which models
 *                   (identities as in head-file.ts); `width` is the draft's hidden width;
 *                   `costs` are the draft's and the target's measured step times (threshold.ts)
 *   records.jsonl   one JSON line per prompt, in the order of the prompt list:
 *                   {index, id, prompt_tokens, temperature, response, draft, mixed, candidates, row_start, rows, finish}
 *                   `temperature`: the decoding temperature of this prompt (0: greedy);
 *                   `response` r_1..r_n: the target's answer at it (ending in EOS when it ended);
 *                   `draft` d_1..d_n: one draft token per position of the response, d_i ~ q_i;
 *                   `mixed`: a string of 0/1, 1 where the mixed sequence z holds r_i instead
 *                   of d_i; `candidates` y_1..y_n: one candidate per position of z,
 *                   y_i ~ q'_i (the draft's distribution after z_1..z_{i-1}); rows
 *                   [row_start, row_start + rows) of the two files below are this prompt's
 *                   candidates, in position order (rows = n)
 *   features.f32    float32 little-endian [rows, width + candidate_features]: the draft's
 *                   last_hidden_state at the position before y_i (the one that produced q'_i),
 *                   then y_i's candidate features at the record's temperature
 *                   (candidate-features.ts)
 *   labels.f32      float32 little-endian [rows]: a_i, the probability that verification keeps
 *                   y_i (collect.ts: min(1, p'_i(y_i) / q'_i(y_i)), or 0/1 when greedy)
 *
 * Rows are appended prompt by prompt and a record line is written after its rows, so an
 * interrupted collection resumes by cutting the two files back to the rows the records cover.
 */
import { appendFileSync, closeSync, existsSync, fstatSync, mkdirSync, openSync, readFileSync, readSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ModelIdentity } from '../runtime/head-file.js';
import { CANDIDATE_FEATURES, rowStride } from '../runtime/head-graph.js';
import { MemoryRows } from './train.js';

export const DATA_FORMAT = 'specd-head-data/4';
export const MANIFEST = 'manifest.json';
export const RECORDS = 'records.jsonl';
export const FEATURES = 'features.f32';
export const LABELS = 'labels.f32';

/** A pair's step costs as measured in decoding (step-costs.ts), for choosing the stop threshold (threshold.ts). */
export interface StepCosts {
  /** One draft step: a one-token forward pass and picking the candidate. */
  draft_step_ms: number;
  /** What a round's draft loop costs on top of its steps (its first step runs with cold caches). */
  draft_round_ms?: number;
  /** target_ms[n - 1]: a round's verification over n tokens (the pass, acceptance, rollback; n - 1 candidates). */
  target_ms: number[];
}

export interface CollectSettings {
  /** Prompts asked for (the list is alpaca_5000 and gsm8k train, shuffled and interleaved). */
  prompts: number;
  max_tokens: number;
  /** Decoding temperatures (0: greedy); prompt i is decoded at temperatures[(i + floor(i / m)) mod m] (collect.ts promptTemperature). */
  temperatures: number[];
  /** Token mixing: share of positions that keep the target's token r_i (no label there). */
  mix_ratio: number;
  seed: number;
  sources: string[];
}

export interface DataManifest {
  format: typeof DATA_FORMAT;
  /** The draft's hidden width; a feature row has width + candidate_features values. */
  width: number;
  candidate_features: typeof CANDIDATE_FEATURES;
  draft: ModelIdentity;
  target: ModelIdentity;
  settings: CollectSettings;
  costs?: StepCosts;
  created: string;
}

export interface DataRecord {
  /** Index in the prompt list. */
  index: number;
  id: string;
  prompt_tokens: number;
  /** Decoding temperature of this prompt's response, labels and candidate features (0: greedy). */
  temperature: number;
  response: number[];
  draft: number[];
  mixed: string;
  candidates: number[];
  row_start: number;
  rows: number;
  /** `stop` (EOS), `length`, or `skipped` (prompt too long for the context). */
  finish: 'stop' | 'length' | 'skipped';
}

/** A data directory opened for reading. */
export class HeadData {
  private constructor(
    readonly dir: string,
    readonly manifest: DataManifest,
    readonly records: DataRecord[],
    /** Soft labels of every row // [rows] */
    readonly labels: Float32Array,
  ) {}

  static open(dir: string): HeadData {
    const manifest = readManifest(dir);
    const records = readRecords(dir);
    const rows = records.length ? records.at(-1)!.row_start + records.at(-1)!.rows : 0;
    const labels = new Float32Array(rows);
    if (rows > 0) readFloats(join(dir, LABELS), 0, labels);
    return new HeadData(dir, manifest, records, labels);
  }

  get width(): number {
    return this.manifest.width;
  }

  get rows(): number {
    return this.labels.length;
  }

  /** Feature rows [start, start + count) // [count, width + CANDIDATE_FEATURES] */
  readFeatures(start: number, count: number, into = new Float32Array(count * rowStride(this.width))): Float32Array {
    const w = rowStride(this.width);
    readFloats(join(this.dir, FEATURES), start * w, into.subarray(0, count * w));
    return into;
  }

  /** Feature rows at the given indices, in that order // [indices.length, width + CANDIDATE_FEATURES] */
  gatherFeatures(indices: ArrayLike<number>, into = new Float32Array(indices.length * rowStride(this.width))): Float32Array {
    const fd = openSync(join(this.dir, FEATURES), 'r');
    const w = rowStride(this.width);
    const bytes = new Uint8Array(into.buffer, into.byteOffset, indices.length * w * 4);
    try {
      for (let i = 0; i < indices.length; i++) readSync(fd, bytes, i * w * 4, w * 4, indices[i]! * w * 4);
    } finally {
      closeSync(fd);
    }
    return into;
  }

  /** All rows in memory (for training; the features file must fit in memory). */
  inMemory(): MemoryRows {
    return new MemoryRows(this.width, this.readFeatures(0, this.rows), this.labels);
  }

  /** Row indices of the records a split keeps (see {@link isValidationRecord}). */
  splitRows(split: 'train' | 'val' | 'all', valFraction: number, seed: number): Int32Array {
    const out: number[] = [];
    for (const r of this.records) {
      const val = isValidationRecord(r.index, valFraction, seed);
      if (split === 'all' || (split === 'val') === val) for (let i = 0; i < r.rows; i++) out.push(r.row_start + i);
    }
    return Int32Array.from(out);
  }
}

/**
 * Whether a prompt belongs to the validation split: a seeded hash of its index, so the split
 * is by prompt (rows of one response never straddle it) and the same in train and eval.
 */
export function isValidationRecord(index: number, valFraction: number, seed: number): boolean {
  let h = (Math.imul(index + 1, 0x9e3779b1) ^ Math.imul(seed + 0x7f4a7c15, 0x85ebca6b)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x45d9f3b) >>> 0;
  h = (h ^ (h >>> 16)) >>> 0;
  return h / 4294967296 < valFraction;
}

export function readManifest(dir: string): DataManifest {
  const path = join(dir, MANIFEST);
  if (!existsSync(path)) throw new Error(`${dir} is not a head data directory (no ${MANIFEST}); run specd head collect`);
  const manifest = JSON.parse(readFileSync(path, 'utf8')) as DataManifest;
  if (manifest.format !== DATA_FORMAT) throw new Error(`${path}: format ${JSON.stringify(manifest.format)}, expected ${DATA_FORMAT} (collect the data again with this version)`);
  if (manifest.candidate_features !== CANDIDATE_FEATURES) {
    throw new Error(`${path}: ${manifest.candidate_features} candidate features per row, this version uses ${CANDIDATE_FEATURES} (collect the data again)`);
  }
  return manifest;
}

/** The complete record lines (a line cut short by an interruption is ignored). */
export function readRecords(dir: string): DataRecord[] {
  const path = join(dir, RECORDS);
  if (!existsSync(path)) return [];
  const records: DataRecord[] = [];
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (line.trim() === '') continue;
    try {
      records.push(JSON.parse(line) as DataRecord);
    } catch {
      break;
    }
  }
  return records;
}

/** Appends rows and their record to a data directory. */
export class HeadDataWriter {
  private constructor(
    readonly dir: string,
    /** Floats per feature row. */
    readonly stride: number,
    private rowCount: number,
  ) {}

  /**
   * Opens `dir` for appending: writes `manifest` when new, else checks it matches the
   * directory's (so a resumed collection continues the same one), drops rows no complete
   * record covers, and rewrites records.jsonl without a torn last line.
   * @returns the writer and the records already there
   */
  static open(dir: string, manifest: DataManifest): { writer: HeadDataWriter; records: DataRecord[] } {
    mkdirSync(dir, { recursive: true });
    const manifestPath = join(dir, MANIFEST);
    if (existsSync(manifestPath)) {
      const old = readManifest(dir);
      const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
      const diffs = (['width', 'draft', 'target'] as const).filter((k) => !same(old[k], manifest[k]));
      const settings = (Object.keys(manifest.settings) as (keyof CollectSettings)[]).filter((k) => k !== 'prompts' && !same(old.settings[k], manifest.settings[k]));
      if (diffs.length || settings.length) {
        throw new Error(`${dir} holds a collection with other ${[...diffs, ...settings.map((s) => `settings.${s}`)].join(', ')}; use another --out directory`);
      }
      if (manifest.settings.prompts !== old.settings.prompts) {
        writeFileSync(manifestPath, `${JSON.stringify({ ...old, settings: { ...old.settings, prompts: manifest.settings.prompts } }, null, 2)}\n`);
      }
    } else {
      writeFileSync(manifestPath, `${JSON.stringify(manifest, null, 2)}\n`);
    }
    const records = readRecords(dir);
    const rows = records.length ? records.at(-1)!.row_start + records.at(-1)!.rows : 0;
    const w = rowStride(manifest.width);
    for (const [file, size] of [
      [FEATURES, rows * w * 4],
      [LABELS, rows * 4],
    ] as const) {
      const path = join(dir, file);
      if (!existsSync(path)) writeFileSync(path, new Uint8Array(0));
      if (statSync(path).size < size) throw new Error(`${path} is shorter than its records say (${statSync(path).size} < ${size} bytes)`);
      truncateSync(path, size);
    }
    writeFileSync(join(dir, RECORDS), records.map((r) => `${JSON.stringify(r)}\n`).join(''));
    return { writer: new HeadDataWriter(dir, w, rows), records };
  }

  get rows(): number {
    return this.rowCount;
  }

  /** Appends one prompt's rows, then its record (whose row_start / rows are filled in here). */
  append(record: Omit<DataRecord, 'row_start' | 'rows'>, features: Float32Array, labels: Float32Array): DataRecord {
    const rows = labels.length;
    if (features.length !== rows * this.stride) throw new RangeError(`${features.length} feature values for ${rows} rows of ${this.stride}`);
    const full: DataRecord = { ...record, row_start: this.rowCount, rows };
    appendFileSync(join(this.dir, FEATURES), new Uint8Array(features.buffer, features.byteOffset, features.byteLength));
    appendFileSync(join(this.dir, LABELS), new Uint8Array(labels.buffer, labels.byteOffset, labels.byteLength));
    appendFileSync(join(this.dir, RECORDS), `${JSON.stringify(full)}\n`);
    this.rowCount += rows;
    return full;
  }
}

/** Reads float32 values starting at value `offset` of a file into `into`. */
function readFloats(path: string, offset: number, into: Float32Array): void {
  const fd = openSync(path, 'r');
  try {
    const need = into.byteLength;
    if (fstatSync(fd).size < offset * 4 + need) throw new Error(`${path} is shorter than its records say`);
    const bytes = new Uint8Array(into.buffer, into.byteOffset, need);
    let done = 0;
    while (done < need) {
      const n = readSync(fd, bytes, done, need - done, offset * 4 + done);
      if (n === 0) throw new Error(`${path}: unexpected end of file`);
      done += n;
    }
  } finally {
    closeSync(fd);
  }
}
