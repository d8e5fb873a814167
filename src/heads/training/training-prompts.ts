/**
 * Prompts for collecting the acceptance head's training data: the Alpaca subset
 * (bench/datasets/alpaca/alpaca_5000.json) and GSM8K train (bench/datasets/gsm8k/train.jsonl),
 * the data the bundled pair was trained on, never the benchmark prompts. Each set is shuffled
 * with a seed and the two are interleaved, so any prefix of the list holds both in equal parts
 * and a collection of N prompts is reproducible from (N, seed).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Rng } from '../../engine/rng.js';
import { DATASETS_DIR } from '../../paths.js';
import type { ChatMessage } from '../../text/tokenizer.js';

export const TRAINING_SOURCES = ['alpaca_5000', 'gsm8k_train'] as const;

export interface TrainingPrompt {
  id: string;
  messages: ChatMessage[];
}

/** The whole interleaved list (about 12,500 prompts). */
export function trainingPrompts(seed: number, dir = DATASETS_DIR): TrainingPrompt[] {
  const user = (content: string): ChatMessage[] => [{ role: 'user', content }];
  const alpaca = (JSON.parse(readFileSync(join(dir, 'alpaca', 'alpaca_5000.json'), 'utf8')) as { instruction: string; input?: string }[]).map(
    (r, i): TrainingPrompt => ({ id: `alpaca_5000/${i}`, messages: user(r.input ? `${r.instruction}\n\n${r.input}` : r.instruction) }),
  );
  const gsm8k = readFileSync(join(dir, 'gsm8k', 'train.jsonl'), 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l, i): TrainingPrompt => ({ id: `gsm8k/train/${i}`, messages: user((JSON.parse(l) as { question: string }).question) }));
  const rng = new Rng(seed);
  shuffle(alpaca, rng);
  shuffle(gsm8k, rng);
  const out: TrainingPrompt[] = [];
  for (let i = 0; i < Math.max(alpaca.length, gsm8k.length); i++) {
    if (i < alpaca.length) out.push(alpaca[i]!);
    if (i < gsm8k.length) out.push(gsm8k[i]!);
  }
  return out;
}

/** Fisher-Yates, in place. */
export function shuffle<T>(items: T[], rng: Rng): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}
