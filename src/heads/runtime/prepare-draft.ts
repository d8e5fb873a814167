/**
 * Preparing a draft for an acceptance head: exposing its final hidden state.
 *
 * Exported decoders output `logits` and `present.*` only. The acceptance head reads the
 * draft's last hidden state, which is the activation the lm_head multiplies: the graph's
 * `MatMul(hidden, W)` (or `Gemm`) that produces `logits`, possibly behind an Identity or
 * Cast. Preparing a draft adds that activation as an extra graph output
 * `last_hidden_state` [batch, sequence, width]. Nothing else changes: no node is added or
 * altered, so the prepared graph computes exactly the same logits, and external data stays
 * in its files untouched (the prepared directory gets copies of them).
 *
 * The engine can prepare a draft in memory at load time (a protobuf edit of a few
 * milliseconds, see `preparedDraftBytes`), so a prepared copy on disk is only needed for
 * drafts whose weights are too large to hold inline in one protobuf.
 */
import { createHash } from 'node:crypto';
import { cpSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { ModelLoadError } from '../../errors.js';
import { DecoderModel, HIDDEN_OUTPUT } from '../../engine/model.js';
import { readModelDir } from '../../engine/model-dir.js';
import {
  DATA_TYPE,
  decodedGraph,
  onnx,
  readModel,
  readModelFile,
  type ModelProto,
  type NodeProto,
} from '../../onnx/graph-builder.js';
import { sha256File, SOURCE_SHA256_KEY } from '../../onnx/model-identity.js';


/** Largest total of external data a draft may have to be prepared in memory (inlined into one protobuf). */
export const MAX_INLINE_BYTES = 1 << 30;

/** Ops that pass a tensor through unchanged in shape, which may sit between the lm_head and `logits`. */
const PASS_THROUGH = new Set(['Identity', 'Cast']);
/** Ops through which the lm_head's weight may be derived from an initializer. */
const WEIGHT_PATH = new Set(['Identity', 'Cast', 'Transpose']);

/** Where the hidden state is in a graph. */
export interface HiddenStateSite {
  /** The MatMul or Gemm node that computes the logits. */
  node: NodeProto;
  /** The value name of its activation input: the final hidden state. */
  value: string;
  /** Width of the hidden state, when the graph tells it (the lm_head weight's input size). */
  width?: number;
  /** ONNX element type of the hidden state. */
  elemType: number;
}

/** Finds the lm_head's activation input; throws ModelLoadError when the graph has no such node. */
export function findHiddenState(model: ModelProto, file = 'model'): HiddenStateSite {
  const graph = decodedGraph(model, file);
  const producer = new Map<string, NodeProto>();
  for (const node of graph.node) for (const out of node.output) producer.set(out, node);
  const initializers = new Map(graph.initializer.map((t) => [t.name, t]));

  let value = 'logits';
  let node = producer.get(value);
  const path: string[] = [];
  while (node && PASS_THROUGH.has(node.opType)) {
    path.push(node.opType);
    value = node.input[0]!;
    node = producer.get(value);
  }
  if (node?.opType === 'MatMulNBits' && node.domain === 'com.microsoft') {
    // A quantized lm_head (onnx/matmul-nbits.ts): its width is the K attribute.
    const k = node.attribute.find((a) => a.name === 'K')?.i;
    const declared = graph.valueInfo.find((v) => v.name === node!.input[0])?.type?.tensorType?.elemType;
    return { node, value: node.input[0]!, ...(k !== undefined && k !== null ? { width: Number(k) } : {}), elemType: declared ?? DATA_TYPE.float32 };
  }
  if (!node || (node.opType !== 'MatMul' && node.opType !== 'Gemm')) {
    throw new ModelLoadError(
      `${file}: cannot find the lm_head: \`logits\` is produced by ${node ? node.opType : 'no node'}${path.length ? ` behind ${path.join(', ')}` : ''}, expected MatMul, Gemm or MatMulNBits`,
      file,
    );
  }
  const gemmTransA = node.opType === 'Gemm' && node.attribute.some((a) => a.name === 'transA' && Number(a.i) === 1);
  if (gemmTransA) throw new ModelLoadError(`${file}: the lm_head Gemm transposes its activation (transA=1); not supported`, file);

  // The weight: follow Identity / Cast / Transpose back to an initializer for its shape and type.
  let weight = node.input[1]!;
  let transposed = node.opType === 'Gemm' && node.attribute.some((a) => a.name === 'transB' && Number(a.i) === 1);
  let castTo: number | undefined;
  for (let w = producer.get(weight); w && WEIGHT_PATH.has(w.opType); w = producer.get(weight)) {
    if (w.opType === 'Transpose') transposed = !transposed;
    if (w.opType === 'Cast' && castTo === undefined) castTo = Number(w.attribute.find((a) => a.name === 'to')?.i ?? DATA_TYPE.float32);
    weight = w.input[0]!;
  }
  const init = initializers.get(weight);
  let width: number | undefined;
  if (init && init.dims.length === 2) width = Number(transposed ? init.dims[1] : init.dims[0]);
  const declared = graph.valueInfo.find((v) => v.name === node!.input[0])?.type?.tensorType?.elemType;
  const elemType = declared ?? castTo ?? init?.dataType ?? DATA_TYPE.float32;
  return { node, value: node.input[0]!, width, elemType };
}

/**
 * Adds the `last_hidden_state` output to a decoder graph, in place; a graph that has it
 * already is returned unchanged.
 * @param widthHint the hidden size from config.json, used when the graph does not tell it
 */
export function addHiddenStateOutput(model: ModelProto, options: { file?: string; widthHint?: number } = {}): ModelProto {
  const graph = decodedGraph(model, options.file);
  if (graph.output.some((o) => o.name === HIDDEN_OUTPUT)) return model;
  const site = findHiddenState(model, options.file);
  const width = site.width ?? options.widthHint;
  const dims = ['batch_size', 'sequence_length', width ?? 'hidden_size'].map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d }));
  let source = site.value;
  if (graph.input.some((i) => i.name === source)) {
    // A graph input cannot also be an output under another name; route it through an Identity.
    source = `${HIDDEN_OUTPUT}/identity`;
    graph.node.push(onnx.NodeProto.create({ opType: 'Identity', name: `${HIDDEN_OUTPUT}/node`, input: [site.value], output: [HIDDEN_OUTPUT] }));
  } else {
    renameValue(model, site.value, HIDDEN_OUTPUT);
  }
  graph.output.push(onnx.ValueInfoProto.create({ name: HIDDEN_OUTPUT, type: { tensorType: { elemType: site.elemType, shape: { dim: dims } } } }));
  return model;
}

/** Renames a value everywhere it occurs (node inputs and outputs, value infos). */
function renameValue(model: ModelProto, from: string, to: string): void {
  const graph = decodedGraph(model);
  for (const node of graph.node) {
    node.input = node.input.map((n) => (n === from ? to : n));
    node.output = node.output.map((n) => (n === from ? to : n));
  }
  for (const v of graph.valueInfo) if (v.name === from) v.name = to;
}


/**
 * The identity of a draft model: its name and the sha256 of the ONNX file the draft was
 * made from (for a prepared draft, the file it was prepared from, as recorded in its
 * metadata), so that a prepared and an unprepared copy of one draft are the same draft.
 * Only the graph file is hashed, not external data.
 */
export function draftIdentity(modelDir: string, dtype?: string): { name: string; onnx_sha256: string } {
  const dir = readModelDir(modelDir, dtype);
  const bytes = readFileSync(dir.onnxPath);
  const model = readModel(bytes);
  const recorded = model.metadataProps.find((p) => p.key === SOURCE_SHA256_KEY)?.value;
  const config = JSON.parse(readFileSync(join(dir.dir, 'config.json'), 'utf8')) as { _name_or_path?: string };
  return {
    name: config._name_or_path || basename(dir.dir),
    onnx_sha256: recorded || createHash('sha256').update(bytes).digest('hex'),
  };
}

/** Total bytes of the external data files a model refers to. */
function externalDataBytes(model: ModelProto, modelPath: string): number {
  const files = new Set<string>();
  for (const t of decodedGraph(model, modelPath).initializer) {
    if (t.dataLocation !== onnx.TensorProto.DataLocation.EXTERNAL) continue;
    const location = t.externalData.find((e) => e.key === 'location')?.value;
    if (location) files.add(join(dirname(modelPath), location));
  }
  let total = 0;
  for (const f of files) total += existsSync(f) ? statSync(f).size : 0;
  return total;
}

/**
 * The draft's graph with `last_hidden_state`, in memory, ready for
 * `InferenceSession.create(bytes)`. External data is inlined: ONNX Runtime resolves external
 * data of a model loaded from bytes against the working directory, so inline weights are the
 * only reliable form. Drafts with more than {@link MAX_INLINE_BYTES} of external data must
 * be prepared on disk instead (`specd models prepare-draft`).
 */
export function preparedDraftModel(onnxPath: string, widthHint?: number): ModelProto {
  const header = readModel(readFileSync(onnxPath));
  const external = externalDataBytes(header, onnxPath);
  if (external > MAX_INLINE_BYTES) {
    throw new ModelLoadError(
      `${onnxPath}: ${(external / 2 ** 30).toFixed(1)} GiB of external data is too much to prepare in memory; run \`specd models prepare-draft ${dirname(dirname(onnxPath))} --out DIR\` and use --draft DIR`,
      onnxPath,
    );
  }
  const model = external > 0 ? readModelFile(onnxPath) : header;
  return addHiddenStateOutput(model, { file: onnxPath, widthHint });
}

/** `preparedDraftModel`, encoded. */
export function preparedDraftBytes(onnxPath: string, widthHint?: number): Uint8Array {
  return onnx.ModelProto.encode(preparedDraftModel(onnxPath, widthHint)).finish();
}

export interface PrepareDraftResult {
  /** The prepared graph file. */
  onnxPath: string;
  /** Width of `last_hidden_state` ('hidden_size' when symbolic). */
  width: number | string;
  /** Name of the value exposed (renamed to `last_hidden_state`). */
  source: string;
  sourceSha256: string;
}

/**
 * Writes a prepared copy of a model directory: every file is copied as is (config,
 * tokenizer, external data), and the ONNX graph gets the `last_hidden_state` output.
 * `out` must not exist or be empty.
 */
export function prepareDraftDir(src: string, out: string, options: { dtype?: string } = {}): PrepareDraftResult {
  const dir = readModelDir(src, options.dtype);
  const target = resolve(out);
  if (target === dir.dir) throw new Error('--out must differ from the draft directory (the original stays as it is)');
  if (existsSync(target) && readdirSync(target).length > 0) throw new Error(`${target} exists and is not empty`);
  const sourceSha256 = sha256File(dir.onnxPath);
  const model = readModel(readFileSync(dir.onnxPath));
  const site = findHiddenState(model, dir.onnxPath);
  addHiddenStateOutput(model, { file: dir.onnxPath, widthHint: dir.config.hidden });
  const meta = model.metadataProps.filter((p) => p.key !== SOURCE_SHA256_KEY);
  meta.push(onnx.StringStringEntryProto.create({ key: SOURCE_SHA256_KEY, value: sourceSha256 }));
  model.metadataProps = meta;

  cpSync(dir.dir, target, { recursive: true });
  const onnxPath = join(target, 'onnx', basename(dir.onnxPath));
  writeFileSync(onnxPath, onnx.ModelProto.encode(model).finish());
  const width = site.width ?? dir.config.hidden ?? 'hidden_size';
  return { onnxPath, width, source: site.value, sourceSha256 };
}

/**
 * Runs the original and the prepared draft on the same tokens (a prefill, then one token at a
 * time with the KV cache) and returns the largest absolute difference of their logits, which
 * must be 0: the prepared graph computes the same nodes.
 */
export async function compareDraftLogits(originalDir: string, preparedDir: string, options: { dtype?: string; tokens?: number } = {}): Promise<{ maxAbsDiff: number; width: number }> {
  const a = await DecoderModel.load(originalDir, { dtype: options.dtype, threads: 1 });
  const b = await DecoderModel.load(preparedDir, { dtype: options.dtype, threads: 1 });
  try {
    const vocab = a.info.vocabSize;
    const count = Math.min(options.tokens ?? 32, a.info.maxPositions);
    const tokens = Array.from({ length: count }, (_, i) => (i * 7919 + 13) % vocab);
    const prefill = Math.ceil(count / 2);
    const ca = a.newCache();
    const cb = b.newCache();
    let maxAbsDiff = 0;
    let width = 0;
    const steps = [tokens.slice(0, prefill), ...tokens.slice(prefill).map((t) => [t])];
    for (const step of steps) {
      const la = await a.forward(ca, step);
      const ob = await b.forwardWithHidden(cb, step);
      if (!ob.hidden) throw new Error(`${preparedDir}: no ${HIDDEN_OUTPUT} output`);
      width = ob.hidden.length / step.length;
      for (let i = 0; i < la.length; i++) maxAbsDiff = Math.max(maxAbsDiff, Math.abs(la[i]! - ob.logits[i]!));
    }
    return { maxAbsDiff, width };
  } finally {
    await a.release();
    await b.release();
  }
}
