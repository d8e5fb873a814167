/**
 * Llama-family decoder graphs (Llama, Mistral, Qwen2, Qwen3) rebuilt from their weights
 * (llama-weights.ts) with the KV cache written in place: the interface and attention of
 * inplace-attention.ts, as gpt2-graph.ts's `inplace` graphs have them, so that the engine runs
 * both families the same way (engine/kv-pool.ts, DecoderModel.forwardBatch).
 *
 * A block, on the packed rows [1, T, hidden]:
 * - RMSNorm (SimplifiedLayerNormalization; after the first, com.microsoft
 *   SkipSimplifiedLayerNormalization, which adds the residual and normalizes in one operator);
 * - q, k and v in one MatMul (with Qwen2's biases in one Add), the softmax scale 1 / sqrt(head_dim)
 *   folded into the query columns (rotary embeddings are linear, so scaling before them is the same);
 * - Qwen3: each query and key head RMSNorm-ed (SimplifiedLayerNormalization over head_dim), the
 *   softmax scale folded into the query norm's gain instead (a norm would undo it on the columns);
 * - rotary embeddings at `position_ids` on queries and keys, transformers' `rotate_half`
 *   convention (x cos + rotate_half(x) sin, inv_freq from rope_theta and a `llama3` rope_scaling,
 *   rope.ts): `rotary`
 *   `ops` = Cos/Sin of position x inv_freq and the rotation as plain operators; `fused` =
 *   com.microsoft RotaryEmbedding with cos/sin tables of the model's context;
 * - keys and values rounded to float16 where the exported graph caches them in float16
 *   (`kvFloat16`), so that the rebuilt graph attends to what the exported one would;
 * - the in-place attention (grouped-query where kv_heads < heads), `kv_rows.{i}` = the rotated
 *   queries, keys and values [1, T, (heads + 2 kv_heads) head_dim];
 * - o_proj, then the SwiGLU MLP: gate and up in one MatMul, down(silu(gate) up).
 * Then the final RMSNorm and the lm_head over the rows from `logits_from` on.
 */
import { DATA_TYPE, GraphBuilder } from './graph-builder.js';
import { GRAPH_KIND_KEY, LOGITS_FROM_INPUT } from './gpt2-graph.js';
import { inplaceAttention, inplaceInputs, inplaceMasks, kvRowsOutput, POSITION_IDS_INPUT, ROW_INDEPENDENT_KIND } from './inplace-attention.js';
import type { LlamaWeights } from './llama-weights.js';
import { ropeInverseFrequencies } from './rope.js';
import { computesInInt8, joinColumns, type LinearQuantization, linearEmitter, QUANT_ACCURACY_LEVEL } from './linear-emitter.js';
import type { AccuracyLevel } from './matmul-nbits.js';

const MS = 'com.microsoft';

export type LlamaRotary = 'ops' | 'fused';

export interface LlamaGraphOptions {
  /** How rotary embeddings are computed (module comment); default `fused`. */
  rotary?: LlamaRotary;
  /** Also output `last_hidden_state` (the lm_head's input), as a draft prepared for an acceptance head does. */
  hiddenOutput?: boolean;
  /** Positions the `fused` rotary tables cover (the model's context). */
  maxPositions?: number;
  /** Linear layers and the lm_head as MatMulNBits (linear-emitter.ts); default: as the weights come (float32, or a quantized export's own bits). */
  quantization?: LinearQuantization | 'fp32';
  /** accuracy_level of MatMulNBits whose settings come from the weights (default QUANT_ACCURACY_LEVEL); with 4 the attention is the row-independent one (inplace-attention.ts). */
  accuracyLevel?: AccuracyLevel;
}

/**
 * The in-place Llama-family graph of `w` (module comment).
 * @throws RangeError for `fused` rotary without a finite `maxPositions`
 */
export function buildLlamaGraph(w: LlamaWeights, options: LlamaGraphOptions = {}): GraphBuilder {
  const rotary = options.rotary ?? 'fused';
  const maxPositions = options.maxPositions ?? Infinity;
  if (rotary === 'fused' && !Number.isFinite(maxPositions)) throw new RangeError('fused rotary embeddings need the model context (max_position_embeddings) for their tables');
  const g = new GraphBuilder({ opset: 17, irVersion: 8, name: 'llama' });
  const E = w.hidden;
  const D = w.headDim;
  const layers = w.blocks.length;
  const qWidth = w.heads * D;
  const kvWidth = w.kvHeads * D;
  const shape = { heads: w.heads, kvHeads: w.kvHeads, headDim: D };
  const ids = g.input('input_ids', 'int64', ['batch_size', 'sequence_length']);
  inplaceInputs(g, layers, shape);
  const accuracyLevel = options.accuracyLevel ?? QUANT_ACCURACY_LEVEL;
  const rowIndependent = computesInInt8(w.blocks[0]!.q, options.quantization, accuracyLevel);
  g.setMetadata(GRAPH_KIND_KEY, `llama ${rowIndependent ? ROW_INDEPENDENT_KIND : 'attention=inplace'} rotary=${rotary}${w.kvFloat16 ? ' kv=float16-rounded' : ''}`);
  const param = (name: string, data: Float32Array, dims: number[]) => g.initializer(name, data, dims);
  const linear = linearEmitter(g, options.quantization, accuracyLevel);
  const epsilon = { type: 'float' as const, value: w.epsilon };

  /** residual + input, normalized: [normalized, new residual]. */
  const addNorm = (input: string, residual: string, gain: string): [string, string] => {
    const [normed, , , sum] = g.opN('SkipSimplifiedLayerNormalization', [input, residual, gain], 4, {
      domain: MS,
      attrs: { epsilon },
      outputs: [g.fresh('normed'), '', '', g.fresh('residual')],
    });
    return [normed!, sum!];
  };

  const invFreq = ropeInverseFrequencies(w.ropeTheta, D, w.ropeScaling);
  let rotate: (x: string, heads: number) => string;
  if (rotary === 'fused') {
    // cos/sin [context, D / 2] of float32(position x inv_freq), as the plain computation rounds it.
    const half = D / 2;
    const cos = new Float32Array(maxPositions * half);
    const sin = new Float32Array(maxPositions * half);
    for (let p = 0; p < maxPositions; p++) {
      for (let j = 0; j < half; j++) {
        const angle = Math.fround(p * invFreq[j]!);
        cos[p * half + j] = Math.cos(angle);
        sin[p * half + j] = Math.sin(angle);
      }
    }
    const cosCache = param('rope.cos', cos, [maxPositions, half]);
    const sinCache = param('rope.sin', sin, [maxPositions, half]);
    rotate = (x, heads) => g.op('RotaryEmbedding', [x, POSITION_IDS_INPUT, cosCache, sinCache], { domain: MS, attrs: { interleaved: 0, num_heads: heads } });
  } else {
    const pos = g.op('Unsqueeze', [g.op('Cast', [POSITION_IDS_INPUT], { attrs: { to: DATA_TYPE.float32 } }), g.constant('int64', [2])]); // [1, T, 1]
    const freqs = g.op('Mul', [pos, g.constant('float32', [...invFreq])]); // [1, T, D / 2]
    const angles = g.op('Unsqueeze', [g.op('Concat', [freqs, freqs], { attrs: { axis: -1 } }), g.constant('int64', [2])]); // [1, T, 1, D]
    const cos = g.op('Cos', [angles]);
    const sin = g.op('Sin', [angles]);
    rotate = (x, heads) => {
      const split = g.op('Reshape', [x, g.constant('int64', [0, 0, heads, D])]); // [1, T, heads, D]
      const [x1, x2] = g.opN('Split', [split, g.constant('int64', [D / 2, D / 2])], 2, { attrs: { axis: -1 } });
      const rotated = g.op('Concat', [g.op('Neg', [x2!]), x1!], { attrs: { axis: -1 } });
      const out = g.op('Add', [g.op('Mul', [split, cos]), g.op('Mul', [rotated, sin])]);
      return g.op('Reshape', [out, g.constant('int64', [0, 0, heads * D])]);
    };
  }
  const toKvType = (x: string) => (w.kvFloat16 ? g.op('Cast', [g.op('Cast', [x], { attrs: { to: DATA_TYPE.float16 } })], { attrs: { to: DATA_TYPE.float32 } }) : x);

  const masks = inplaceMasks(g, w.heads / w.kvHeads, rowIndependent ? shape : undefined);
  let x = g.op('Gather', [param('embed_tokens', w.embed, [w.vocab, E]), ids]);
  let a = g.op('SimplifiedLayerNormalization', [x, param('l0.input_norm', w.blocks[0]!.inputNorm, [E])], { attrs: { axis: -1, epsilon } });
  /** RMSNorm of each head of x [1, T, heads D] with gain [D] (Qwen3's q/k norms). */
  const headNorm = (x: string, heads: number, gain: string) => {
    const split = g.op('Reshape', [x, g.constant('int64', [0, 0, heads, D])]);
    const normed = g.op('SimplifiedLayerNormalization', [split, gain], { attrs: { axis: -1, epsilon } });
    return g.op('Reshape', [normed, g.constant('int64', [0, 0, heads * D])]);
  };
  for (let i = 0; i < layers; i++) {
    const b = w.blocks[i]!;
    const width = qWidth + 2 * kvWidth;
    const softmaxScale = 1 / Math.sqrt(D);
    const qkNorms = b.qNorm !== undefined && b.kNorm !== undefined;
    const scale = qkNorms ? 1 : softmaxScale;
    // [E, q | k | v], query columns scaled.
    const qkvWeight = joinColumns([{ weight: b.q.weight, n: qWidth }, { weight: b.k.weight, n: kvWidth }, { weight: b.v.weight, n: kvWidth }], E);
    let qkv = linear(a, `l${i}.qkv.weight`, qkvWeight, { columns: qWidth, factor: scale });
    if (b.q.bias || b.k.bias || b.v.bias) {
      const bias = new Float32Array(width);
      if (b.q.bias) for (let c = 0; c < qWidth; c++) bias[c] = b.q.bias[c]! * scale;
      if (b.k.bias) bias.set(b.k.bias, qWidth);
      if (b.v.bias) bias.set(b.v.bias, qWidth + kvWidth);
      qkv = g.op('Add', [qkv, param(`l${i}.qkv.bias`, bias, [width])]);
    }
    let [q, k, v] = g.opN('Split', [qkv, g.constant('int64', [qWidth, kvWidth, kvWidth])], 3, { attrs: { axis: -1 } });
    if (qkNorms) {
      q = headNorm(q!, w.heads, param(`l${i}.q_norm`, b.qNorm!.map((x) => x * softmaxScale), [D]));
      k = headNorm(k!, w.kvHeads, param(`l${i}.k_norm`, b.kNorm!, [D]));
    }
    const rows = g.op('Concat', [rotate(q!, w.heads), toKvType(rotate(k!, w.kvHeads)), toKvType(v!)], { attrs: { axis: -1 } });
    g.output(rows, kvRowsOutput(i), 'float32', ['batch_size', 'sequence_length', width]);
    const context = inplaceAttention(g, i, rows, shape, masks);
    [a, x] = addNorm(linear(context, `l${i}.o.weight`, { weight: b.o, k: qWidth, n: E }), x, param(`l${i}.post_norm`, b.postNorm, [E]));
    const I = w.intermediate;
    const gateUp = joinColumns([{ weight: b.gate, n: I }, { weight: b.up, n: I }], E);
    const [gate, up] = g.opN('Split', [linear(a, `l${i}.gate_up.weight`, gateUp), g.constant('int64', [I, I])], 2, { attrs: { axis: -1 } });
    const act = g.op('Mul', [g.op('Mul', [gate!, g.op('Sigmoid', [gate!])]), up!]);
    const down = linear(act, `l${i}.down.weight`, { weight: b.down, k: I, n: E });
    const [nextGain, nextName] = i + 1 < layers ? [w.blocks[i + 1]!.inputNorm, `l${i + 1}.input_norm`] : [w.norm, 'norm'];
    [a, x] = addNorm(down, x, param(nextName, nextGain, [E]));
  }
  // Logits only from position logits_from on (as gpt2-graph.ts).
  const from = g.input(LOGITS_FROM_INPUT, 'int64', [1]);
  const kept = g.op('Slice', [a, from, g.constant('int64', [Number.MAX_SAFE_INTEGER]), g.constant('int64', [1])]);
  g.output(linear(kept, 'lm_head.weight', { weight: w.lmHead, k: E, n: w.vocab }), 'logits', 'float32', ['batch_size', 'logits_length', w.vocab]);
  if (options.hiddenOutput) g.output(a, 'last_hidden_state', 'float32', ['batch_size', 'sequence_length', E]);
  return g;
}
