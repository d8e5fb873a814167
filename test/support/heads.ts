/**
 * Shared helpers of the heads-*.test.ts suites: acceptance heads for fixture drafts.
 */
import { join } from 'node:path';
import type { TemperatureThreshold } from '../../src/engine/stop-policy.js';
import { headArchitecture, HEAD_FORMAT, saveHead } from '../../src/heads/runtime/head-file.js';
import { CANDIDATE_FEATURES, type HeadParams } from '../../src/heads/runtime/head-graph.js';
import { initHeadParams } from '../../src/heads/training/train.js';
import { draftIdentity } from '../../src/heads/runtime/prepare-draft.js';

/** Writes a head for the draft in `draftDir` (random parameters unless given); returns its .head.onnx path. */
export function writeTestHead(dir: string, draftDir: string, width: number, options: { params?: HeadParams; seed?: number; threshold?: number; thresholds?: TemperatureThreshold[]; name?: string } = {}): string {
  const params = options.params ?? initHeadParams(width, options.seed ?? 0);
  const { onnxPath } = saveHead(join(dir, options.name ?? 'test'), params, {
    format: HEAD_FORMAT,
    architecture: headArchitecture(params),
    draft: { ...draftIdentity(draftDir), width },
    recommended_threshold: options.threshold ?? 0.5,
    ...(options.thresholds ? { recommended_thresholds: options.thresholds } : {}),
    created: new Date(0).toISOString(),
  });
  return onnxPath;
}

/** A head whose P(accept) is the constant `p` for every input (all weights 0, output bias logit(p)). */
export function constantHeadParams(width: number, p: number): HeadParams {
  return {
    width,
    W: new Float32Array(width * width),
    b: new Float32Array(width),
    v: new Float32Array(width),
    c: Float32Array.of(Math.log(p / (1 - p))),
    u: new Float32Array(CANDIDATE_FEATURES),
  };
}
