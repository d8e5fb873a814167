/**
 * How a draft's vocabulary is laid onto the target's (onnx/draft-vocab-graph.ts does the graph
 * rewrite): draft and target must share one tokenizer (the same token for every id), but their
 * `vocab_size` may differ by padding (Qwen2.5-0.5B pads its 151,665 tokens to 151,936,
 * Qwen2.5-7B to 152,064), and the draft's lm_head may be restricted to an FR-Spec token map
 * (onnx/token-map.ts). Logits are compared on the shared id range exactly: the draft's row is
 * cut or padded to the target's width, with q = 0 for ids the draft does not compute.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ModelLoadError } from '../errors.js';
import { changesLogits, draftVocabMap, type DraftVocabMap } from '../onnx/draft-vocab-graph.js';
import { readTokenMap, type TokenMap } from '../onnx/token-map.js';
import { TextTokenizer } from '../text/tokenizer.js';
import { normaliseConfig } from './model-dir.js';

/** A token map in a draft's directory under this name is used when none is named (`--speculative-token-map`). */
export const DRAFT_TOKEN_MAP_FILE = 'token_map.json';

/** config.json's vocab_size of a model directory. */
export function configVocabSize(dir: string): number {
  const file = join(dir, 'config.json');
  if (!existsSync(file)) throw new ModelLoadError(`missing ${file}`, file);
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ModelLoadError(`${file} is not valid JSON: ${(err as Error).message}`, file);
  }
  return normaliseConfig(raw, file).vocabSize;
}

export interface DraftVocabPlan {
  /** The rewrite the draft's graph needs; undefined when its logits are the target's as they are. */
  map?: DraftVocabMap;
  /** The token map used, if any, and its file. */
  tokenMap?: TokenMap & { file: string };
}

/**
 * Checks that the draft in `draftDir` can verify against the target in `targetDir` and says how
 * its logits map onto the target's vocabulary.
 * @param tokenMapFile an FR-Spec token map (`--speculative-token-map`); undefined: `DRAFT_TOKEN_MAP_FILE`
 *   in the draft's directory when there is one; null: none
 * @throws ModelLoadError when the tokenizers differ (naming both files and both sizes), when a
 *   vocabulary is smaller than the tokenizer, or for an unreadable token map
 */
export async function planDraftVocab(targetDir: string, draftDir: string, targetTokenizer: TextTokenizer, tokenMapFile?: string | null): Promise<DraftVocabPlan> {
  const targetVocab = configVocabSize(targetDir);
  const draftVocab = configVocabSize(draftDir);
  const draftTokenizer = await TextTokenizer.fromDir(draftDir);
  const sizes = `${join(draftDir, 'tokenizer.json')} has ${draftTokenizer.vocabSize} tokens (vocab_size ${draftVocab}), ${join(targetDir, 'tokenizer.json')} has ${targetTokenizer.vocabSize} (vocab_size ${targetVocab})`;
  if (draftTokenizer.fingerprint() !== targetTokenizer.fingerprint()) {
    throw new ModelLoadError(`draft and target tokenizers differ: ${sizes}, and they do not map token ids to the same tokens`, join(draftDir, 'tokenizer.json'));
  }
  for (const [dir, vocab] of [[draftDir, draftVocab], [targetDir, targetVocab]] as const) {
    if (vocab < targetTokenizer.vocabSize) {
      throw new ModelLoadError(`${join(dir, 'config.json')}: vocab_size ${vocab} is smaller than the tokenizer's ${targetTokenizer.vocabSize} tokens (draft: ${sizes})`, join(dir, 'config.json'), 'vocab_size');
    }
  }
  const file = tokenMapFile === undefined ? (existsSync(join(draftDir, DRAFT_TOKEN_MAP_FILE)) ? join(draftDir, DRAFT_TOKEN_MAP_FILE) : undefined) : (tokenMapFile ?? undefined);
  const tokenMap = file === undefined ? undefined : { ...readTokenMap(file, draftVocab), file };
  const map = draftVocabMap(draftVocab, targetVocab, tokenMap?.ids);
  return { map: changesLogits(map) ? map : undefined, ...(tokenMap ? { tokenMap } : {}) };
}
