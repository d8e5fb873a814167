/**
 * Counting token frequencies for an FR-Spec token map (onnx/token-map.ts): on the prompts of the
 * shipped benchmark sets through a model's tokenizer, and optionally on the model's own outputs
 * for those prompts (FR-Spec counts a corpus; a model's outputs are what its draft must propose).
 */
import { readFileSync } from 'node:fs';
import { DATASETS, type DatasetName, loadPrompts } from './datasets.js';
import { TokenCounts } from '../onnx/token-map.js';
import { TextTokenizer } from '../text/tokenizer.js';
import { readModelDir } from '../engine/model-dir.js';
import { ModelPair } from '../pair/model-pair.js';
import type { SamplingParams } from '../engine/sampling.js';

export interface CountOptions {
  /** Benchmark sets whose prompts are counted (default: gsm8k, humaneval, alpaca). */
  datasets?: readonly DatasetName[];
  /** Also generate this many tokens per prompt with the model in `dir` alone and count them (default 0: none). */
  generate?: number;
  /** Prompts per set to generate from (default 16). */
  prompts?: number;
  /** Sampling of the generated outputs (default: the model's generation_config.json, seeded by prompt index). */
  sampling?: SamplingParams;
  threads?: number;
}

export interface CountResult {
  counts: TokenCounts;
  /** The tokenizer's special tokens and the model's EOS ids, which a map always keeps. */
  always: number[];
  /** Tokens counted from prompts and from generated outputs. */
  promptTokens: number;
  outputTokens: number;
  /** Counts of the generated outputs alone (undefined when none were generated). */
  outputCounts?: TokenCounts;
}

/**
 * Counts every message of every prompt of `sets` through `tokenizer` into `counts`.
 * @returns the first `chatsPerSet` prompts of each set as chat-template token ids (to generate from)
 */
export function countPrompts(tokenizer: TextTokenizer, counts: TokenCounts, sets: readonly DatasetName[], chatsPerSet = 0): number[][] {
  const chats: number[][] = [];
  for (const set of sets) {
    const prompts = loadPrompts(set, Number.MAX_SAFE_INTEGER);
    for (const p of prompts) for (const m of p.messages) counts.add(tokenizer.encode(typeof m.content === 'string' ? m.content : JSON.stringify(m.content)));
    for (const p of prompts.slice(0, chatsPerSet)) chats.push(tokenizer.encodeChat(p.messages));
  }
  return chats;
}

/**
 * Token frequencies for the model in `dir` (module comment).
 * @throws ModelLoadError for an unreadable model directory or tokenizer
 */
export async function countTokens(dir: string, vocabSize: number, options: CountOptions = {}): Promise<CountResult> {
  const tokenizer = await TextTokenizer.fromDir(dir);
  const counts = new TokenCounts(vocabSize);
  const chats = countPrompts(tokenizer, counts, options.datasets ?? DATASETS, options.prompts ?? 16);
  const promptTokens = counts.total;
  let outputCounts: TokenCounts | undefined;
  const always = new Set<number>([...tokenizer.specialTokenIds, ...readModelDir(dir).eosTokenIds]);
  if ((options.generate ?? 0) > 0) {
    const pair = await ModelPair.load({ target: dir, draft: null, head: null, threads: options.threads });
    try {
      const d = pair.target.info.generationDefaults;
      const sampling = options.sampling ?? { temperature: d.temperature ?? 1, topP: d.topP ?? 1, topK: d.topK ?? 0 };
      outputCounts = new TokenCounts(vocabSize);
      for (let i = 0; i < chats.length; i++) {
        const out = await pair.decoder.start(chats[i]!, { maxTokens: options.generate!, sampling, seed: i, policy: { policy: 'none' } }).run();
        outputCounts.add(out);
        counts.add(out);
      }
    } finally {
      await pair.release();
    }
  }
  return { counts, always: [...always], promptTokens, outputTokens: counts.total - promptTokens, ...(outputCounts ? { outputCounts } : {}) };
}

/** What `specd models synth --token-frequencies` counts: shipped benchmark sets' prompts, or a UTF-8 text file. */
export type FrequencySource = { datasets: readonly DatasetName[] } | { file: string };

export interface CorpusCounts {
  counts: TokenCounts;
  /** The tokenizer's special tokens, which a token map always keeps. */
  always: number[];
  /** What was counted, in words (for a token map's `source` and the models' metadata). */
  description: string;
}

/**
 * Token frequencies of `source` through the tokenizer in `tokenizerDir` (tokenizer.json and
 * tokenizer_config.json), over a vocabulary of `vocabSize` ids.
 * @throws ModelLoadError for an unreadable tokenizer; Error naming a file that cannot be read or holds no text
 */
export async function countCorpus(tokenizerDir: string, vocabSize: number, source: FrequencySource): Promise<CorpusCounts> {
  const tokenizer = await TextTokenizer.fromDir(tokenizerDir);
  const counts = new TokenCounts(vocabSize);
  let what: string;
  if ('file' in source) {
    const text = readFileSync(source.file, 'utf8');
    if (text.trim() === '') throw new Error(`${source.file} holds no text to count tokens on`);
    counts.add(tokenizer.encode(text));
    what = source.file;
  } else {
    countPrompts(tokenizer, counts, source.datasets);
    what = `${source.datasets.join(',')} prompts`;
  }
  return { counts, always: [...tokenizer.specialTokenIds], description: `${what} (${counts.total} tokens)` };
}
