/**
 * Benchmark prompts: the evaluation sets of the SpecDec++ paper, shipped in bench/datasets
 * (see its README and SOURCE notes). Only prompts the bundled pair was not trained on:
 * GSM8K test, HumanEval, and the even-indexed half of AlpacaEval.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { DATASETS_DIR } from '../paths.js';
import type { ChatMessage } from '../text/tokenizer.js';

export const DATASETS = ['gsm8k', 'humaneval', 'alpaca'] as const;
export type DatasetName = (typeof DATASETS)[number];

export interface BenchPrompt {
  id: string;
  /** A one-turn chat: the prompt as the user's message. */
  messages: ChatMessage[];
}

export function isDataset(name: string): name is DatasetName {
  return (DATASETS as readonly string[]).includes(name);
}

/** The first `count` prompts of a data set, in file order. */
export function loadPrompts(name: DatasetName, count: number, dir = DATASETS_DIR): BenchPrompt[] {
  const user = (content: string): ChatMessage[] => [{ role: 'user', content }];
  switch (name) {
    case 'gsm8k':
      return jsonLines(readFileSync(join(dir, 'gsm8k', 'test.jsonl'), 'utf8'))
        .slice(0, count)
        .map((r, i) => ({ id: `gsm8k/test/${i}`, messages: user(r.question) }));
    case 'humaneval':
      return jsonLines(gunzipSync(readFileSync(join(dir, 'humaneval', 'HumanEval.jsonl.gz'))).toString('utf8'))
        .slice(0, count)
        .map((r) => ({ id: r.task_id, messages: user(`Complete this Python function.\n\n${r.prompt}`) }));
    case 'alpaca':
      return (JSON.parse(readFileSync(join(dir, 'alpaca', 'alpaca_eval_even.json'), 'utf8')) as { instruction: string }[])
        .slice(0, count)
        .map((r, i) => ({ id: `alpaca_eval_even/${i}`, messages: user(r.instruction) }));
  }
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function jsonLines(text: string): any[] {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l));
}
