/**
 * Intra-op threads of a draft when none are asked for (`--draft-threads`): one for a small draft,
 * whose pass is mostly ONNX Runtime's fixed cost per node, which more threads only add to; the
 * target's for a draft whose matrix products are large enough to split.
 *
 * Measured on the 2-core CPU (bench/frspec-passes.ts, one pass after 64 positions, 1 against 2
 * threads interleaved, a loaded machine): the bundled draft (0.4M multiply-adds per token)
 * 0.33 against 0.47 ms; the 1-block 4 x 256 Qwen3-shaped draft with its 32,768-token map (9.3M)
 * 6.6 against 7.3 ms; the 2-block Qwen3-0.6B-shaped draft with its map (65M) 47 against 25 ms.
 * On one thread that draft's step cost half a target pass, against the quarter its arithmetic
 * predicts, because the target ran on two.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { normaliseConfig } from '../engine/model-dir.js';

/**
 * Multiply-adds per token from which a draft runs on the target's threads: between the 9.3M of
 * the small Qwen3-shaped draft (no gain from a second thread) and the 65M of the Qwen3-0.6B-shaped
 * one (1.9x from a second thread), measured as in the module comment.
 */
export const PARALLEL_DRAFT_MACS = 32e6;

/**
 * Multiply-adds of one decoder pass per token from its config.json: per block the attention's
 * projections (hidden x heads x head_dim for q and the output, hidden x kv_heads x head_dim for k
 * and v) and the MLP (2 matrices of hidden x intermediate for GPT-2, 3 for the gated Llama family),
 * then the lm_head over `lmHeadColumns`. Attention over the context is left out (small at the
 * lengths a draft sees in a round).
 * @param dir a model directory (its config.json)
 * @param lmHeadColumns the lm_head's columns computed (a token map's size); default vocab_size
 * @returns multiply-adds per token; 0 when the config lacks the widths to tell
 * @throws ModelLoadError for a missing or malformed config.json
 */
export function macsPerToken(dir: string, lmHeadColumns?: number): number {
  const file = join(dir, 'config.json');
  const raw = JSON.parse(readFileSync(file, 'utf8'));
  const c = normaliseConfig(raw, file);
  if (!c.hidden || !c.layers || !c.heads || !c.headDim) return 0;
  const h = c.hidden;
  const inner = Number(raw.intermediate_size ?? raw.n_inner ?? 4 * h);
  const mlpMatrices = c.modelType === 'gpt2' ? 2 : 3;
  const block = 2 * h * c.heads * c.headDim + 2 * h * (c.kvHeads ?? c.heads) * c.headDim + mlpMatrices * h * inner;
  return c.layers * block + h * (lmHeadColumns ?? c.vocabSize);
}

/**
 * The draft's intra-op threads when `--draft-threads` is not given (module comment).
 * @param draftDir the draft's model directory
 * @param targetThreads the target's intra-op threads
 * @param lmHeadColumns the draft's lm_head columns after a token map (FR-Spec), if any
 * @returns 1, or `targetThreads` for a draft of at least PARALLEL_DRAFT_MACS multiply-adds per token
 */
export function defaultDraftThreads(draftDir: string, targetThreads: number, lmHeadColumns?: number): number {
  return macsPerToken(draftDir, lmHeadColumns) >= PARALLEL_DRAFT_MACS ? targetThreads : 1;
}
