/**
 * Random Llama-family weights (Llama, Qwen2, Qwen3) of any shape, and a draft that agrees with
 * its target, for synthetic benchmark pairs with real models' shapes (bench/llama-pair.ts).
 *
 * As with gpt2-random.ts: the draft is the target's first `draftLayers` blocks with the same
 * embeddings, final norm and lm_head; the target's later blocks write to the residual stream
 * through o_proj and down_proj scaled by `deepScale`, so the target's next-token distribution is
 * a perturbation of the draft's and speculation has something to accept. Values are uniform with
 * the given standard deviations from gpt2-random.ts's seeded generator: the same options give the
 * same models.
 *
 * Scales: a linear layer's weights have std 1 / sqrt(fan_in) (unit-variance outputs of
 * normalized inputs); logits come out with a spread of about 3 (peaked, as a trained model's).
 * With tied embeddings (lm_head = embed_tokens^T) the final norm's gain is drawn around 0, not 1:
 * otherwise the current token's own embedding dominates its logits and greedy text repeats one
 * token (the GPT-2 fixtures of decoder-fixture.ts do the same).
 */
import { uniformArrays } from './gpt2-random.js';
import { PRIOR_CHANNEL, priorChannel, type FrequencyPrior } from './frequency-prior.js';
import type { LlamaBlock, LlamaWeights } from '../onnx/llama-weights.js';
import type { Llama3RopeScaling } from '../onnx/rope.js';

/** The architecture of a Llama-family model, as its config.json gives it. */
export interface LlamaShape {
  /** config.json `model_type`: llama (Llama 3.x), qwen2 (q/k/v biases), qwen3 (q/k norms). */
  modelType: 'llama' | 'qwen2' | 'qwen3';
  vocab: number;
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  /** rms_norm_eps */
  epsilon: number;
  ropeTheta: number;
  ropeScaling?: Llama3RopeScaling;
  /** max_position_embeddings */
  maxPositions: number;
  /** tie_word_embeddings: lm_head = embed_tokens^T. */
  tiedEmbeddings: boolean;
}

export interface RandomLlamaOptions {
  seed?: number;
  /** Blocks the draft keeps (default 2). */
  draftLayers?: number;
  /** Scale of o_proj and down_proj of the blocks beyond the draft's (default {@link DEFAULT_LLAMA_DEEP_SCALE}). */
  deepScale?: number;
  /** Token frequencies the logits of both models follow (frequency-prior.ts); none: the logits are random alone. */
  frequencyPrior?: FrequencyPrior;
}

/**
 * Default `deepScale`. Smaller than GPT-2's 0.04: at a 151,936-token vocabulary the top logits of
 * a random model lie close together, so the same perturbation flips the argmax more often.
 * Measured greedy acceptance of fixed:2 (bench offline, gsm8k): 0.04 gave 59% on a Qwen3-shaped
 * target of 8 blocks at width 512 with a 1-block draft and 49% on the full Qwen3-0.6B shape with a
 * 2-block draft; 0.01 is what the synthetic pairs use by default.
 */
export const DEFAULT_LLAMA_DEEP_SCALE = 0.01;

/** Std of Qwen2's q/k/v biases. */
const QKV_BIAS_STD = 0.1;
/** Spread of the logits (std of a row, about). */
const LOGIT_STD = 3;

/**
 * A random target of `shape` and its draft (module comment).
 * @throws RangeError for a shape that is not a Llama-family decoder (heads not a multiple of
 * KV heads, odd head_dim, draft layers outside 1..layers)
 */
export function randomLlamaPair(shape: LlamaShape, options: RandomLlamaOptions = {}): { target: LlamaWeights; draft: LlamaWeights } {
  const { vocab, hidden: E, intermediate: I, layers, heads, kvHeads, headDim: D } = shape;
  const draftLayers = options.draftLayers ?? 2;
  const deepScale = options.deepScale ?? DEFAULT_LLAMA_DEEP_SCALE;
  if (draftLayers < 1 || draftLayers > layers) throw new RangeError(`draft layers must be in 1..${layers}, not ${draftLayers}`);
  if (heads % kvHeads !== 0) throw new RangeError(`${heads} attention heads are not a multiple of ${kvHeads} KV heads`);
  if (D % 2 !== 0) throw new RangeError(`head_dim ${D} is odd (rotary embeddings rotate pairs)`);
  const uniform = uniformArrays(options.seed ?? 0);
  const gain = (n: number) => uniform(n, 0.05, 1);
  const matrix = (rows: number, cols: number, scale = 1) => uniform(rows * cols, scale / Math.sqrt(rows));
  const projection = (cols: number) => ({ weight: matrix(E, cols), bias: shape.modelType === 'qwen2' ? uniform(cols, QKV_BIAS_STD) : null });

  const tied = shape.tiedEmbeddings;
  const embed = uniform(vocab * E, tied ? LOGIT_STD / Math.sqrt(E) : 1);
  const blocks: LlamaBlock[] = [];
  for (let b = 0; b < layers; b++) {
    const scale = b < draftLayers ? 1 : deepScale;
    blocks.push({
      inputNorm: gain(E),
      q: projection(heads * D),
      k: projection(kvHeads * D),
      v: projection(kvHeads * D),
      ...(shape.modelType === 'qwen3' ? { qNorm: gain(D), kNorm: gain(D) } : {}),
      o: matrix(heads * D, E, scale),
      postNorm: gain(E),
      gate: matrix(E, I),
      up: matrix(E, I),
      down: matrix(I, E, scale),
    });
  }
  const norm = tied ? uniform(E, 1) : gain(E);
  const untiedHead = tied ? null : uniform(E * vocab, LOGIT_STD / Math.sqrt(E));
  if (options.frequencyPrior) addFrequencyPrior(options.frequencyPrior, { vocab, hidden: E, embed, blocks, norm, lmHead: untiedHead });
  const lmHead = untiedHead ?? transpose(embed, vocab, E);
  const target: LlamaWeights = {
    vocab,
    hidden: E,
    intermediate: I,
    heads,
    kvHeads,
    headDim: D,
    epsilon: shape.epsilon,
    ropeTheta: shape.ropeTheta,
    ...(shape.ropeScaling ? { ropeScaling: shape.ropeScaling } : {}),
    kvFloat16: false,
    embed,
    blocks,
    norm,
    lmHead,
  };
  return { target, draft: { ...target, blocks: blocks.slice(0, draftLayers) } };
}

/**
 * Writes `prior` onto {@link PRIOR_CHANNEL} (frequency-prior.ts): the embeddings' and an untied
 * lm_head's channel values, the final norm's gain there, and every block's norm gains and output
 * columns of the channel set to 0 so that no block reads or writes it.
 */
function addFrequencyPrior(
  prior: FrequencyPrior,
  w: { vocab: number; hidden: number; embed: Float32Array; blocks: LlamaBlock[]; norm: Float32Array; lmHead: Float32Array | null },
): void {
  const c = PRIOR_CHANNEL;
  const E = w.hidden;
  const { values, gain } = priorChannel(prior, w.vocab);
  for (let j = 0; j < w.vocab; j++) w.embed[j * E + c] = values[j]!;
  if (w.lmHead) w.lmHead.set(values, c * w.vocab); // [hidden, vocab]: the channel's row
  w.norm[c] = gain;
  for (const b of w.blocks) {
    b.inputNorm[c] = 0;
    b.postNorm[c] = 0;
    for (let r = 0; r < b.o.length / E; r++) b.o[r * E + c] = 0; // [heads head_dim, hidden]
    for (let r = 0; r < b.down.length / E; r++) b.down[r * E + c] = 0; // [intermediate, hidden]
  }
}

/** [rows, cols] -> [cols, rows], row-major. */
function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c]!;
  return out;
}

/** Parameters of `w` as a model of that shape holds them (a tied lm_head counted once). */
export function countLlamaParams(w: LlamaWeights, tiedEmbeddings: boolean): number {
  const block = (b: LlamaBlock) =>
    [b.inputNorm, b.q.weight, b.q.bias, b.k.weight, b.k.bias, b.v.weight, b.v.bias, b.qNorm, b.kNorm, b.o, b.postNorm, b.gate, b.up, b.down].reduce((n, a) => n + (a?.length ?? 0), 0);
  return w.embed.length + w.blocks.reduce((n, b) => n + block(b), 0) + w.norm.length + (tiedEmbeddings ? 0 : w.lmHead.length);
}

/**
 * `w` with a vocabulary of `vocab` ids: embedding rows and lm_head columns beyond it dropped, or
 * new ones of zeros appended (as a model padded to a larger vocab_size carries untrained rows);
 * for a draft whose vocab_size differs from its target's (engine/vocab-map.ts).
 */
export function resizeLlamaVocab(w: LlamaWeights, vocab: number): LlamaWeights {
  const E = w.hidden;
  const embed = new Float32Array(vocab * E);
  embed.set(w.embed.subarray(0, Math.min(vocab, w.vocab) * E));
  const lmHead = new Float32Array(E * vocab);
  const keep = Math.min(vocab, w.vocab);
  for (let e = 0; e < E; e++) lmHead.set(w.lmHead.subarray(e * w.vocab, e * w.vocab + keep), e * vocab);
  return { ...w, vocab, embed, lmHead };
}
