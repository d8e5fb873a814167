/**
 * Tiny random-weight decoder-only transformers in the transformers.js / optimum
 * ONNX layout, plus complete model directories around them (config, generation
 * config, tokenizer, chat template), for tests and demos.
 *
 * Graph interface (B = batch_size, S = sequence_length, P = past_sequence_length,
 * T = total_sequence_length = P + S):
 *
 * - inputs: `input_ids` int64 [B, S], `attention_mask` int64 [B, T],
 *   `position_ids` int64 [B, S], and per layer i `past_key_values.{i}.key` /
 *   `.value` [B, kvHeads, P, headDim] (float32 or float16);
 * - outputs: `logits` float32 [B, S, vocab] and per layer `present.{i}.key` /
 *   `.value` [B, kvHeads, T, headDim] (same type as the past).
 *
 * Attention is causal over cache slots: query j (absolute slot P + j) sees key
 * slots 0..P + j, minus slots where `attention_mask` is 0. An empty past is a
 * tensor with a 0-length sequence axis. Keys and values are rounded to the KV
 * dtype before use, so an fp16 cache gives the same results whether the keys were
 * computed in this call or fed back from an earlier one.
 *
 * Two styles:
 * - `gpt2`: learned position embeddings, LayerNorm, fused QKV with biases, erf-GELU
 *   MLP, final LayerNorm, lm_head tied to the token embedding (`MatMul(h, Transpose(wte))`);
 * - `llama`: RMSNorm, rotary embeddings from `position_ids`, grouped-query attention
 *   (KV heads repeated), SwiGLU MLP, untied lm_head, no biases (or, with `qkvBias`, biases on
 *   q, k and v as Qwen2 has them).
 *
 * MatMul weights are stored [in, out]. Weights come from a seeded PRNG, so the same
 * options always give the same bytes, and are scaled so that next-token
 * distributions are spread out but far from uniform (logit std about 1-3).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { KvDtype } from '../engine/kv-cache.js';
import { Rng } from '../engine/rng.js';
import { DATA_TYPE, GraphBuilder, type DType } from '../onnx/graph-builder.js';

export type FixtureStyle = 'gpt2' | 'llama';

/** Options of the fixture builders; every field but `style` has a default. */
export interface DecoderFixtureOptions {
  style: FixtureStyle;
  /** Vocabulary size, 8..{@link MAX_FIXTURE_VOCAB} (default 48). */
  vocabSize?: number;
  /** Number of transformer blocks (default 2). */
  layers?: number;
  /** Query heads (default 4). */
  heads?: number;
  /** Key/value heads; must divide `heads` (default: gpt2 = heads, llama = heads / 2). */
  kvHeads?: number;
  /** Size of one head (default hidden / heads). */
  headDim?: number;
  /** Residual width (default 32; gpt2 requires hidden = heads * headDim). */
  hidden?: number;
  /** gpt2 position table size / llama max_position_embeddings (default 128). */
  maxPositions?: number;
  /** PRNG seed (default 0). */
  seed?: number;
  /** Element type of past / present tensors (default float32). */
  kvDtype?: KvDtype;
  /** Store initializers in `model.onnx_data` (default false). */
  externalData?: boolean;
  /** End-of-sequence id (default: `<|im_end|>`). */
  eosTokenId?: number;
  /** llama only: biases on the q, k and v projections, as Qwen2 has them (config model_type `qwen2`; default false). */
  qkvBias?: boolean;
}

/** Fully resolved fixture configuration. */
export type DecoderFixtureConfig = Required<DecoderFixtureOptions> & {
  /** MLP inner width. */
  intermediate: number;
  bosTokenId: number;
  padTokenId: number;
};

/** Special tokens of the fixture tokenizer; their ids are their indices here. */
export const FIXTURE_SPECIAL_TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>', '<unk>'] as const;
export const FIXTURE_ENDOFTEXT_ID = 0;
export const FIXTURE_IM_START_ID = 1;
export const FIXTURE_IM_END_ID = 2;
export const FIXTURE_UNK_ID = 3;

/** Characters of the fixture tokenizer, most useful first; ids follow the special tokens. */
const FIXTURE_ALPHABET = [
  ' ', '\n', ...'etaoinshrdlucmfwypvbgkjqxz', ...".,!?'", ...'0123456789', ...':-()"/',
  ...'ABCDEFGHIJKLMNOPQRSTUVWXYZ', ...'+=*#%&;<>@[]_{}|~$^`\\\t',
];

/** Largest vocabulary the fixture tokenizer can cover. */
export const MAX_FIXTURE_VOCAB = FIXTURE_SPECIAL_TOKENS.length + FIXTURE_ALPHABET.length;

/** ChatML template shared by all fixtures. */
export const CHATML_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}" +
  "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

const LN_EPS = 1e-5;
const ROPE_THETA = 10000;
/** Spread of the Qwen2-style q/k/v biases: large enough that a rebuild which dropped them would be seen. */
const QKV_BIAS_STD = 0.5;
/** Additive attention bias for masked keys (finite, so fully masked rows stay NaN-free). */
const MASKED = -1e9;

/** Fills in defaults and checks the option combination. */
export function resolveFixtureOptions(options: DecoderFixtureOptions): DecoderFixtureConfig {
  const { style } = options;
  const heads = options.heads ?? 4;
  const hidden = options.hidden ?? (options.headDim ? heads * options.headDim : 32);
  const headDim = options.headDim ?? hidden / heads;
  const kvHeads = options.kvHeads ?? (style === 'llama' && heads % 2 === 0 ? heads / 2 : heads);
  const vocabSize = options.vocabSize ?? 48;
  const cfg: DecoderFixtureConfig = {
    style,
    vocabSize,
    layers: options.layers ?? 2,
    heads,
    kvHeads,
    headDim,
    hidden,
    maxPositions: options.maxPositions ?? 128,
    seed: options.seed ?? 0,
    kvDtype: options.kvDtype ?? 'float32',
    externalData: options.externalData ?? false,
    eosTokenId: options.eosTokenId ?? FIXTURE_IM_END_ID,
    qkvBias: options.qkvBias ?? false,
    intermediate: style === 'gpt2' ? 4 * hidden : 3 * hidden,
    bosTokenId: FIXTURE_ENDOFTEXT_ID,
    padTokenId: FIXTURE_ENDOFTEXT_ID,
  };
  const fail = (msg: string): never => {
    throw new Error(`decoder fixture: ${msg}`);
  };
  if (style !== 'gpt2' && style !== 'llama') fail(`unknown style ${String(style)}`);
  if (!Number.isInteger(headDim) || headDim < 2 || headDim % 2) fail(`headDim must be an even integer, got ${headDim}`);
  if (heads % kvHeads) fail(`kvHeads (${kvHeads}) must divide heads (${heads})`);
  if (style === 'gpt2' && (kvHeads !== heads || hidden !== heads * headDim)) {
    fail('gpt2 needs kvHeads = heads and hidden = heads * headDim');
  }
  if (!Number.isInteger(cfg.layers) || cfg.layers < 1) fail('layers must be >= 1');
  if (cfg.qkvBias && style !== 'llama') fail('qkvBias is a llama-style option');
  if (vocabSize < 8 || vocabSize > MAX_FIXTURE_VOCAB) fail(`vocabSize must be in 8..${MAX_FIXTURE_VOCAB}`);
  if (cfg.eosTokenId < 0 || cfg.eosTokenId >= vocabSize) fail('eosTokenId out of range');
  return cfg;
}

/** Builds the fixture's ONNX graph; see the module comment for its interface. */
export function buildDecoderFixture(options: DecoderFixtureOptions): GraphBuilder {
  const cfg = resolveFixtureOptions(options);
  return new DecoderGraph(cfg).build();
}

/** Graph construction state for one fixture. */
class DecoderGraph {
  private readonly g = new GraphBuilder({ opset: 17, irVersion: 8, name: 'decoder_fixture' });
  private readonly rng: Rng;
  private readonly kvType: DType;
  private attnBias = '';
  private cos = '';
  private sin = '';

  constructor(private readonly cfg: DecoderFixtureConfig) {
    this.rng = new Rng(cfg.seed);
    this.kvType = cfg.kvDtype;
  }

  build(): GraphBuilder {
    const { g, cfg } = this;
    const kvShape = ['batch_size', cfg.kvHeads, 'past_sequence_length', cfg.headDim];
    const ids = g.input('input_ids', 'int64', ['batch_size', 'sequence_length']);
    const mask = g.input('attention_mask', 'int64', ['batch_size', 'total_sequence_length']);
    const positions = g.input('position_ids', 'int64', ['batch_size', 'sequence_length']);
    for (let i = 0; i < cfg.layers; i++) {
      g.input(`past_key_values.${i}.key`, this.kvType, kvShape);
      g.input(`past_key_values.${i}.value`, this.kvType, kvShape);
    }
    g.setMetadata('specd.fixture', JSON.stringify({ style: cfg.style, seed: cfg.seed }));

    this.attnBias = this.buildAttentionBias(ids, mask);
    const logits = cfg.style === 'gpt2' ? this.gpt2(ids, positions) : this.llama(ids, positions);
    g.output(logits, 'logits', 'float32', ['batch_size', 'sequence_length', cfg.vocabSize]);
    // Present outputs are declared after logits, in layer order (optimum's order).
    const presentShape = ['batch_size', cfg.kvHeads, 'total_sequence_length', cfg.headDim];
    for (let i = 0; i < cfg.layers; i++) {
      g.output(`present.${i}.key`, `present.${i}.key`, this.kvType, presentShape);
      g.output(`present.${i}.value`, `present.${i}.value`, this.kvType, presentShape);
    }
    return g;
  }

  // ---- GPT-2 -------------------------------------------------------------

  private gpt2(ids: string, positions: string): string {
    const { g, cfg } = this;
    const E = cfg.hidden;
    // With a tied lm_head, a residual dominated by the current token's embedding
    // makes "repeat the current token" the argmax. Blocks therefore write more than
    // the token embedding holds, position embeddings are strong (so greedy output
    // keeps moving instead of settling into a short cycle), and the final
    // LayerNorm's gain is zero-mean, which removes the embedding's self-similarity bias.
    const wte = this.weight('transformer.wte.weight', [cfg.vocabSize, E], 2 / Math.sqrt(E));
    const wpe = this.weight('transformer.wpe.weight', [cfg.maxPositions, E], 4 / Math.sqrt(E));
    let h = g.op('Add', [g.op('Gather', [wte, ids]), g.op('Gather', [wpe, positions])]);
    for (let i = 0; i < cfg.layers; i++) {
      const p = `transformer.h.${i}`;
      const a = this.layerNorm(h, `${p}.ln_1`);
      const qkv = this.linear(a, `${p}.attn.c_attn`, E, 3 * E, 1 / Math.sqrt(E), true);
      const [q, k, v] = g.opN('Split', [qkv, g.constant('int64', [E, E, E])], 3, { attrs: { axis: -1 } });
      const attn = this.attention(i, this.heads(q!, cfg.heads), this.heads(k!, cfg.kvHeads), this.heads(v!, cfg.kvHeads));
      h = g.op('Add', [h, this.linear(attn, `${p}.attn.c_proj`, E, E, 1.5 / Math.sqrt(E), true)]);
      const m = this.layerNorm(h, `${p}.ln_2`);
      const fc = this.linear(m, `${p}.mlp.c_fc`, E, cfg.intermediate, 1 / Math.sqrt(E), true);
      const proj = this.linear(this.gelu(fc), `${p}.mlp.c_proj`, cfg.intermediate, E, 1.5 / Math.sqrt(cfg.intermediate), true);
      h = g.op('Add', [h, proj]);
    }
    const final = this.layerNorm(h, 'transformer.ln_f', 0, 1);
    const wteT = g.op('Transpose', [wte], { attrs: { perm: [1, 0] }, outputs: ['lm_head.weight_tied'] });
    return g.op('MatMul', [final, wteT]);
  }

  /** LayerNormalization with gain ~ N(gainMean, gainStd) and bias ~ N(0, 0.1). */
  private layerNorm(x: string, prefix: string, gainMean = 1, gainStd = 0.1): string {
    const E = this.cfg.hidden;
    const gamma = this.weight(`${prefix}.weight`, [E], gainStd, gainMean);
    const beta = this.weight(`${prefix}.bias`, [E], 0.1);
    return this.g.op('LayerNormalization', [x, gamma, beta], { attrs: { axis: -1, epsilon: LN_EPS } });
  }

  /** GELU with erf: 0.5 x (1 + erf(x / sqrt 2)). */
  private gelu(x: string): string {
    const { g } = this;
    const erf = g.op('Erf', [g.op('Mul', [x, g.constant('float32', [Math.SQRT1_2], [])])]);
    const onePlus = g.op('Add', [erf, g.constant('float32', [1], [])]);
    return g.op('Mul', [g.op('Mul', [x, onePlus]), g.constant('float32', [0.5], [])]);
  }

  // ---- Llama -------------------------------------------------------------

  private llama(ids: string, positions: string): string {
    const { g, cfg } = this;
    const E = cfg.hidden;
    const HD = cfg.heads * cfg.headDim;
    const KVD = cfg.kvHeads * cfg.headDim;
    const embed = this.weight('model.embed_tokens.weight', [cfg.vocabSize, E], 1);
    let h = g.op('Gather', [embed, ids]);
    this.buildRotary(positions);
    for (let i = 0; i < cfg.layers; i++) {
      const p = `model.layers.${i}`;
      const a = this.rmsNorm(h, `${p}.input_layernorm`);
      const qStd = 1.2 / Math.sqrt(E);
      const q = this.rotate(this.heads(this.linear(a, `${p}.self_attn.q_proj`, E, HD, qStd, cfg.qkvBias, QKV_BIAS_STD), cfg.heads));
      const k = this.rotate(this.heads(this.linear(a, `${p}.self_attn.k_proj`, E, KVD, qStd, cfg.qkvBias, QKV_BIAS_STD), cfg.kvHeads));
      const v = this.heads(this.linear(a, `${p}.self_attn.v_proj`, E, KVD, 1 / Math.sqrt(E), cfg.qkvBias, QKV_BIAS_STD), cfg.kvHeads);
      const attn = this.attention(i, q, k, v);
      h = g.op('Add', [h, this.linear(attn, `${p}.self_attn.o_proj`, HD, E, 1.5 / Math.sqrt(HD))]);
      const m = this.rmsNorm(h, `${p}.post_attention_layernorm`);
      const gate = this.linear(m, `${p}.mlp.gate_proj`, E, cfg.intermediate, 1 / Math.sqrt(E));
      const up = this.linear(m, `${p}.mlp.up_proj`, E, cfg.intermediate, 1 / Math.sqrt(E));
      const silu = g.op('Mul', [gate, g.op('Sigmoid', [gate])]);
      const down = this.linear(g.op('Mul', [silu, up]), `${p}.mlp.down_proj`, cfg.intermediate, E, 2 / Math.sqrt(cfg.intermediate));
      h = g.op('Add', [h, down]);
    }
    const final = this.rmsNorm(h, 'model.norm');
    return this.linear(final, 'lm_head', E, cfg.vocabSize, 2 / Math.sqrt(E));
  }

  /** RMSNorm: x / sqrt(mean(x^2) + eps) * weight. */
  private rmsNorm(x: string, prefix: string): string {
    const { g } = this;
    const weight = this.weight(`${prefix}.weight`, [this.cfg.hidden], 0.1, 1);
    const meanSq = g.op('ReduceMean', [g.op('Mul', [x, x])], { attrs: { axes: [-1], keepdims: 1 } });
    const rms = g.op('Sqrt', [g.op('Add', [meanSq, g.constant('float32', [LN_EPS], [])])]);
    return g.op('Mul', [g.op('Div', [x, rms]), weight]);
  }

  /** Precomputes cos / sin [B, 1, S, headDim] from position_ids (HF rotate_half convention). */
  private buildRotary(positions: string): void {
    const { g } = this;
    const half = this.cfg.headDim / 2;
    const invFreq = Array.from({ length: half }, (_, j) => ROPE_THETA ** ((-2 * j) / this.cfg.headDim));
    const pos = g.op('Unsqueeze', [g.op('Cast', [positions], { attrs: { to: DATA_TYPE.float32 } }), g.constant('int64', [2])]);
    const freqs = g.op('Mul', [pos, g.constant('float32', invFreq)]);
    const emb = g.op('Concat', [freqs, freqs], { attrs: { axis: -1 } });
    const axis1 = g.constant('int64', [1]);
    this.cos = g.op('Unsqueeze', [g.op('Cos', [emb]), axis1]);
    this.sin = g.op('Unsqueeze', [g.op('Sin', [emb]), axis1]);
  }

  /** Applies rotary embeddings to [B, heads, S, headDim]: x cos + rotate_half(x) sin. */
  private rotate(x: string): string {
    const { g } = this;
    const half = this.cfg.headDim / 2;
    const [x1, x2] = g.opN('Split', [x, g.constant('int64', [half, half])], 2, { attrs: { axis: -1 } });
    const rotated = g.op('Concat', [g.op('Neg', [x2!]), x1!], { attrs: { axis: -1 } });
    return g.op('Add', [g.op('Mul', [x, this.cos]), g.op('Mul', [rotated, this.sin])]);
  }

  // ---- Shared ------------------------------------------------------------

  /**
   * Additive attention bias [B, 1, S, T]: 0 where query j may see key t, i.e.
   * t <= P + j and attention_mask[b, t] = 1, else {@link MASKED}.
   */
  private buildAttentionBias(ids: string, mask: string): string {
    const { g } = this;
    const scalar = (v: number) => g.constant('int64', [v], []);
    const dim = (x: string, axis: number) => g.op('Gather', [g.op('Shape', [x]), scalar(axis)]);
    const past = dim('past_key_values.0.key', 2);
    const total = g.op('Add', [past, dim(ids, 1)]);
    const one = scalar(1);
    const queryPos = g.op('Range', [past, total, one]); // [S]: absolute slot of each query
    const keyPos = g.op('Range', [scalar(0), total, one]); // [T]
    const causal = g.op('LessOrEqual', [
      g.op('Unsqueeze', [keyPos, g.constant('int64', [0])]), // [1, T]
      g.op('Unsqueeze', [queryPos, g.constant('int64', [1])]), // [S, 1]
    ]);
    const keep = g.op('Cast', [g.op('Unsqueeze', [mask, g.constant('int64', [1, 2])])], { attrs: { to: DATA_TYPE.bool } });
    const allowed = g.op('And', [causal, keep]); // [B, 1, S, T]
    return g.op('Where', [allowed, g.constant('float32', [0], []), g.constant('float32', [MASKED], [])]);
  }

  /**
   * Multi-head attention for layer `layer`. q is [B, heads, S, D]; k and v are
   * [B, kvHeads, S, D]. Appends k / v to the past (writing `present.*`), repeats
   * KV heads for grouped-query attention and returns [B, S, heads * D].
   */
  private attention(layer: number, q: string, k: string, v: string): string {
    const { g, cfg } = this;
    const D = cfg.headDim;
    const cache = (x: string, kind: 'key' | 'value'): string => {
      const stored = this.kvType === 'float16' ? g.op('Cast', [x], { attrs: { to: DATA_TYPE.float16 } }) : x;
      const present = g.op('Concat', [`past_key_values.${layer}.${kind}`, stored], {
        attrs: { axis: 2 },
        outputs: [`present.${layer}.${kind}`],
      });
      const full = this.kvType === 'float16' ? g.op('Cast', [present], { attrs: { to: DATA_TYPE.float32 } }) : present;
      return this.repeatKv(full);
    };
    const keys = cache(k, 'key');
    const values = cache(v, 'value');
    const scores = g.op('MatMul', [q, g.op('Transpose', [keys], { attrs: { perm: [0, 1, 3, 2] } })]);
    const scaled = g.op('Add', [g.op('Mul', [scores, g.constant('float32', [1 / Math.sqrt(D)], [])]), this.attnBias]);
    const probs = g.op('Softmax', [scaled], { attrs: { axis: -1 } });
    const out = g.op('Transpose', [g.op('MatMul', [probs, values])], { attrs: { perm: [0, 2, 1, 3] } });
    return g.op('Reshape', [out, g.constant('int64', [0, 0, cfg.heads * D])]);
  }

  /** [B, kvHeads, T, D] -> [B, heads, T, D]; query head h uses KV head floor(h / (heads / kvHeads)). */
  private repeatKv(x: string): string {
    const { g, cfg } = this;
    const rep = cfg.heads / cfg.kvHeads;
    if (rep === 1) return x;
    const expanded = g.op('Expand', [g.op('Unsqueeze', [x, g.constant('int64', [2])]), g.constant('int64', [1, 1, rep, 1, 1])]);
    return g.op('Reshape', [expanded, g.constant('int64', [0, cfg.heads, -1, cfg.headDim])]);
  }

  /** [B, S, n * D] -> [B, n, S, D]. */
  private heads(x: string, n: number): string {
    const { g } = this;
    const split = g.op('Reshape', [x, g.constant('int64', [0, 0, n, this.cfg.headDim])]);
    return g.op('Transpose', [split], { attrs: { perm: [0, 2, 1, 3] } });
  }

  /** x @ W (+ b), W stored [in, out]. */
  private linear(x: string, prefix: string, inDim: number, outDim: number, std: number, bias = false, biasStd = 0.02): string {
    const y = this.g.op('MatMul', [x, this.weight(`${prefix}.weight`, [inDim, outDim], std)]);
    return bias ? this.g.op('Add', [y, this.weight(`${prefix}.bias`, [outDim], biasStd)]) : y;
  }

  /** A random float32 initializer with the given std and mean. */
  private weight(name: string, dims: number[], std: number, mean = 0): string {
    const n = dims.reduce((a, b) => a * b, 1);
    return this.g.initializer(name, this.rng.normals(n, std, mean), dims);
  }
}

/** `config.json` contents for a fixture, with the model family's own key names. */
export function fixtureConfigJson(cfg: DecoderFixtureConfig, name = `specd-fixture-${cfg.style}`): Record<string, unknown> {
  const common = {
    _name_or_path: name,
    vocab_size: cfg.vocabSize,
    bos_token_id: cfg.bosTokenId,
    eos_token_id: cfg.eosTokenId,
    pad_token_id: cfg.padTokenId,
    torch_dtype: 'float32',
  };
  if (cfg.style === 'gpt2') {
    return {
      model_type: 'gpt2',
      architectures: ['GPT2LMHeadModel'],
      ...common,
      n_layer: cfg.layers,
      n_head: cfg.heads,
      n_embd: cfg.hidden,
      n_positions: cfg.maxPositions,
      n_inner: cfg.intermediate,
      layer_norm_epsilon: LN_EPS,
      activation_function: 'gelu',
      tie_word_embeddings: true,
    };
  }
  return {
    model_type: cfg.qkvBias ? 'qwen2' : 'llama',
    architectures: [cfg.qkvBias ? 'Qwen2ForCausalLM' : 'LlamaForCausalLM'],
    ...common,
    num_hidden_layers: cfg.layers,
    num_attention_heads: cfg.heads,
    num_key_value_heads: cfg.kvHeads,
    hidden_size: cfg.hidden,
    head_dim: cfg.headDim,
    intermediate_size: cfg.intermediate,
    max_position_embeddings: cfg.maxPositions,
    rms_norm_eps: LN_EPS,
    rope_theta: ROPE_THETA,
    hidden_act: 'silu',
    tie_word_embeddings: false,
  };
}

/**
 * A character-level tokenizer covering exactly ids 0..vocabSize-1: the
 * {@link FIXTURE_SPECIAL_TOKENS} (added special tokens) followed by the first
 * characters of the fixture alphabet. Unknown characters encode as `<unk>`.
 * Expressed as a BPE model without merges plus a Fuse decoder, which
 * `@huggingface/tokenizers` loads as `new Tokenizer(tokenizerJson, tokenizerConfig)`.
 */
export function fixtureTokenizer(vocabSize: number): {
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
} {
  if (vocabSize < FIXTURE_SPECIAL_TOKENS.length || vocabSize > MAX_FIXTURE_VOCAB) {
    throw new Error(`fixture tokenizer: vocabSize must be in ${FIXTURE_SPECIAL_TOKENS.length}..${MAX_FIXTURE_VOCAB}`);
  }
  const tokens = [...FIXTURE_SPECIAL_TOKENS, ...FIXTURE_ALPHABET].slice(0, vocabSize);
  const added = FIXTURE_SPECIAL_TOKENS.map((content, id) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  const tokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: null,
    post_processor: null,
    decoder: { type: 'Fuse' },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<unk>',
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries(tokens.map((t, i) => [t, i])),
      merges: [],
    },
  };
  const tokenizerConfig = {
    tokenizer_class: 'PreTrainedTokenizerFast',
    model_max_length: 1024,
    chat_template: CHATML_TEMPLATE,
    bos_token: null,
    eos_token: '<|im_end|>',
    pad_token: '<|endoftext|>',
    unk_token: '<unk>',
    clean_up_tokenization_spaces: false,
    added_tokens_decoder: Object.fromEntries(added.map(({ id, ...rest }) => [String(id), rest])),
  };
  return { tokenizerJson, tokenizerConfig };
}

/**
 * Writes a complete model directory: `config.json`, `generation_config.json`,
 * `tokenizer.json`, `tokenizer_config.json` and `onnx/model.onnx` (plus
 * `onnx/model.onnx_data` with `externalData`). Returns the resolved configuration.
 */
export function writeFixtureModelDir(dir: string, options: DecoderFixtureOptions): DecoderFixtureConfig {
  const cfg = resolveFixtureOptions(options);
  mkdirSync(join(dir, 'onnx'), { recursive: true });
  const json = (file: string, value: unknown) => writeFileSync(join(dir, file), `${JSON.stringify(value, null, 2)}\n`);
  json('config.json', fixtureConfigJson(cfg));
  json('generation_config.json', {
    bos_token_id: cfg.bosTokenId,
    eos_token_id: cfg.eosTokenId,
    pad_token_id: cfg.padTokenId,
  });
  const { tokenizerJson, tokenizerConfig } = fixtureTokenizer(cfg.vocabSize);
  json('tokenizer.json', tokenizerJson);
  json('tokenizer_config.json', tokenizerConfig);
  new DecoderGraph(cfg).build().save(join(dir, 'onnx', 'model.onnx'), { externalData: cfg.externalData });
  return cfg;
}

/** Default sizes of the draft / target pair: the draft is smaller and seeded differently. */
export const FIXTURE_PAIR_DEFAULTS = {
  target: { layers: 2, heads: 4, hidden: 32, seed: 1 },
  draft: { layers: 1, heads: 2, hidden: 16, seed: 2 },
} as const;

/**
 * Writes a draft and a target fixture under `dir/draft` and `dir/target`. They share
 * the tokenizer (`vocabSize`) and eos id but have different sizes and seeds;
 * `draft` / `target` override per-model options.
 */
export function writeFixturePair(
  dir: string,
  options: {
    style?: FixtureStyle;
    vocabSize?: number;
    eosTokenId?: number;
    draft?: Partial<DecoderFixtureOptions>;
    target?: Partial<DecoderFixtureOptions>;
  } = {},
): { draftDir: string; targetDir: string; draft: DecoderFixtureConfig; target: DecoderFixtureConfig } {
  const shared = {
    style: options.style ?? 'llama',
    vocabSize: options.vocabSize ?? 48,
    ...(options.eosTokenId !== undefined ? { eosTokenId: options.eosTokenId } : {}),
  };
  const draftDir = join(dir, 'draft');
  const targetDir = join(dir, 'target');
  const target = writeFixtureModelDir(targetDir, { ...FIXTURE_PAIR_DEFAULTS.target, ...shared, ...options.target });
  const draft = writeFixtureModelDir(draftDir, { ...FIXTURE_PAIR_DEFAULTS.draft, ...shared, ...options.draft });
  if (draft.vocabSize !== target.vocabSize || draft.eosTokenId !== target.eosTokenId) {
    throw new Error('fixture pair: draft and target must share vocabSize and eosTokenId');
  }
  return { draftDir, targetDir, draft, target };
}
