/**
 * Which graph a decoder session runs: the exported one as it is, or the same model rebuilt from
 * its weights (onnx/gpt2-graph.ts, onnx/llama-graph.ts) with fused operators, which needs a
 * fraction of the kernel launches per token:
 *
 * - `inplace` (the default on the CPU): fused operators and the KV cache written in place
 *   (attention over preallocated slot buffers, onnx/inplace-attention.ts and engine/kv-pool.ts): no pass copies the
 *   past, and a rollback is a length change.
 * - `fused` (the default on WebGPU, where launches dominate small and medium models: bundled
 *   target on an H200 6.3-6.5 -> 3.0-3.7 ms/token, bench/results/gpu): fused operators with
 *   MultiHeadAttention, whose `present.*` is the past with the new rows appended (a copy per
 *   pass, on the GPU there).
 * - `exported`: the file as it is (the default for CUDA sessions, whose KV cache lives in host
 *   tensors).
 *
 * GPT-2-style graphs are rebuilt with any of these (read by structure, see gpt2-weights.ts);
 * Llama-family graphs (config.json model_type llama, mistral, qwen2, qwen3; llama-weights.ts,
 * llama-graph.ts) with `inplace` only. Outputs computed from `last_hidden_state`, such as the
 * fused acceptance head's `accept_logit`, are carried over node for node.
 */
import { ModelLoadError } from '../errors.js';
import { decodedGraph, onnx, readModel, readModelFile, type ModelProto, type NodeProto, type TensorProto } from '../onnx/graph-builder.js';
import { buildGpt2Graph, GRAPH_KIND_KEY, KV_ROWS_PREFIX } from '../onnx/gpt2-graph.js';
import { NotGpt2Error, readGpt2Weights } from '../onnx/gpt2-weights.js';
import { NotRebuildableError } from '../onnx/graph-reading.js';
import { buildLlamaGraph } from '../onnx/llama-graph.js';
import { inplaceAccuracyLevel } from '../onnx/linear-emitter.js';
import { quantizedFormOf } from '../onnx/quantized-reading.js';
import { LLAMA_FAMILY, NotLlamaError, readLlamaWeights, type LlamaConfig } from '../onnx/llama-weights.js';
import type { Device } from './device.js';

export type GraphChoice = 'exported' | 'fused' | 'inplace';
export const GRAPH_CHOICES: readonly GraphChoice[] = ['exported', 'fused', 'inplace'];

/** A rebuilt graph's attention for each rebuilding choice. */
type RebuiltGraph = Exclude<GraphChoice, 'exported'>;

/** The graph a device runs when none is asked for. */
export function defaultGraph(device: Device): GraphChoice {
  if (device === 'cpu') return 'inplace';
  return device === 'webgpu' ? 'fused' : 'exported';
}

/** Largest model (bytes of weights) rebuilt in memory: the rebuilt graph must fit one protobuf. */
export const MAX_REBUILD_BYTES = 1.5 * 2 ** 30;

const HIDDEN = 'last_hidden_state';

/** What a rebuild reads from config.json (engine/model-dir.ts ModelConfig). */
export type RebuildConfig = LlamaConfig & { maxPositions?: number };

/**
 * The fused rebuild of a decoder given as a file or as bytes; throws NotRebuildableError (why
 * not) when the graph cannot be rebuilt. A graph specd built already is used as it is. Returns the
 * bytes to load (undefined for a file used as it is: load the file) and the decoded graph they
 * hold (external data left out), for the caller's own questions about its inputs and outputs.
 */
export function fusedDecoder(
  source: { path: string } | { bytes: Uint8Array },
  config: RebuildConfig,
  graph: RebuiltGraph = 'fused',
): { bytes?: Uint8Array; model: ModelProto } {
  // The graph alone first (external data stays on disk): built graphs and oversized ones go no further.
  const header = 'bytes' in source ? readModel(source.bytes) : readModelFile(source.path, { inlineExternalData: false });
  if (header.metadataProps.some((p) => p.key === GRAPH_KIND_KEY)) return { bytes: 'bytes' in source ? source.bytes : undefined, model: header };
  const size = (header.graph?.initializer ?? []).reduce((n, t) => n + initializerBytes(t), 0);
  if (size > MAX_REBUILD_BYTES) throw new NotRebuildableError(`${(size / 2 ** 30).toFixed(1)} GiB of weights is too much to rebuild in memory`);
  const rebuilt = fusedDecoderModel('bytes' in source ? header : readModelFile(source.path), config, graph);
  return { bytes: onnx.ModelProto.encode(rebuilt).finish(), model: rebuilt };
}

/** `model` rebuilt with fused operators (and the KV cache written in place for `inplace`), keeping every output (see the module comment). */
export function fusedDecoderModel(model: ModelProto, config: RebuildConfig, choice: RebuiltGraph = 'fused'): ModelProto {
  const graph = decodedGraph(model);
  const outputs = graph.output.map((o) => o.name ?? '');
  const core = (name: string) => name === 'logits' || name === HIDDEN || name.startsWith('present.');
  const extra = graph.output.filter((o) => !core(o.name ?? ''));
  const hiddenOutput = outputs.includes(HIDDEN) || extra.length > 0;
  let rebuilt: ModelProto;
  if (LLAMA_FAMILY.includes(config.modelType)) {
    if (choice !== 'inplace') throw new NotLlamaError(`--graph ${choice} is built for GPT-2 decoders only; ${config.modelType} decoders are rebuilt with --graph inplace`);
    const weights = readLlamaWeights(model, config);
    rebuilt = buildLlamaGraph(weights, { rotary: Number.isFinite(config.maxPositions ?? Infinity) ? 'fused' : 'ops', maxPositions: config.maxPositions, hiddenOutput, accuracyLevel: inplaceAccuracyLevel(quantizedFormOf(weights.blocks[0]!.q.weight)?.bits) }).toModel();
  } else {
    if (config.heads === undefined) throw new NotGpt2Error('config.json does not give the number of attention heads');
    const weights = readGpt2Weights(model, config.heads);
    if (choice === 'inplace' && (weights.hidden / weights.heads) % 8 !== 0) {
      throw new NotGpt2Error(`in-place attention (GroupQueryAttention) needs a head size that is a multiple of 8, not ${weights.hidden / weights.heads}`);
    }
    rebuilt = buildGpt2Graph(weights, { attention: choice === 'inplace' ? 'inplace' : 'fused', norms: 'fused', gelu: 'fused', hiddenOutput, ...(choice === 'inplace' ? { accuracyLevel: inplaceAccuracyLevel((weights.blocks[0]!.qkv.quantized ?? quantizedFormOf(weights.blocks[0]!.qkv.weight))?.bits) } : {}) }).toModel();
  }
  if (extra.length === 0) return rebuilt;
  carryOver(model, rebuilt, extra.map((o) => o.name ?? ''));
  const kept = new Set(outputs);
  // An output the source did not have (last_hidden_state, added to feed the carried nodes) is dropped
  // again; the new KV rows of an in-place graph replace the source's present.* and stay.
  const g = decodedGraph(rebuilt);
  g.output = [...g.output.filter((o) => kept.has(o.name ?? '') || (o.name ?? '').startsWith(KV_ROWS_PREFIX)), ...extra.map((o) => onnx.ValueInfoProto.create(o))];
  return rebuilt;
}

/** Copy into `target` the nodes and initializers that compute `names` from `last_hidden_state` in `source`. */
function carryOver(source: ModelProto, target: ModelProto, names: string[]): void {
  const src = decodedGraph(source);
  const producer = new Map<string, NodeProto>();
  for (const n of src.node) for (const o of n.output) producer.set(o, n);
  const inits = new Map<string, TensorProto>(src.initializer.map((t) => [t.name, t]));
  const graphInputs = new Set(src.input.map((i) => i.name));
  const nodes = new Set<NodeProto>();
  const usedInits = new Set<string>();
  const visit = (value: string, output: string): void => {
    if (value === '' || value === HIDDEN) return;
    if (inits.has(value)) {
      usedInits.add(value);
      return;
    }
    const node = producer.get(value);
    if (!node || graphInputs.has(value)) throw new NotRebuildableError(`output ${output} depends on ${value}, not only on ${HIDDEN}`);
    if (nodes.has(node)) return;
    nodes.add(node);
    for (const i of node.input) visit(i, output);
  };
  for (const name of names) visit(name, name);
  const g = decodedGraph(target);
  const order = src.node.filter((n) => nodes.has(n));
  g.node = [...g.node, ...order];
  g.initializer = [...g.initializer, ...[...usedInits].map((n) => inits.get(n)!)];
  const domains = new Set(target.opsetImport.map((o) => o.domain ?? ''));
  for (const o of source.opsetImport) if (!domains.has(o.domain ?? '')) target.opsetImport.push(o);
}

/** Wraps a rebuild failure for a user who asked for a rebuilt graph. */
export function fusedGraphError(file: string, err: unknown, graph: RebuiltGraph = 'fused'): ModelLoadError {
  return new ModelLoadError(`${file}: --graph ${graph} cannot rebuild this graph: ${(err as Error).message}`, file);
}

/** Bytes of an initializer's data, inline or external. */
function initializerBytes(t: { externalData?: { key?: string | null; value?: string | null }[] | null; rawData?: Uint8Array | null }): number {
  const external = t.externalData?.find((e) => e.key === 'length')?.value;
  return external !== undefined && external !== null ? Number(external) : (t.rawData?.byteLength ?? 0);
}
