/**
 * Llama-family decoders (Llama, Qwen2, Qwen3) written as Hugging Face optimum exports them, from
 * their weights (llama-weights.ts `LlamaWeights`): the graph specd loads as `exported` and reads
 * back by structure for its in-place rebuild (llama-weights.ts, llama-graph.ts).
 *
 * Interface (B = batch_size, S = sequence_length, P = past_sequence_length, T = P + S):
 * inputs `input_ids`, `attention_mask` [B, T], `position_ids` [B, S] (int64) and per layer
 * `past_key_values.{i}.key|value` [B, kv_heads, P, head_dim] (float32); outputs `logits`
 * [B, S, vocab] and `present.{i}.key|value` [B, kv_heads, T, head_dim], the past with the new
 * keys and values appended.
 *
 * The computation is transformers' (`modeling_llama.py`, `modeling_qwen3.py`), operator by
 * operator as torch.onnx writes it: RMSNorm x rsqrt(mean(x^2) + eps) gain written out (Pow,
 * ReduceMean, Add, Sqrt, Reciprocal, Mul, Mul); q, k, v projections (with biases where given),
 * Qwen3's per-head q/k norms, rotary embeddings (`rotate_half`, frequencies from rope.ts), keys and
 * values appended to the past, grouped-query attention (`repeat_kv`) with a causal and padding
 * mask, o_proj; the SwiGLU MLP down(silu(gate) up); the final norm and the lm_head, which with
 * tied embeddings is `MatMul(h, Transpose(embed_tokens))`.
 */
import { DATA_TYPE, GraphBuilder } from '../onnx/graph-builder.js';
import type { LlamaWeights } from '../onnx/llama-weights.js';
import { ropeInverseFrequencies } from '../onnx/rope.js';

/** Additive attention bias of a masked key (finite, so a fully masked row stays NaN-free). */
const MASKED = -1e9;

export interface LlamaExportOptions {
  /** lm_head = the token embedding transposed (config `tie_word_embeddings`); `w.lmHead` is not stored. */
  tiedEmbeddings?: boolean;
}

/** The optimum-layout graph of `w` (module comment). */
export function buildLlamaExportGraph(w: LlamaWeights, options: LlamaExportOptions = {}): GraphBuilder {
  const g = new GraphBuilder({ opset: 17, irVersion: 8, name: 'main_graph' });
  const E = w.hidden;
  const D = w.headDim;
  const layers = w.blocks.length;
  const kvShape = ['batch_size', w.kvHeads, 'past_sequence_length', D];
  const ids = g.input('input_ids', 'int64', ['batch_size', 'sequence_length']);
  const mask = g.input('attention_mask', 'int64', ['batch_size', 'total_sequence_length']);
  const positions = g.input('position_ids', 'int64', ['batch_size', 'sequence_length']);
  for (let i = 0; i < layers; i++) {
    g.input(`past_key_values.${i}.key`, 'float32', kvShape);
    g.input(`past_key_values.${i}.value`, 'float32', kvShape);
  }
  const eps = g.constant('float32', [w.epsilon], []);
  const rmsNorm = (x: string, gain: string) => {
    const meanSquare = g.op('ReduceMean', [g.op('Pow', [x, g.constant('float32', [2], [])])], { attrs: { axes: [-1], keepdims: 1 } });
    const inverse = g.op('Reciprocal', [g.op('Sqrt', [g.op('Add', [meanSquare, eps])])]);
    return g.op('Mul', [gain, g.op('Mul', [x, inverse])]);
  };
  /** [B, S, n D] -> [B, S, n, D]. */
  const split = (x: string, n: number) => g.op('Reshape', [x, g.constant('int64', [0, 0, n, D])]);
  /** [B, S, n, D] -> [B, n, S, D]. */
  const headsFirst = (x: string) => g.op('Transpose', [x], { attrs: { perm: [0, 2, 1, 3] } });
  const linear = (x: string, name: string, weight: Float32Array, dims: [number, number], bias?: Float32Array | null) => {
    const y = g.op('MatMul', [x, g.initializer(`${name}.weight`, weight, dims)]);
    return bias ? g.op('Add', [y, g.initializer(`${name}.bias`, bias, [dims[1]])]) : y;
  };

  // Rotary tables cos/sin [B, 1, S, D] of position x inv_freq.
  const invFreq = ropeInverseFrequencies(w.ropeTheta, D, w.ropeScaling);
  const pos = g.op('Unsqueeze', [g.op('Cast', [positions], { attrs: { to: DATA_TYPE.float32 } }), g.constant('int64', [2])]);
  const freqs = g.op('Mul', [pos, g.constant('float32', [...invFreq])]);
  const angles = g.op('Unsqueeze', [g.op('Concat', [freqs, freqs], { attrs: { axis: -1 } }), g.constant('int64', [1])]);
  const cos = g.op('Cos', [angles]);
  const sin = g.op('Sin', [angles]);
  const rotate = (x: string) => {
    const [x1, x2] = g.opN('Split', [x, g.constant('int64', [D / 2, D / 2])], 2, { attrs: { axis: -1 } });
    const rotated = g.op('Concat', [g.op('Neg', [x2!]), x1!], { attrs: { axis: -1 } });
    return g.op('Add', [g.op('Mul', [x, cos]), g.op('Mul', [rotated, sin])]);
  };

  // Attention bias [B, 1, S, T]: 0 where query j (slot P + j) may see key t (t <= P + j, mask 1).
  const scalar = (v: number) => g.constant('int64', [v], []);
  const dim = (x: string, axis: number) => g.op('Gather', [g.op('Shape', [x]), scalar(axis)]);
  const past = dim('past_key_values.0.key', 2);
  const total = g.op('Add', [past, dim(ids, 1)]);
  const queryPos = g.op('Range', [past, total, scalar(1)]);
  const keyPos = g.op('Range', [scalar(0), total, scalar(1)]);
  const causal = g.op('LessOrEqual', [g.op('Unsqueeze', [keyPos, g.constant('int64', [0])]), g.op('Unsqueeze', [queryPos, g.constant('int64', [1])])]);
  const keep = g.op('Cast', [g.op('Unsqueeze', [mask, g.constant('int64', [1, 2])])], { attrs: { to: DATA_TYPE.bool } });
  const bias = g.op('Where', [g.op('And', [causal, keep]), g.constant('float32', [0], []), g.constant('float32', [MASKED], [])]);
  const groups = w.heads / w.kvHeads;
  const repeatKv = (x: string) => {
    if (groups === 1) return x;
    const expanded = g.op('Expand', [g.op('Unsqueeze', [x, g.constant('int64', [2])]), g.constant('int64', [1, 1, groups, 1, 1])]);
    return g.op('Reshape', [expanded, g.constant('int64', [0, w.heads, -1, D])]);
  };

  const embed = g.initializer('model.embed_tokens.weight', w.embed, [w.vocab, E]);
  let h = g.op('Gather', [embed, ids]);
  for (let i = 0; i < layers; i++) {
    const b = w.blocks[i]!;
    const p = `model.layers.${i}`;
    const a = rmsNorm(h, g.initializer(`${p}.input_layernorm.weight`, b.inputNorm, [E]));
    let q = split(linear(a, `${p}.self_attn.q_proj`, b.q.weight, [E, w.heads * D], b.q.bias), w.heads);
    let k = split(linear(a, `${p}.self_attn.k_proj`, b.k.weight, [E, w.kvHeads * D], b.k.bias), w.kvHeads);
    const v = headsFirst(split(linear(a, `${p}.self_attn.v_proj`, b.v.weight, [E, w.kvHeads * D], b.v.bias), w.kvHeads));
    if (b.qNorm) q = rmsNorm(q, g.initializer(`${p}.self_attn.q_norm.weight`, b.qNorm, [D]));
    if (b.kNorm) k = rmsNorm(k, g.initializer(`${p}.self_attn.k_norm.weight`, b.kNorm, [D]));
    const qr = rotate(headsFirst(q));
    const keys = g.op('Concat', [`past_key_values.${i}.key`, rotate(headsFirst(k))], { attrs: { axis: 2 }, outputs: [`present.${i}.key`] });
    const values = g.op('Concat', [`past_key_values.${i}.value`, v], { attrs: { axis: 2 }, outputs: [`present.${i}.value`] });
    const scores = g.op('MatMul', [qr, g.op('Transpose', [repeatKv(keys)], { attrs: { perm: [0, 1, 3, 2] } })]);
    const scaled = g.op('Add', [g.op('Mul', [scores, g.constant('float32', [1 / Math.sqrt(D)], [])]), bias]);
    const context = g.op('MatMul', [g.op('Softmax', [scaled], { attrs: { axis: -1 } }), repeatKv(values)]);
    const merged = g.op('Reshape', [headsFirst(context), g.constant('int64', [0, 0, w.heads * D])]);
    h = g.op('Add', [h, linear(merged, `${p}.self_attn.o_proj`, b.o, [w.heads * D, E])]);
    const m = rmsNorm(h, g.initializer(`${p}.post_attention_layernorm.weight`, b.postNorm, [E]));
    const gate = linear(m, `${p}.mlp.gate_proj`, b.gate, [E, w.intermediate]);
    const up = linear(m, `${p}.mlp.up_proj`, b.up, [E, w.intermediate]);
    const act = g.op('Mul', [g.op('Mul', [gate, g.op('Sigmoid', [gate])]), up]);
    h = g.op('Add', [h, linear(act, `${p}.mlp.down_proj`, b.down, [w.intermediate, E])]);
  }
  const final = rmsNorm(h, g.initializer('model.norm.weight', w.norm, [E]));
  const head = options.tiedEmbeddings ? g.op('Transpose', [embed], { attrs: { perm: [1, 0] } }) : g.initializer('lm_head.weight', w.lmHead, [E, w.vocab]);
  g.output(g.op('MatMul', [final, head]), 'logits', 'float32', ['batch_size', 'sequence_length', w.vocab]);
  const presentShape = ['batch_size', w.kvHeads, 'total_sequence_length', D];
  for (let i = 0; i < layers; i++) {
    g.output(`present.${i}.key`, `present.${i}.key`, 'float32', presentShape);
    g.output(`present.${i}.value`, `present.${i}.value`, 'float32', presentShape);
  }
  return g;
}
