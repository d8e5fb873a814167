/**
 * Fusing the acceptance head into the draft's graph.
 *
 * The head's nodes and parameters are copied into a prepared draft graph (one that outputs
 * `last_hidden_state`), reading that value, and the head's hidden-state logit becomes one more
 * graph output, `accept_logit` [batch, sequence]. Each draft step then yields it from the same
 * `session.run()` as the logits: no second session, no second dispatch; the engine adds the
 * candidate term (candidate-features.ts).
 */
import { ACCEPT_OUTPUT, HIDDEN_OUTPUT } from '../../engine/model.js';
import { ModelLoadError } from '../../errors.js';
import { DATA_TYPE, decodedGraph, onnx, type ModelProto } from '../../onnx/graph-builder.js';
import { HEAD_INPUT, HEAD_OUTPUT } from './head-graph.js';

/** Prefix of every value, node and initializer name the head brings into the draft graph. */
export const FUSED_PREFIX = 'acceptance_head/';

/**
 * Splices `head` into `draft` in place and returns `draft`.
 * @param draft a decoder graph with a `last_hidden_state` output (see prepare-draft.ts)
 * @param head an acceptance head graph, `hidden` [..., width] -> `accept_logit` [...]
 */
export function fuseHead(draft: ModelProto, head: ModelProto): ModelProto {
  const graph = decodedGraph(draft, 'draft');
  const headGraph = decodedGraph(head, 'head');
  const hiddenOut = graph.output.find((o) => o.name === HIDDEN_OUTPUT);
  if (!hiddenOut) throw new ModelLoadError(`the draft graph has no ${HIDDEN_OUTPUT} output; prepare it first`, 'draft');
  if (graph.output.some((o) => o.name === ACCEPT_OUTPUT)) throw new ModelLoadError(`the draft graph has an ${ACCEPT_OUTPUT} output already`, 'draft');

  const rename = (name: string): string => {
    if (name === '') return name;
    if (name === HEAD_INPUT) return input;
    if (name === HEAD_OUTPUT) return ACCEPT_OUTPUT;
    return `${FUSED_PREFIX}${name}`;
  };
  // The head computes in float32; a float16 draft's hidden state is cast first.
  let input: string = HIDDEN_OUTPUT;
  const hiddenType = hiddenOut.type?.tensorType?.elemType ?? DATA_TYPE.float32;
  if (hiddenType !== DATA_TYPE.float32) {
    input = `${FUSED_PREFIX}hidden_float32`;
    graph.node.push(
      onnx.NodeProto.create({
        opType: 'Cast',
        name: `${FUSED_PREFIX}cast`,
        input: [HIDDEN_OUTPUT],
        output: [input],
        attribute: [onnx.AttributeProto.create({ name: 'to', type: onnx.AttributeProto.AttributeType.INT, i: DATA_TYPE.float32 })],
      }),
    );
  }
  for (const node of headGraph.node) {
    const copy = onnx.NodeProto.decode(onnx.NodeProto.encode(node).finish());
    copy.name = `${FUSED_PREFIX}${node.name}`;
    copy.input = node.input.map(rename);
    copy.output = node.output.map(rename);
    graph.node.push(copy);
  }
  for (const t of headGraph.initializer) {
    const copy = onnx.TensorProto.decode(onnx.TensorProto.encode(t).finish());
    copy.name = rename(t.name);
    graph.initializer.push(copy);
  }
  const leading = hiddenOut.type?.tensorType?.shape?.dim?.slice(0, -1) ?? [{ dimParam: 'batch_size' }, { dimParam: 'sequence_length' }];
  graph.output.push(
    onnx.ValueInfoProto.create({
      name: ACCEPT_OUTPUT,
      type: { tensorType: { elemType: DATA_TYPE.float32, shape: { dim: leading.map((d) => onnx.TensorShapeProto.Dimension.create(d)) } } },
    }),
  );
  return draft;
}
