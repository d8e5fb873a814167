/**
 * The acceptance head on disk: `NAME.head.onnx`, the inference graph (see head-graph.ts) with
 * its parameters inline, and `NAME.head.json` beside it, which holds the candidate weights u
 * and says what the head is for and how good it is:
 *
 * ```json
 * {
 *   "format": "specd-head/2",
 *   "architecture": {"type": "shared-residual-silu", "blocks": 3, "width": 128, "output": "sigmoid",
 *                    "candidate_features": ["log_q", "log_max_q", "entropy"], "candidate_weights": [0.8, 0.1, -0.2],
 *                    "parameters": 16772},
 *   "draft": {"name": "specd-pair-draft", "onnx_sha256": "...", "width": 128},
 *   "target": {"name": "specd-pair-target", "onnx_sha256": "..."},
 *   "recommended_threshold": 0.6,
 *   "threshold_selection": {...},       // how the threshold was chosen (threshold.ts)
 *   "training": {...},                  // data, hyper-parameters, time, loss per epoch
 *   "calibration": {...},               // held-out Brier score, AUC, reliability table
 *   "created": "2026-11-26T20:00:00.000Z"
 * }
 * ```
 *
 * The draft's identity is the sha256 of its ONNX graph file (for a prepared draft, of the
 * file it was prepared from); loading a head for another draft is an error.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { ModelLoadError } from '../errors.js';
import { readModel, type ModelProto } from '../onnx/graph-builder.js';
import { decodedGraph } from './prepare-draft.js';
import { buildHeadGraph, CANDIDATE_FEATURES, HEAD_BLOCKS, HEAD_INPUT, HEAD_OUTPUT, paramCount, type HeadParams } from './head-graph.js';

export const HEAD_FORMAT = 'specd-head/2';
/** Names of the candidate features, in order (candidate-features.ts). */
export const CANDIDATE_FEATURE_NAMES = ['log_q', 'log_max_q', 'entropy'] as const;
export const HEAD_SUFFIX = '.head.onnx';

export interface ModelIdentity {
  name: string;
  onnx_sha256: string;
}

export interface HeadMetadata {
  format: typeof HEAD_FORMAT;
  architecture: {
    type: 'shared-residual-silu';
    blocks: number;
    width: number;
    output: 'sigmoid';
    candidate_features: readonly string[];
    /** u: the weights of the candidate features in the logit. */
    candidate_weights: number[];
    parameters: number;
  };
  draft: ModelIdentity & { width: number };
  target?: ModelIdentity;
  /** The default threshold h of the specdec++ policy with this head. */
  recommended_threshold: number;
  threshold_selection?: unknown;
  training?: unknown;
  calibration?: unknown;
  created: string;
}

/** `models/x.head.onnx` -> `models/x.head.json`. */
export function headJsonPath(onnxPath: string): string {
  if (!onnxPath.endsWith('.onnx')) throw new Error(`a head file ends in ${HEAD_SUFFIX}: ${onnxPath}`);
  return `${onnxPath.slice(0, -'.onnx'.length)}.json`;
}

/** `models/x` or `models/x.head.onnx` -> `models/x.head.onnx`. */
export function headOnnxPath(nameOrPath: string): string {
  return nameOrPath.endsWith(HEAD_SUFFIX) ? nameOrPath : `${nameOrPath}${HEAD_SUFFIX}`;
}

export function headArchitecture(params: HeadParams): HeadMetadata['architecture'] {
  return {
    type: 'shared-residual-silu',
    blocks: HEAD_BLOCKS,
    width: params.width,
    output: 'sigmoid',
    candidate_features: CANDIDATE_FEATURE_NAMES,
    candidate_weights: Array.from(params.u),
    parameters: paramCount(params.width),
  };
}

/** Writes NAME.head.onnx and NAME.head.json; returns their paths. */
export function saveHead(nameOrPath: string, params: HeadParams, meta: HeadMetadata): { onnxPath: string; jsonPath: string } {
  const onnxPath = headOnnxPath(nameOrPath);
  const jsonPath = headJsonPath(onnxPath);
  writeFileSync(onnxPath, buildHeadGraph(params).toBytes());
  writeFileSync(jsonPath, `${JSON.stringify(meta, null, 2)}\n`);
  return { onnxPath, jsonPath };
}

export interface LoadedHeadFile {
  onnxPath: string;
  model: ModelProto;
  bytes: Uint8Array;
  meta: HeadMetadata;
}

/** Reads and checks a head: the graph has `hidden` -> `accept_logit` of the width its metadata says, and the metadata its candidate weights. */
export function readHeadFile(onnxPath: string): LoadedHeadFile {
  const jsonPath = headJsonPath(onnxPath);
  for (const f of [onnxPath, jsonPath]) if (!existsSync(f)) throw new ModelLoadError(`acceptance head file not found: ${f}`, f);
  let meta: HeadMetadata;
  try {
    meta = JSON.parse(readFileSync(jsonPath, 'utf8')) as HeadMetadata;
  } catch (err) {
    throw new ModelLoadError(`${jsonPath}: not valid JSON: ${(err as Error).message}`, jsonPath);
  }
  if (meta.format !== HEAD_FORMAT) throw new ModelLoadError(`${jsonPath}: format ${JSON.stringify(meta.format)}, expected ${HEAD_FORMAT}`, jsonPath, 'format');
  const width = meta.architecture?.width;
  if (!Number.isInteger(width) || width <= 0) throw new ModelLoadError(`${jsonPath}: architecture.width must be a positive integer`, jsonPath, 'architecture.width');
  const u = meta.architecture.candidate_weights;
  if (!Array.isArray(u) || u.length !== CANDIDATE_FEATURES || !u.every((x) => typeof x === 'number' && Number.isFinite(x))) {
    throw new ModelLoadError(`${jsonPath}: architecture.candidate_weights must be ${CANDIDATE_FEATURES} finite numbers`, jsonPath, 'architecture.candidate_weights');
  }
  const h = meta.recommended_threshold;
  if (!(typeof h === 'number' && h >= 0 && h <= 1)) throw new ModelLoadError(`${jsonPath}: recommended_threshold must be a number in [0, 1]`, jsonPath, 'recommended_threshold');
  const bytes = readFileSync(onnxPath);
  const model = readModel(bytes);
  const graph = decodedGraph(model, onnxPath);
  const input = graph.input.find((i) => i.name === HEAD_INPUT);
  const lastDim = input?.type?.tensorType?.shape?.dim?.at(-1)?.dimValue;
  if (!input || !graph.output.some((o) => o.name === HEAD_OUTPUT)) {
    throw new ModelLoadError(`${onnxPath}: an acceptance head has input ${HEAD_INPUT} and output ${HEAD_OUTPUT}`, onnxPath);
  }
  if (lastDim !== undefined && lastDim !== null && Number(lastDim) !== width) {
    throw new ModelLoadError(`${onnxPath}: input width ${String(lastDim)} differs from architecture.width ${width} in ${jsonPath}`, onnxPath);
  }
  return { onnxPath, model, bytes, meta };
}
