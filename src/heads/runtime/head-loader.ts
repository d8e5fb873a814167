/**
 * Loading an acceptance head for a draft: check that the head was trained for this draft,
 * then build the draft session the specdec++ policy runs.
 *
 * Modes:
 * - `fused` (default): the draft's graph is prepared in memory (`last_hidden_state`, see
 *   prepare-draft.ts) and the head is spliced into it (`accept_logit`, see head-fusion.ts); one
 *   `session.run()` per draft step gives the logits and the head's hidden-state logit.
 * - `session`: the prepared draft outputs `last_hidden_state` and the head runs as its own
 *   session after each draft step.
 * The original draft session stays as it is for every other policy. A draft too large to
 * prepare in memory must have been prepared on disk (`specd models prepare-draft`); it then
 * serves as the head's draft itself, in `session` mode.
 */
import { ModelLoadError } from '../../errors.js';
import type { Device } from '../../engine/device.js';
import type { GraphChoice } from '../../engine/graph-choice.js';
import { DecoderModel } from '../../engine/model.js';
import { readModelDir } from '../../engine/model-dir.js';
import type { DraftVocabMap } from '../../onnx/draft-vocab-graph.js';
import { onnx, type ModelProto } from '../../onnx/graph-builder.js';
import { fuseHead } from './head-fusion.js';
import { AcceptanceHead } from './head-runner.js';
import { draftIdentity, findHiddenState, preparedDraftModel } from './prepare-draft.js';

export type HeadMode = 'fused' | 'session';
export const HEAD_MODES: readonly HeadMode[] = ['fused', 'session'];

export interface HeadForDraftOptions {
  device?: Device;
  deviceId?: number;
  graph?: GraphChoice;
  /** Intra-op threads of the head's draft session (and of the head's own session). */
  threads?: number;
  dtype?: string;
  mode?: HeadMode;
  /** The draft's vocabulary map (engine/vocab-map.ts), applied to the head's draft as to the draft. */
  vocabMap?: DraftVocabMap;
  /** Prefix caching in the head's draft session's KV pool (model.ts). */
  prefixCaching?: boolean;
}

/** Throws ModelLoadError unless the head was trained for this draft and fits its width. */
export function checkHeadMatchesDraft(head: AcceptanceHead, draftDir: string, dtype?: string): void {
  const identity = draftIdentity(draftDir, dtype);
  const want = head.meta.draft;
  if (want.onnx_sha256 !== identity.onnx_sha256) {
    throw new ModelLoadError(
      `${head.onnxPath} was trained for draft ${want.name} (onnx sha256 ${want.onnx_sha256.slice(0, 12)}...), not for ${draftDir} (${identity.name}, ${identity.onnx_sha256.slice(0, 12)}...)`,
      head.onnxPath,
    );
  }
}

export async function loadHeadForDraft(
  headPath: string,
  draft: DecoderModel,
  options: HeadForDraftOptions = {},
): Promise<{ head: AcceptanceHead; headDraft: DecoderModel }> {
  const { device, deviceId, threads, dtype, graph, prefixCaching } = options;
  const mode = options.mode ?? 'fused';
  const head = AcceptanceHead.load(headPath, { device, deviceId, threads });
  checkHeadMatchesDraft(head, draft.info.dir, dtype);
  const config = readModelDir(draft.info.dir, dtype).config;

  let model: ModelProto;
  try {
    model = preparedDraftModel(draft.info.onnxPath, config.hidden);
  } catch (err) {
    if (draft.hasHiddenState) return { head, headDraft: draft };
    throw err;
  }
  const width = findHiddenState(model, draft.info.onnxPath).width ?? config.hidden;
  if (width !== undefined && width !== head.width) {
    throw new ModelLoadError(`${headPath}: the head is ${head.width} wide, the draft's hidden state ${width}`, headPath);
  }
  if (mode === 'fused') fuseHead(model, head.model);
  const headDraft = await DecoderModel.load(draft.info.dir, { device, deviceId, threads, dtype, graph, model: onnx.ModelProto.encode(model).finish(), keepGraph: true, vocabMap: options.vocabMap, prefixCaching });
  return { head, headDraft };
}
