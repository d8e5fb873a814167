/**
 * The acceptance head on disk: `NAME.head.onnx`, the inference graph (see head-graph.ts) with
 * its parameters inline, and `NAME.head.json` beside it, which holds the candidate weights u
 * and says what the head is for and how good it is:
 *
 * ```json
 * {
 *   "format": "specd-head/3",
 *   "architecture": {"type": "shared-residual-silu", "blocks": 3, "width": 128, "output": "sigmoid",
 *                    "temperature_knots": [0, 0.35, 0.7, 1],
 *                    "candidate_features": ["T0:bias", "T0:log_q", "T0:log_max_q", "T0:entropy", "T0.35:bias", ...],
 *                    "candidate_weights": [0.4, 0.8, 0.1, -0.2, ...],
 *                    "parameters": 16657},
 *   "draft": {"name": "specd-pair-draft", "onnx_sha256": "...", "width": 128},
 *   "target": {"name": "specd-pair-target", "onnx_sha256": "..."},
 *   "recommended_threshold": 0.6,       // over all temperatures of the data
 *   "recommended_thresholds": [{"temperature": 0, "threshold": 0.65}, ...],  // per decoding temperature
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
import { ModelLoadError } from '../../errors.js';
import { decodedGraph, readModel, type ModelProto } from '../../onnx/graph-builder.js';
import { BASE_FEATURE_NAMES, TEMPERATURE_KNOTS } from '../../engine/candidate-features.js';
import type { TemperatureThreshold } from '../../engine/stop-policy.js';
import { buildHeadGraph, CANDIDATE_FEATURES, HEAD_BLOCKS, HEAD_INPUT, HEAD_OUTPUT, paramCount, type HeadParams } from './head-graph.js';

export const HEAD_FORMAT = 'specd-head/3';
/** Names of the candidate features, in order (candidate-features.ts). */
export const CANDIDATE_FEATURE_NAMES: readonly string[] = TEMPERATURE_KNOTS.flatMap((t) => BASE_FEATURE_NAMES.map((f) => `T${t}:${f}`));
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
    /** Decoding temperatures the candidate weights are given at (interpolated between). */
    temperature_knots: readonly number[];
    candidate_features: readonly string[];
    /** u: the weights of the candidate features in the logit. */
    candidate_weights: number[];
    parameters: number;
  };
  draft: ModelIdentity & { width: number };
  target?: ModelIdentity;
  /** The default threshold h of the specdec++ policy with this head. */
  recommended_threshold: number;
  /** Default h per decoding temperature (0: greedy), interpolated between (stop-policy.ts, recommendedThresholdAt); these take precedence. */
  recommended_thresholds?: TemperatureThreshold[];
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
    temperature_knots: TEMPERATURE_KNOTS,
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
  const knots = meta.architecture.temperature_knots;
  if (!Array.isArray(knots) || JSON.stringify(knots) !== JSON.stringify(TEMPERATURE_KNOTS)) {
    throw new ModelLoadError(`${jsonPath}: architecture.temperature_knots must be ${JSON.stringify(TEMPERATURE_KNOTS)}`, jsonPath, 'architecture.temperature_knots');
  }
  const u = meta.architecture.candidate_weights;
  if (!Array.isArray(u) || u.length !== CANDIDATE_FEATURES || !u.every((x) => typeof x === 'number' && Number.isFinite(x))) {
    throw new ModelLoadError(`${jsonPath}: architecture.candidate_weights must be ${CANDIDATE_FEATURES} finite numbers`, jsonPath, 'architecture.candidate_weights');
  }
  const h = meta.recommended_threshold;
  if (!(typeof h === 'number' && h >= 0 && h <= 1)) throw new ModelLoadError(`${jsonPath}: recommended_threshold must be a number in [0, 1]`, jsonPath, 'recommended_threshold');
  const list = meta.recommended_thresholds;
  if (
    list !== undefined &&
    !(Array.isArray(list) && list.every((e) => typeof e?.temperature === 'number' && e.temperature >= 0 && typeof e.threshold === 'number' && e.threshold >= 0 && e.threshold <= 1))
  ) {
    throw new ModelLoadError(`${jsonPath}: recommended_thresholds must be a list of {temperature >= 0, threshold in [0, 1]}`, jsonPath, 'recommended_thresholds');
  }
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
