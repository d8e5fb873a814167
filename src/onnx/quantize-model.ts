/**
 * An exported decoder graph with its linear layers quantized: every decoder `MatMul` with a
 * constant 2-D weight (the projections, the MLP, the lm_head, tied or not) becomes a
 * `MatMulNBits` (matmul-nbits.ts) in place, the rest of the graph untouched. The result is a
 * graph of the same interface, in the form onnx-community's `model_q4.onnx` files have, so that
 * both the exported path and the in-place rebuild (quantized-reading.ts) read it.
 *
 * The quantized file records the sha256 of the model it came from (`QUANTIZED_FROM_KEY`), so a
 * file left beside a model that changed since is recognised as stale.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { decodedGraph, onnx, type ModelProto, type NodeProto, type TensorProto } from './graph-builder.js';
import { decoderGraphView, linears } from './graph-reading.js';
import type { LinearQuantization } from './linear-emitter.js';
import { blocksOf, quantizeLinear } from './matmul-nbits.js';

/** Metadata key of a quantized graph: the sha256 of the source model (modelSha256). */
export const QUANTIZED_FROM_KEY = 'specd.quantized_from_sha256';
/** Metadata key of a quantized graph: how its weights were quantized, e.g. `q4 block 32 symmetric`. */
export const QUANTIZATION_KEY = 'specd.quantization';

/**
 * sha256 (hex) of a model file and the external data files its initializers name, in the order
 * they are first named: the identity a quantized copy is keyed by.
 */
export function modelSha256(onnxPath: string): string {
  const hash = createHash('sha256');
  const bytes = readFileSync(onnxPath);
  hash.update(bytes);
  const files: string[] = [];
  for (const t of decodedGraph(onnx.ModelProto.decode(bytes), onnxPath).initializer) {
    if (t.dataLocation !== onnx.TensorProto.DataLocation.EXTERNAL) continue;
    const location = t.externalData.find((e) => e.key === 'location')?.value;
    if (location && !files.includes(location)) files.push(location);
  }
  for (const f of files) hash.update(readFileSync(join(dirname(onnxPath), f)));
  return hash.digest('hex');
}

/**
 * `model` (external data inlined, as readModelFile gives it) with its decoder's float32 linear
 * layers as MatMulNBits; changed in place and returned. `metadata` entries are added to the model's.
 * @returns the model and how many linear layers were quantized
 */
export function quantizeDecoderModel(model: ModelProto, q: LinearQuantization, metadata: Record<string, string> = {}): { model: ModelProto; quantized: number } {
  const graph = decodedGraph(model);
  const view = decoderGraphView(model);
  let count = 0;
  const added: TensorProto[] = [];
  for (const l of linears(view)) {
    if (l.quantized || l.node.opType !== 'MatMul') continue;
    const [k, n] = l.weight.dims as [number, number];
    const w = quantizeLinear(l.weight.data, k, n, q);
    const base = `${l.node.name || l.node.output[0]}.nbits${count}`;
    const blocks = blocksOf(k, q.blockSize);
    added.push(
      onnx.TensorProto.create({ name: `${base}.qweight`, dims: [n, blocks, (q.blockSize * q.bits) / 8], dataType: onnx.TensorProto.DataType.UINT8, rawData: w.packed }),
      onnx.TensorProto.create({ name: `${base}.scales`, dims: [n * blocks], dataType: onnx.TensorProto.DataType.FLOAT, rawData: new Uint8Array(w.scales.buffer) }),
    );
    if (w.zeroPoints) added.push(onnx.TensorProto.create({ name: `${base}.zero_points`, dims: [w.zeroPoints.length], dataType: onnx.TensorProto.DataType.UINT8, rawData: w.zeroPoints }));
    const node = l.node as NodeProto;
    node.opType = 'MatMulNBits';
    node.domain = 'com.microsoft';
    node.input = [node.input[0]!, `${base}.qweight`, `${base}.scales`, ...(w.zeroPoints ? [`${base}.zero_points`] : [])];
    node.attribute = [
      ['K', k],
      ['N', n],
      ['bits', q.bits],
      ['block_size', q.blockSize],
      ['accuracy_level', q.accuracyLevel],
    ].map(([name, value]) => onnx.AttributeProto.create({ name: name as string, type: onnx.AttributeProto.AttributeType.INT, i: value as number })) as typeof node.attribute;
    count++;
  }
  graph.initializer.push(...(added as typeof graph.initializer));
  pruneUnused(model);
  if (!model.opsetImport.some((o) => o.domain === 'com.microsoft')) model.opsetImport.push(onnx.OperatorSetIdProto.create({ domain: 'com.microsoft', version: 1 }));
  const props = model.metadataProps.filter((p) => !(p.key! in metadata));
  model.metadataProps = [...props, ...Object.entries(metadata).map(([key, value]) => onnx.StringStringEntryProto.create({ key, value }))];
  return { model, quantized: count };
}

/** Drops nodes whose outputs nothing reads (a tied lm_head's Transpose) and initializers no node reads. */
export function pruneUnused(model: ModelProto): void {
  const graph = decodedGraph(model);
  const outputs = new Set(graph.output.map((o) => o.name));
  for (;;) {
    const read = new Set(graph.node.flatMap((n) => n.input));
    const kept = graph.node.filter((n) => n.output.some((o) => o !== '' && (read.has(o) || outputs.has(o))));
    if (kept.length === graph.node.length) break;
    graph.node = kept;
  }
  const read = new Set(graph.node.flatMap((n) => n.input));
  graph.initializer = graph.initializer.filter((t) => read.has(t.name) || outputs.has(t.name));
}
