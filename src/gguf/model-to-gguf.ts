/**
 * A specd model directory as a float32 GGUF file that llama.cpp loads, with the metadata and
 * tensor names llama.cpp's own converter (convert_hf_to_gguf.py) writes. GPT-2 (its GPT2Model):
 *
 * - `general.*`, `gpt2.context_length / embedding_length / feed_forward_length / block_count /
 *   attention.head_count / attention.layer_norm_epsilon`;
 * - the tokenizer: `tokenizer.ggml.model` `gpt2` (byte-level BPE), `tokens` in id order,
 *   `token_type` (1 normal, 3 control for special added tokens), `merges`, the bos / eos /
 *   padding ids, `chat_template`;
 * - `token_embd`, `position_embd`, `blk.N.attn_norm / attn_qkv / attn_output / ffn_norm / ffn_up /
 *   ffn_down` (weights and biases), `output_norm`, and `output` only when the lm_head is not the
 *   token embedding (tied weights are shared, as llama.cpp expects).
 *
 * Llama-family models (`llama` and `mistral` as llama.cpp's `llama` architecture, `qwen2` and
 * `qwen3` as themselves; its LlamaModel / Qwen2Model / Qwen3Model): `{arch}.context_length /
 * embedding_length / feed_forward_length / block_count / attention.head_count /
 * attention.head_count_kv / attention.layer_norm_rms_epsilon / rope.freq_base /
 * rope.dimension_count`, `token_embd`, `blk.N.attn_norm / attn_q / attn_k / attn_v (biases for
 * qwen2) / attn_q_norm / attn_k_norm (qwen3's per-head RMSNorm gains, [head_dim]) / attn_output /
 * ffn_norm / ffn_gate / ffn_up / ffn_down`, `output_norm`, `output` when untied. For the `llama`
 * architecture the q and k rows are permuted from transformers' rotate-half layout to the
 * interleaved pairs llama.cpp's rotary embedding takes (the converter's LlamaModel.permute);
 * qwen2 and qwen3 keep transformers' layout (llama.cpp rotates them NeoX-style). Llama 3.x's
 * `rope_scaling` type `llama3` becomes the `rope_freqs.weight` tensor [head_dim / 2] of
 * per-frequency divisors that llama.cpp's rotary embedding applies (ropeFrequencyFactors).
 * A vocabulary larger than the tokenizer (Qwen's padded embedding rows) gets `[PADn]` tokens of
 * type unused, as the converter writes them.
 *
 * Matrices are stored as PyTorch's Linear keeps them, [out, in] row-major, i.e. GGUF dims
 * [in, out]; the ONNX weights are [in, out] and so transposed. Quantizing is llama.cpp's own job
 * (`llama-quantize`), so that a comparison runs its kernels on its formats.
 */
import { readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { readModelDir } from '../engine/model-dir.js';
import { readModelFile } from '../onnx/graph-builder.js';
import { readGpt2Weights } from '../onnx/gpt2-weights.js';
import { LLAMA_FAMILY, readLlamaWeights } from '../onnx/llama-weights.js';
import { type Llama3RopeScaling, ropeInverseFrequencies } from '../onnx/rope.js';
import { GgmlType, type GgufFile, type GgufTensor, type GgufValue } from './gguf-file.js';

/** GGUF token types (llama.cpp's llama_token_type). */
const TOKEN_NORMAL = 1;
const TOKEN_CONTROL = 3;
const TOKEN_UNUSED = 5;
/** general.file_type of an all-float32 file (llama.cpp's LLAMA_FTYPE_ALL_F32). */
const FILE_TYPE_ALL_F32 = 0;

/** Why a model directory cannot be written as GGUF (shown to the user). */
export class NotConvertibleError extends Error {
  override name = 'NotConvertibleError';
}

/** [rows, cols] row-major to [cols, rows] row-major. */
function transpose(m: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(m.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = m[r * cols + c]!;
  return out;
}

/**
 * The GGUF form of the model in `dir` (module comment).
 * @throws NotConvertibleError for a family other than GPT-2, ModelLoadError for an unreadable directory
 */
export function modelToGguf(dir: string): GgufFile {
  const model = readModelDir(dir);
  const config = model.config;
  if (LLAMA_FAMILY.includes(config.modelType)) return llamaToGguf(dir);
  if (config.modelType !== 'gpt2') throw new NotConvertibleError(`${dir}: model_type ${config.modelType}; the GGUF writer handles gpt2, ${LLAMA_FAMILY.join(', ')}`);
  if (config.heads === undefined) throw new NotConvertibleError(`${dir}: config.json does not give the number of attention heads`);
  const raw = JSON.parse(readFileSync(join(model.dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  const w = readGpt2Weights(readModelFile(model.onnxPath), config.heads);
  const E = w.hidden;
  const meta = new Map<string, GgufValue>();
  const u32 = (key: string, value: number) => meta.set(key, { type: 'u32', value });
  meta.set('general.architecture', { type: 'string', value: 'gpt2' });
  meta.set('general.name', { type: 'string', value: typeof raw._name_or_path === 'string' && raw._name_or_path ? raw._name_or_path : basename(model.dir) });
  u32('general.file_type', FILE_TYPE_ALL_F32);
  u32('general.alignment', 32);
  u32('gpt2.context_length', w.positions);
  u32('gpt2.embedding_length', E);
  u32('gpt2.feed_forward_length', w.inner);
  u32('gpt2.block_count', w.blocks.length);
  u32('gpt2.attention.head_count', w.heads);
  meta.set('gpt2.attention.layer_norm_epsilon', { type: 'f32', value: w.epsilon });
  for (const [k, v] of tokenizerMetadata(model.dir, w.vocab)) meta.set(k, v);

  const tensors: GgufTensor[] = [];
  const f32 = (name: string, data: Float32Array, dims: number[]) => tensors.push({ name, dims, type: GgmlType.F32, data });
  const linear = (name: string, weight: Float32Array, bias: Float32Array, k: number, n: number) => {
    f32(`${name}.weight`, transpose(weight, k, n), [k, n]);
    f32(`${name}.bias`, bias, [n]);
  };
  f32('token_embd.weight', w.wte, [E, w.vocab]);
  f32('position_embd.weight', w.wpe, [E, w.positions]);
  w.blocks.forEach((b, i) => {
    f32(`blk.${i}.attn_norm.weight`, b.ln1.gain, [E]);
    f32(`blk.${i}.attn_norm.bias`, b.ln1.bias, [E]);
    linear(`blk.${i}.attn_qkv`, b.qkv.weight, b.qkv.bias, E, 3 * E);
    linear(`blk.${i}.attn_output`, b.proj.weight, b.proj.bias, E, E);
    f32(`blk.${i}.ffn_norm.weight`, b.ln2.gain, [E]);
    f32(`blk.${i}.ffn_norm.bias`, b.ln2.bias, [E]);
    linear(`blk.${i}.ffn_up`, b.fc.weight, b.fc.bias, E, w.inner);
    linear(`blk.${i}.ffn_down`, b.out.weight, b.out.bias, w.inner, E);
  });
  f32('output_norm.weight', w.lnf.gain, [E]);
  f32('output_norm.bias', w.lnf.bias, [E]);
  const head = transpose(w.lmHead, E, w.vocab); // [vocab, E]
  if (head.some((v, i) => v !== w.wte[i])) f32('output.weight', head, [E, w.vocab]);
  return { metadata: meta, tensors };
}

/** The rows of a [heads head_dim, cols] matrix permuted from rotate-half pairs (j, j + D/2) to adjacent pairs (2j, 2j + 1), per head. */
function interleaveRotaryRows(m: Float32Array, heads: number, headDim: number, cols: number): Float32Array {
  const out = new Float32Array(m.length);
  const half = headDim / 2;
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < 2; j++) {
      for (let i = 0; i < half; i++) {
        const from = (h * headDim + j * half + i) * cols;
        out.set(m.subarray(from, from + cols), (h * headDim + 2 * i + j) * cols);
      }
    }
  }
  return out;
}

/**
 * Llama 3.x's `llama3` rope scaling as llama.cpp's `rope_freqs` [head_dim / 2]: the divisor of
 * each plain frequency theta^(-2j / head_dim), so that plain / divisor is transformers' scaled
 * frequency (rope.ts ropeInverseFrequencies: 1 for high frequencies, `factor` for low ones,
 * 1 / ((1 - s) / factor + s) in the band between). llama.cpp divides the rotation angle by it.
 */
export function ropeFrequencyFactors(theta: number, headDim: number, scaling: Llama3RopeScaling): Float32Array {
  const plain = ropeInverseFrequencies(theta, headDim);
  const { factor, lowFreqFactor: low, highFreqFactor: high, originalMaxPositions: original } = scaling;
  return plain.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < original / high) return 1;
    if (wavelen > original / low) return factor;
    const smooth = (original / wavelen - low) / (high - low);
    return 1 / ((1 - smooth) / factor + smooth);
  });
}

/** A Llama-family model directory as GGUF (module comment). */
function llamaToGguf(dir: string): GgufFile {
  const model = readModelDir(dir);
  const config = model.config;
  if (config.ropeVariant) throw new NotConvertibleError(`${dir}: ${config.ropeVariant}; the GGUF writer handles plain rotary embeddings`);
  const w = readLlamaWeights(readModelFile(model.onnxPath), config);
  const arch = config.modelType === 'qwen2' || config.modelType === 'qwen3' ? config.modelType : 'llama';
  if (w.ropeScaling && arch !== 'llama') throw new NotConvertibleError(`${dir}: rope_scaling type llama3 with model_type ${config.modelType}; llama.cpp reads rope_freqs for the llama architecture only`);
  const raw = JSON.parse(readFileSync(join(model.dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  const E = w.hidden;
  const D = w.headDim;
  const meta = new Map<string, GgufValue>();
  const u32 = (key: string, value: number) => meta.set(key, { type: 'u32', value });
  meta.set('general.architecture', { type: 'string', value: arch });
  meta.set('general.name', { type: 'string', value: typeof raw._name_or_path === 'string' && raw._name_or_path ? raw._name_or_path : basename(model.dir) });
  u32('general.file_type', FILE_TYPE_ALL_F32);
  u32('general.alignment', 32);
  if (arch === 'llama') u32('llama.vocab_size', w.vocab);
  u32(`${arch}.context_length`, Number.isFinite(config.maxPositions ?? Infinity) ? config.maxPositions! : 4096);
  u32(`${arch}.embedding_length`, E);
  u32(`${arch}.feed_forward_length`, w.intermediate);
  u32(`${arch}.block_count`, w.blocks.length);
  u32(`${arch}.attention.head_count`, w.heads);
  u32(`${arch}.attention.head_count_kv`, w.kvHeads);
  meta.set(`${arch}.attention.layer_norm_rms_epsilon`, { type: 'f32', value: w.epsilon });
  meta.set(`${arch}.rope.freq_base`, { type: 'f32', value: w.ropeTheta });
  u32(`${arch}.rope.dimension_count`, D);
  // The converter writes these whenever config.json names head_dim (Qwen3, Llama 3.x do).
  if (D * w.heads !== E || typeof raw.head_dim === 'number') {
    u32(`${arch}.attention.key_length`, D);
    u32(`${arch}.attention.value_length`, D);
  }
  for (const [k, v] of tokenizerMetadata(model.dir, w.vocab)) meta.set(k, v);

  const tensors: GgufTensor[] = [];
  const f32 = (name: string, data: Float32Array, dims: number[]) => tensors.push({ name, dims, type: GgmlType.F32, data });
  /** [k, n] ONNX weight as GGUF rows of n outputs, rotary rows interleaved for `heads` heads when asked. */
  const matrix = (name: string, weight: Float32Array, k: number, n: number, rotaryHeads?: number) => {
    const rows = transpose(weight, k, n);
    f32(name, rotaryHeads && arch === 'llama' ? interleaveRotaryRows(rows, rotaryHeads, D, k) : rows, [k, n]);
  };
  const bias = (name: string, b: Float32Array | null, heads: number) => {
    if (!b) return;
    f32(name, arch === 'llama' ? interleaveRotaryRows(b, heads, D, 1) : b, [b.length]);
  };
  if (w.ropeScaling) f32('rope_freqs.weight', ropeFrequencyFactors(w.ropeTheta, D, w.ropeScaling), [D / 2]);
  f32('token_embd.weight', w.embed, [E, w.vocab]);
  w.blocks.forEach((b, i) => {
    f32(`blk.${i}.attn_norm.weight`, b.inputNorm, [E]);
    matrix(`blk.${i}.attn_q.weight`, b.q.weight, E, w.heads * D, w.heads);
    bias(`blk.${i}.attn_q.bias`, b.q.bias, w.heads);
    matrix(`blk.${i}.attn_k.weight`, b.k.weight, E, w.kvHeads * D, w.kvHeads);
    bias(`blk.${i}.attn_k.bias`, b.k.bias, w.kvHeads);
    matrix(`blk.${i}.attn_v.weight`, b.v.weight, E, w.kvHeads * D);
    if (b.v.bias) f32(`blk.${i}.attn_v.bias`, b.v.bias, [b.v.bias.length]);
    if (b.qNorm) f32(`blk.${i}.attn_q_norm.weight`, b.qNorm, [D]);
    if (b.kNorm) f32(`blk.${i}.attn_k_norm.weight`, b.kNorm, [D]);
    matrix(`blk.${i}.attn_output.weight`, b.o, w.heads * D, E);
    f32(`blk.${i}.ffn_norm.weight`, b.postNorm, [E]);
    matrix(`blk.${i}.ffn_gate.weight`, b.gate, E, w.intermediate);
    matrix(`blk.${i}.ffn_up.weight`, b.up, E, w.intermediate);
    matrix(`blk.${i}.ffn_down.weight`, b.down, w.intermediate, E);
  });
  f32('output_norm.weight', w.norm, [E]);
  const head = transpose(w.lmHead, E, w.vocab);
  if (head.some((v, i) => v !== w.embed[i])) f32('output.weight', head, [E, w.vocab]);
  return { metadata: meta, tensors };
}

/**
 * llama.cpp's names (`tokenizer.ggml.pre`) of the pre-tokenizer splits it implements, by the
 * Split regex of tokenizer.json: Llama 3's (digits in runs of up to 3) and Qwen2's (one digit at a
 * time, also Qwen3's). The converter tells them apart by hashing a test string's tokens; the
 * regex names the same thing without running the tokenizer.
 */
const PRE_TOKENIZERS: Readonly<Record<string, string>> = {
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": 'llama-bpe',
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": 'qwen2',
};

interface PreTokenizer {
  type: string;
  pattern?: { Regex?: string };
  pretokenizers?: PreTokenizer[];
}

/** `tokenizer.ggml.pre` for a tokenizer.json pre_tokenizer: a known Split regex's name, else `default` (llama.cpp's GPT-2 rules). */
export function preTokenizerName(pre: PreTokenizer | null | undefined): string {
  const splits = pre?.type === 'Sequence' ? (pre.pretokenizers ?? []) : pre ? [pre] : [];
  for (const p of splits) {
    const name = p.type === 'Split' && p.pattern?.Regex !== undefined ? PRE_TOKENIZERS[p.pattern.Regex] : undefined;
    if (name) return name;
  }
  return 'default';
}

/** The `tokenizer.*` metadata of a byte-level BPE tokenizer.json and its chat template. */
function tokenizerMetadata(dir: string, vocabSize: number): [string, GgufValue][] {
  const tok = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')) as {
    model: { type: string; vocab: Record<string, number>; merges?: (string | [string, string])[] };
    added_tokens?: { id: number; content: string; special?: boolean }[];
    pre_tokenizer?: PreTokenizer | null;
  };
  if (tok.model.type !== 'BPE') throw new NotConvertibleError(`${dir}/tokenizer.json: a ${tok.model.type} model; the GGUF writer handles byte-level BPE`);
  const tokens: string[] = new Array(vocabSize).fill('');
  const types: number[] = new Array(vocabSize).fill(TOKEN_NORMAL);
  for (const [text, id] of Object.entries(tok.model.vocab)) if (id < vocabSize) tokens[id] = text;
  for (const t of tok.added_tokens ?? []) {
    if (t.id >= vocabSize) continue;
    tokens[t.id] = t.content;
    if (t.special) types[t.id] = TOKEN_CONTROL;
  }
  // Ids the tokenizer does not name (embedding rows padded past it) as the converter writes them.
  tokens.forEach((t, i) => {
    if (t !== '') return;
    tokens[i] = `[PAD${i}]`;
    types[i] = TOKEN_UNUSED;
  });
  const config = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8')) as { chat_template?: string };
  const generation = readJsonOr(join(dir, 'generation_config.json'));
  const modelConfig = readJsonOr(join(dir, 'config.json'));
  const id = (key: string): number | undefined => {
    const v = generation[key] ?? modelConfig[key];
    return typeof v === 'number' ? v : Array.isArray(v) && typeof v[0] === 'number' ? v[0] : undefined;
  };
  const out: [string, GgufValue][] = [
    ['tokenizer.ggml.model', { type: 'string', value: 'gpt2' }],
    ['tokenizer.ggml.pre', { type: 'string', value: preTokenizerName(tok.pre_tokenizer) }],
    ['tokenizer.ggml.tokens', { type: 'array', of: 'string', value: tokens }],
    ['tokenizer.ggml.token_type', { type: 'array', of: 'i32', value: types }],
    ['tokenizer.ggml.merges', { type: 'array', of: 'string', value: (tok.model.merges ?? []).map((m) => (Array.isArray(m) ? m.join(' ') : m)) }],
  ];
  for (const [key, name] of [
    ['bos_token_id', 'bos_token_id'],
    ['eos_token_id', 'eos_token_id'],
    ['pad_token_id', 'padding_token_id'],
  ] as const) {
    const v = id(key);
    if (v !== undefined) out.push([`tokenizer.ggml.${name}`, { type: 'u32', value: v }]);
  }
  out.push(['tokenizer.ggml.add_bos_token', { type: 'bool', value: false }], ['tokenizer.ggml.add_eos_token', { type: 'bool', value: false }]);
  if (config.chat_template) out.push(['tokenizer.chat_template', { type: 'string', value: config.chat_template }]);
  return out;
}

function readJsonOr(path: string): Record<string, unknown> {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch {
    return {};
  }
}
