/**
 * The requests of a serving benchmark: prompts from a bundled data set, sent as one-turn chats
 * to /v1/chat/completions, or random text prompts of a given length, sent as raw prompts to
 * /v1/completions (as `vllm bench serve --dataset-name random` does) with `ignore_eos`, so every
 * output is exactly max_tokens long. A seed reproduces both the random prompts and each
 * request's sampling seed.
 */
import { Rng } from '../../engine/rng.js';
import type { ChatMessage } from '../../text/tokenizer.js';
import { DATASETS, type DatasetName, loadPrompts } from '../datasets.js';

export const SERVE_DATASETS = [...DATASETS, 'random'] as const;
export type ServeDataset = (typeof SERVE_DATASETS)[number];

export function isServeDataset(name: string): name is ServeDataset {
  return (SERVE_DATASETS as readonly string[]).includes(name);
}

export interface WorkItem {
  id: string;
  /** A chat (data sets) or a raw prompt (random). */
  messages?: ChatMessage[];
  prompt?: string;
  maxTokens: number;
  /** Generate to maxTokens whatever EOS tokens come (vLLM's `ignore_eos`): outputs of exact length. */
  ignoreEos?: boolean;
}

export interface WorkloadOptions {
  dataset: ServeDataset;
  numPrompts: number;
  maxTokens: number;
  seed: number;
  /** Random prompts: characters of text (tokens for a byte-level tokenizer such as specd-pair's). */
  randomInputLen: number;
  /** Random prompts: max_tokens of each request. */
  randomOutputLen: number;
}

/** `length` characters of lowercase pseudo-words separated by single spaces. */
export function randomText(rng: Rng, length: number): string {
  let out = '';
  while (out.length < length) {
    const word = 2 + Math.floor(rng.next() * 7);
    for (let i = 0; i < word && out.length < length; i++) out += String.fromCharCode(97 + Math.floor(rng.next() * 26));
    if (out.length < length) out += ' ';
  }
  return out;
}

/** The benchmark's requests; a data set with fewer prompts than asked for is used again from the start. */
export function buildWorkload(opts: WorkloadOptions): WorkItem[] {
  if (opts.dataset === 'random') {
    const rng = new Rng(opts.seed);
    return Array.from({ length: opts.numPrompts }, (_, i) => ({
      id: `random/${i}`,
      prompt: randomText(rng, opts.randomInputLen),
      maxTokens: opts.randomOutputLen,
      ignoreEos: true,
    }));
  }
  const prompts = loadPrompts(opts.dataset as DatasetName, opts.numPrompts);
  if (prompts.length === 0) throw new Error(`data set ${opts.dataset} has no prompts`);
  return Array.from({ length: opts.numPrompts }, (_, i) => {
    const p = prompts[i % prompts.length]!;
    const round = Math.floor(i / prompts.length);
    return { id: round ? `${p.id}#${round + 1}` : p.id, messages: p.messages, maxTokens: opts.maxTokens };
  });
}

export interface RequestSettings {
  model: string;
  temperature: number;
  /** Request i gets seed + i. */
  seed: number;
  /** The `speculative` field (specd's per-request policy), if any. */
  speculative?: Record<string, unknown>;
  /** Merged into every body last (`--extra-body`). */
  extraBody?: Record<string, unknown>;
}

/** The endpoint path and JSON body of request `index`. */
export function requestFor(item: WorkItem, index: number, s: RequestSettings): { path: string; body: Record<string, unknown> } {
  const body: Record<string, unknown> = {
    model: s.model,
    ...(item.messages ? { messages: item.messages } : { prompt: item.prompt }),
    max_tokens: item.maxTokens,
    temperature: s.temperature,
    seed: s.seed + index,
    ...(item.ignoreEos ? { ignore_eos: true } : {}),
    ...(s.speculative ? { speculative: s.speculative } : {}),
    ...s.extraBody,
  };
  return { path: item.messages ? '/v1/chat/completions' : '/v1/completions', body };
}
