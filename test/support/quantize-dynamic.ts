/**
 * Test support: a decoder graph in the form ONNX Runtime's `quantize_dynamic` writes it
 * (onnxruntime/python/tools/quantization/operators/matmul.py, QOperator format): every decoder
 * MatMul with a constant weight becomes DynamicQuantizeLinear(A) -> MatMulInteger(A_q, W_q,
 * A_zero_point, W_zero_point) -> Cast(float) -> Mul(., A_scale * W_scale), with W_q int8 and one
 * scale (per tensor, zero point 0) or uint8 with a scale and zero point per column.
 */
import { decodedGraph, onnx, type ModelProto, type NodeProto } from '../../src/onnx/graph-builder.js';
import { decoderGraphView, linears } from '../../src/onnx/graph-reading.js';
import { pruneUnused } from '../../src/onnx/quantize-model.js';

export type DynamicWeights = 'int8-per-tensor' | 'uint8-per-column';

/** `model` (data inline) rewritten in place; returns how many MatMuls were quantized. */
export function quantizeDynamic(model: ModelProto, weights: DynamicWeights): number {
  const graph = decodedGraph(model);
  const view = decoderGraphView(model);
  const T = onnx.TensorProto.DataType;
  const newNodes = new Map<NodeProto, NodeProto[]>();
  let count = 0;
  for (const l of linears(view)) {
    if (l.node.opType !== 'MatMul') continue;
    const [k, n] = l.weight.dims as [number, number];
    const w = l.weight.data;
    const p = `dq${count++}`;
    let codes: Uint8Array;
    let scales: Float32Array;
    let zeros: Uint8Array;
    let type: number;
    if (weights === 'int8-per-tensor') {
      let absmax = 0;
      for (const v of w) absmax = Math.max(absmax, Math.abs(v));
      scales = Float32Array.of(absmax / 127);
      const q = Int8Array.from(w, (v) => Math.max(-127, Math.min(127, Math.round(v / scales[0]!))));
      codes = new Uint8Array(q.buffer);
      zeros = new Uint8Array(1);
      type = T.INT8;
    } else {
      scales = new Float32Array(n);
      zeros = new Uint8Array(n);
      for (let c = 0; c < n; c++) {
        let lo = 0;
        let hi = 0;
        for (let r = 0; r < k; r++) {
          lo = Math.min(lo, w[r * n + c]!);
          hi = Math.max(hi, w[r * n + c]!);
        }
        scales[c] = (hi - lo) / 255 || 1;
        zeros[c] = Math.round(-lo / scales[c]!);
      }
      codes = Uint8Array.from(w, (v, i) => Math.max(0, Math.min(255, Math.round(v / scales[i % n]!) + zeros[i % n]!)));
      type = T.UINT8;
    }
    const perColumn = weights === 'uint8-per-column';
    graph.initializer.push(
      onnx.TensorProto.create({ name: `${p}.W_q`, dims: [k, n], dataType: type, rawData: codes }),
      onnx.TensorProto.create({ name: `${p}.W_scale`, dims: perColumn ? [n] : [], dataType: T.FLOAT, rawData: new Uint8Array(scales.buffer) }),
      onnx.TensorProto.create({ name: `${p}.W_zero_point`, dims: perColumn ? [n] : [], dataType: type, rawData: zeros }),
    );
    const node = (opType: string, input: string[], output: string[], attribute: { name: string; type: number; i: number }[] = []) =>
      onnx.NodeProto.create({ opType, domain: '', name: `${p}.${opType}.${output[0]}`, input, output, attribute });
    const a = l.node.input[0]!;
    newNodes.set(l.node, [
      node('DynamicQuantizeLinear', [a], [`${p}.A_q`, `${p}.A_scale`, `${p}.A_zero_point`]),
      node('MatMulInteger', [`${p}.A_q`, `${p}.W_q`, `${p}.A_zero_point`, `${p}.W_zero_point`], [`${p}.int`]),
      node('Cast', [`${p}.int`], [`${p}.float`], [{ name: 'to', type: onnx.AttributeProto.AttributeType.INT, i: T.FLOAT }]),
      node('Mul', [`${p}.A_scale`, `${p}.W_scale`], [`${p}.scale`]),
      node('Mul', [`${p}.float`, `${p}.scale`], [l.node.output[0]!]),
    ]);
  }
  graph.node = graph.node.flatMap((n) => newNodes.get(n) ?? [n]);
  pruneUnused(model);
  return count;
}
