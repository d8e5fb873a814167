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
import { supportOf, TokenProbs } from './token-probs.js';

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

/**
 * A row of kept columns laid out over the vocabulary: column c at id ids[c], -Infinity (q = 0)
 * everywhere else, as the draft graph's full row holds it (onnx/draft-vocab-graph.ts). For logits
 * processing that indexes rows by token id (penalties, logit bias, grammar masks).
 * @param row logits of the kept columns // [ids.length]
 * @param ids token id of each column, ascending // [ids.length]
 * @param vocab width of the result, above every id
 * @returns // [vocab]
 */
export function rowOverVocabulary(row: Float32Array, ids: Int32Array, vocab: number): Float32Array {
  const out = new Float32Array(vocab).fill(-Infinity);
  for (let c = 0; c < ids.length; c++) out[ids[c]!] = row[c]!;
  return out;
}

/**
 * Probabilities over kept columns laid out over the vocabulary (0 outside them), listing their
 * support. Because `ids` ascends, the support is in ascending id order as over a full row, so
 * sampling and the acceptance residual add the same numbers in the same order.
 * @param probs a distribution over the columns (a TokenProbs or dense) // [ids.length]
 * @param ids token id of each column, ascending // [ids.length]
 * @param vocab width of the result, above every id
 * @returns // [vocab]
 */
export function probsOverVocabulary(probs: Float64Array, ids: Int32Array, vocab: number): TokenProbs {
  let columns = supportOf(probs);
  if (!columns) {
    const all = new Int32Array(probs.length);
    let n = 0;
    for (let c = 0; c < probs.length; c++) if (probs[c]! > 0) all[n++] = c;
    columns = all.subarray(0, n);
  }
  const tokenIds = new Int32Array(columns.length);
  const values = new Float64Array(columns.length);
  for (let j = 0; j < columns.length; j++) {
    tokenIds[j] = ids[columns[j]!]!;
    values[j] = probs[columns[j]!]!;
  }
  return TokenProbs.fromSparse(vocab, tokenIds, values);
}
