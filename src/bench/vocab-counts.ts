/**
 * Counting token frequencies for an FR-Spec token map (onnx/token-map.ts): on the prompts of the
 * shipped benchmark sets through a model's tokenizer, and optionally on the model's own outputs
 * for those prompts (FR-Spec counts a corpus; a model's outputs are what its draft must propose).
 */
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
 * Token frequencies for the model in `dir` (module comment).
 * @throws ModelLoadError for an unreadable model directory or tokenizer
 */
export async function countTokens(dir: string, vocabSize: number, options: CountOptions = {}): Promise<CountResult> {
  const tokenizer = await TextTokenizer.fromDir(dir);
  const counts = new TokenCounts(vocabSize);
  const sets = options.datasets ?? DATASETS;
  const chats: number[][] = [];
  for (const set of sets) {
    const prompts = loadPrompts(set, Number.MAX_SAFE_INTEGER);
    for (const p of prompts) for (const m of p.messages) counts.add(tokenizer.encode(typeof m.content === 'string' ? m.content : JSON.stringify(m.content)));
    for (const p of prompts.slice(0, options.prompts ?? 16)) chats.push(tokenizer.encodeChat(p.messages));
  }
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
