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
import { editTasks } from './edit-dataset.js';

export const DATASETS = ['gsm8k', 'humaneval', 'alpaca'] as const;
/** Prompts whose answers have a JSON Schema (bench/datasets/json, written for specd), for constrained decoding. */
export const SCHEMA_DATASETS = ['json'] as const;
/** Prompts whose answers repeat most of the prompt (edit-dataset.ts), where draft-free proposers pay. */
export const REPETITION_DATASETS = ['edit'] as const;
export type DatasetName = (typeof DATASETS)[number] | (typeof SCHEMA_DATASETS)[number] | (typeof REPETITION_DATASETS)[number];

export interface BenchPrompt {
  id: string;
  /** A one-turn chat: the prompt as the user's message. */
  messages: ChatMessage[];
  /** The JSON Schema of the answer (the `json` set). */
  schema?: Record<string, unknown>;
}

export function isDataset(name: string): name is DatasetName {
  return [...DATASETS, ...SCHEMA_DATASETS, ...REPETITION_DATASETS].includes(name as DatasetName);
}

/**
 * The first `count` prompts of a data set, in file order; with `fits`, the first `count` for
 * which it is true (prompts too long for the model's context are passed over, as vLLM's
 * benchmark does), and `skipped` says how many were passed over on the way.
 */
export function loadPrompts(name: DatasetName, count: number, options: { dir?: string; fits?: (p: BenchPrompt) => boolean } = {}): BenchPrompt[] & { skipped?: number } {
  const all = allPrompts(name, options.dir ?? DATASETS_DIR);
  const out: BenchPrompt[] & { skipped?: number } = [];
  let skipped = 0;
  for (const p of all) {
    if (out.length >= count) break;
    if (options.fits && !options.fits(p)) skipped++;
    else out.push(p);
  }
  out.skipped = skipped;
  return out;
}

function allPrompts(name: DatasetName, dir: string): BenchPrompt[] {
  const user = (content: string): ChatMessage[] => [{ role: 'user', content }];
  switch (name) {
    case 'gsm8k':
      return jsonLines(readFileSync(join(dir, 'gsm8k', 'test.jsonl'), 'utf8')).map((r, i) => ({ id: `gsm8k/test/${i}`, messages: user(r.question) }));
    case 'humaneval':
      return jsonLines(gunzipSync(readFileSync(join(dir, 'humaneval', 'HumanEval.jsonl.gz'))).toString('utf8')).map((r) => ({
        id: r.task_id,
        messages: user(`Complete this Python function.\n\n${r.prompt}`),
      }));
    case 'alpaca':
      return (JSON.parse(readFileSync(join(dir, 'alpaca', 'alpaca_eval_even.json'), 'utf8')) as { instruction: string }[]).map((r, i) => ({
        id: `alpaca_eval_even/${i}`,
        messages: user(r.instruction),
      }));
    case 'edit':
      return editTasks(dir).map((t) => ({ id: t.id, messages: user(t.prompt) }));
    case 'json':
      return (JSON.parse(readFileSync(join(dir, 'json', 'extraction.json'), 'utf8')) as { id: string; prompt: string; schema: Record<string, unknown> }[]).map((r) => ({
        id: r.id,
        messages: user(r.prompt),
        schema: r.schema,
      }));
  }
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function jsonLines(text: string): any[] {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l));
}
