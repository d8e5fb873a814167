/**
 * What the main thread knows about the served model without loading it: the tokenizer (to
 * render chats and count tokens), the context length, the vocabulary, the EOS ids and the
 * sampling defaults of generation_config.json. The weights are loaded by the engine workers only.
 */
import { basename } from 'node:path';
import { type ModelDir, readModelDir } from '../engine/model-dir.js';
import type { PairOptions } from '../pair/model-pair.js';
import { BUNDLED_DRAFT, BUNDLED_TARGET } from '../paths.js';
import { TextTokenizer } from '../text/tokenizer.js';
import type { ToolCallFormat } from '../grammar/tool-call-common.js';
import { toolCallFormatOf } from './tool-plan.js';

/** max_tokens when neither the request nor the model's context bounds it. */
export const MAX_TOKENS_WITHOUT_CONTEXT = 4096;

export interface ModelFacts {
  /** The name clients use in `model`. */
  name: string;
  tokenizer: TextTokenizer;
  /** Longest prompt + completion, in tokens (Infinity when the config does not say). */
  contextLength: number;
  /**
   * Characters of text the longest token can stand for (its vocabulary string's length: one
   * character per byte in byte-level vocabularies). A prompt of more than contextLength x
   * PROMPT_CHARS_SLACK x this many characters cannot fit, and is refused without tokenizing it.
   */
  maxTokenChars: number;
  vocabSize: number;
  eosTokenIds: number[];
  generationDefaults: ModelDir['generationDefaults'];
  /** How the model writes tool calls, from its chat template and vocabulary (tool-plan.ts `toolCallFormatOf`). */
  toolCallFormat: ToolCallFormat;
  /** Whether a draft model is loaded (policies other than `none` need one). */
  hasDraft: boolean;
  /** Seconds since the epoch when the server loaded the model (`created` in /v1/models). */
  created: number;
}

/** Same defaults as ModelPair.load: the bundled draft goes with the bundled target, none otherwise. */
function draftDir(pair: PairOptions): string | null {
  return pair.draft === undefined ? (pair.target === undefined ? BUNDLED_DRAFT : null) : pair.draft;
}

/** Room for normalizers that shorten text (NFKC and the like) in the prompt-length bound. */
export const PROMPT_CHARS_SLACK = 4;

function longestToken(tokenizer: TextTokenizer): number {
  let longest = 1;
  for (let id = 0; id < tokenizer.vocabSize; id++) longest = Math.max(longest, tokenizer.tokenOf(id)?.length ?? 0);
  return longest;
}

/** Most characters of prompt text worth tokenizing: more cannot fit in the context. */
export function promptCharLimit(facts: Pick<ModelFacts, 'contextLength' | 'maxTokenChars'>): number {
  return facts.contextLength * facts.maxTokenChars * PROMPT_CHARS_SLACK;
}

export async function loadModelFacts(pair: PairOptions, modelName?: string): Promise<ModelFacts> {
  const targetDir = pair.target ?? BUNDLED_TARGET;
  const dir = readModelDir(targetDir, pair.dtype);
  const tokenizer = await TextTokenizer.fromDir(dir.dir);
  return {
    name: modelName ?? basename(dir.dir),
    tokenizer,
    contextLength: dir.config.maxPositions ?? Infinity,
    maxTokenChars: longestToken(tokenizer),
    vocabSize: dir.config.vocabSize,
    eosTokenIds: dir.eosTokenIds,
    generationDefaults: dir.generationDefaults,
    toolCallFormat: toolCallFormatOf(tokenizer),
    hasDraft: draftDir(pair) !== null,
    created: Math.floor(Date.now() / 1000),
  };
}
