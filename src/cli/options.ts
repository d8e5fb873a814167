/** Parsers and shared option groups for the command line. */
import { InvalidArgumentError, type Command } from 'commander';
import { type Device, parseDevice } from '../engine/device.js';
import { GRAPH_CHOICES, type GraphChoice } from '../engine/graph-choice.js';
import { ONNX_VARIANTS } from '../engine/model-dir.js';
import type { PairOptions } from '../pair/model-pair.js';
import type { SamplingParams } from '../engine/sampling.js';
import {
  DEFAULT_CONFIDENCE_K_MAX,
  DEFAULT_FIXED_K,
  DEFAULT_P_MIN,
  DEFAULT_SPECDEC_K_MIN,
  MAX_DRAFT_LIMIT,
  type PolicySpec,
  parsePolicy,
  PolicySpecError,
  validatePolicySpec,
} from '../engine/stop-policy.js';

export function intIn(lo: number, hi: number) {
  return (text: string): number => {
    const v = Number(text);
    if (!/^-?\d+$/.test(text.trim()) || v < lo || v > hi) throw new InvalidArgumentError(`expected an integer in [${lo}, ${hi}]`);
    return v;
  };
}

export function numberIn(lo: number, hi: number) {
  return (text: string): number => {
    const v = Number(text);
    if (text.trim() === '' || !Number.isFinite(v) || v < lo || v > hi) throw new InvalidArgumentError(`expected a number in [${lo}, ${hi}]`);
    return v;
  };
}

export function deviceArg(text: string): Device {
  try {
    return parseDevice(text);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

export function policyListArg(text: string): PolicySpec[] {
  try {
    const list = text.split(',').filter((s) => s.trim() !== '').map(parsePolicy);
    if (list.length === 0) throw new PolicySpecError('no policies given');
    return list;
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

/** exported | fused | inplace. */
export function graphArg(text: string): GraphChoice {
  if (!(GRAPH_CHOICES as readonly string[]).includes(text)) throw new InvalidArgumentError(`expected one of ${GRAPH_CHOICES.join(', ')}`);
  return text as GraphChoice;
}

/** A weight dtype: one of the ONNX variants (model-dir.ts). */
export function dtypeArg(text: string): string {
  if (!(text in ONNX_VARIANTS)) throw new InvalidArgumentError(`expected one of ${Object.keys(ONNX_VARIANTS).join(', ')}`);
  return text;
}

/** --target, --draft, --no-draft, --device, --device-id, --graph, --threads, --draft-threads, --draft-device, --dtype, --draft-dtype, --head, --no-head, --speculative-token-map. */
export function addModelOptions(cmd: Command): Command {
  return cmd
    .option('--target <dir>', 'target model directory (default: the bundled specd-pair target)')
    .option('--draft <dir>', 'draft model directory (default: the bundled specd-pair draft with the bundled target)')
    .option('--no-draft', 'load no draft model (target-only decoding)')
    .option('--device <device>', 'execution provider: cpu, cuda or webgpu', deviceArg, 'cpu' as Device)
    .option('--device-id <n>', 'GPU index', intIn(0, 64), 0)
    .option('--graph <kind>', 'exported: run the models\' ONNX graphs as they are; fused: rebuild GPT-2 graphs with fused operators; inplace: GPT-2 and Llama-family (llama, mistral, qwen2, qwen3) graphs rebuilt with the KV cache written in place (CPU) (default: inplace on the CPU, fused on webgpu, exported on cuda)', graphArg)
    .option('--threads <n>', 'intra-op threads of the target (default: all cores)', intIn(1, 1024))
    .option('--draft-threads <n>', 'intra-op threads of the draft', intIn(1, 1024), 1)
    .option('--draft-device <device>', 'execution provider of the draft and its head (default: --device)', deviceArg)
    .option('--dtype <dtype>', `weights: ${Object.keys(ONNX_VARIANTS).join(', ')} (the model's onnx/ file of that name, as transformers.js names them); q8 and q4 without such a file: model.onnx's linear layers quantized to 8 or 4 bits (MatMulNBits), once, into the cache (default: fp32)`, dtypeArg)
    .option('--draft-dtype <dtype>', 'weights of the draft (default: --dtype)', dtypeArg)
    .option('--head <file>', 'acceptance head (NAME.head.onnx) for --policy specdec++ (default: the bundled head with the bundled pair)')
    .option('--no-head', 'load no acceptance head')
    .option('--speculative-token-map <file>', "FR-Spec token map (specd models token-map): the draft's lm_head computes these tokens only, exactly (default: token_map.json in the draft's directory, if there is one)")
    .option('--no-speculative-token-map', "the draft's full lm_head, even with a token_map.json in its directory");
}

export interface ModelFlags {
  target?: string;
  draft?: string | boolean;
  device: Device;
  deviceId: number;
  graph?: GraphChoice;
  draftDevice?: Device;
  threads?: number;
  draftThreads: number;
  head?: string | boolean;
  dtype?: string;
  draftDtype?: string;
  speculativeTokenMap?: string | boolean;
}

export function pairOptions(flags: ModelFlags): PairOptions {
  return {
    target: flags.target,
    draft: flags.draft === false ? null : typeof flags.draft === 'string' ? flags.draft : undefined,
    device: flags.device,
    deviceId: flags.deviceId,
    graph: flags.graph,
    draftDevice: flags.draftDevice,
    threads: flags.threads,
    draftThreads: flags.draftThreads,
    head: flags.head === false ? null : typeof flags.head === 'string' ? flags.head : undefined,
    ...(flags.dtype ? { dtype: flags.dtype } : {}),
    ...(flags.draftDtype ? { draftDtype: flags.draftDtype } : {}),
    ...(flags.speculativeTokenMap === false ? { speculativeTokenMap: null } : typeof flags.speculativeTokenMap === 'string' ? { speculativeTokenMap: flags.speculativeTokenMap } : {}),
  };
}

/** --temperature, --top-p, --top-k, --seed. */
export function addSamplingOptions(cmd: Command): Command {
  return cmd
    .option('--temperature <t>', "sampling temperature, 0 = greedy (default: the model's generation_config.json, else 1)", numberIn(0, 100))
    .option('--top-p <p>', 'nucleus sampling mass (1 = off)', numberIn(0, 1))
    .option('--top-k <k>', 'sample from the k most likely tokens (0 = off)', intIn(0, 1_000_000))
    .option('--seed <n>', 'random seed (same seed, same output)', intIn(0, Number.MAX_SAFE_INTEGER));
}

export interface SamplingFlags {
  temperature?: number;
  topP?: number;
  topK?: number;
}

/** Request flags over the model's generation_config.json defaults. */
export function samplingParams(flags: SamplingFlags, defaults: { temperature?: number; topP?: number; topK?: number }): SamplingParams {
  return {
    temperature: flags.temperature ?? defaults.temperature ?? 1,
    topP: flags.topP ?? defaults.topP ?? 1,
    topK: flags.topK ?? defaults.topK ?? 0,
  };
}

/** --threshold: a number in [0, 1], or `auto` (undefined: the head's recommended h, adapted to the load). */
function thresholdArg(text: string): number | undefined {
  if (text.trim() === 'auto') return undefined;
  const v = Number(text);
  if (text.trim() === '' || !Number.isFinite(v) || v < 0 || v > 1) throw new InvalidArgumentError('expected auto or a number in [0, 1]');
  return v;
}

/** --policy and its knobs. */
export function addPolicyOptions(cmd: Command): Command {
  return cmd
    .option('--policy <name>', 'draft-length policy: none, fixed, confidence, specdec++, or draft-free ngram or suffix (default: specdec++ when an acceptance head is loaded, else fixed; none without a draft)')
    .option('--k <n>', `candidates per round for --policy fixed`, intIn(1, MAX_DRAFT_LIMIT), DEFAULT_FIXED_K)
    .option('--p-min <p>', 'stop drafting below this draft probability (--policy confidence)', numberIn(0, 1), DEFAULT_P_MIN)
    .option('--k-max <n>', 'longest draft for --policy confidence and specdec++', intIn(1, MAX_DRAFT_LIMIT), DEFAULT_CONFIDENCE_K_MAX)
    .option('--threshold <h>', "stop drafting when the head's P(some candidate is rejected) exceeds h (--policy specdec++); auto (default): the head's recommended h adapted to the load each round (docs/engine.md)", thresholdArg)
    .option('--k-min <n>', 'shortest draft for --policy specdec++', intIn(1, MAX_DRAFT_LIMIT), DEFAULT_SPECDEC_K_MIN)
    .option('--prompt-lookup-min <n>', 'shortest n-gram matched (--policy ngram; default: docs/proposers.md)', intIn(1, 64))
    .option('--prompt-lookup-max <n>', 'longest n-gram matched (--policy ngram)', intIn(1, 64))
    .option('--num-speculative-tokens <n>', 'most candidates per round (--policy ngram and suffix)', intIn(1, 256));
}

export interface PolicyFlags {
  /** Undefined: the default for the models loaded (defaultPolicyName). */
  policy?: string;
  k: number;
  pMin: number;
  kMax: number;
  /** Undefined: auto. */
  threshold?: number;
  kMin: number;
  promptLookupMin?: number;
  promptLookupMax?: number;
  numSpeculativeTokens?: number;
}

/**
 * The policy used when --policy is not given: `specdec++` when an acceptance head is loaded (it
 * beat the best fixed K on every benchmark set of the bundled pair), `fixed` (K = --k, 4 by
 * default) with a draft and no head, `none` without a draft.
 */
export function defaultPolicyName(models: { draft: boolean; head: boolean }): 'specdec++' | 'fixed' | 'none' {
  if (!models.draft) return 'none';
  return models.head ? 'specdec++' : 'fixed';
}

/** --policy and its knobs as a spec; `policy` must be resolved (see defaultPolicyName) when the flag was not given. */
export function policySpec(flags: PolicyFlags & { policy: string }): PolicySpec {
  switch (flags.policy) {
    case 'none':
      return { policy: 'none' };
    case 'fixed':
      return validatePolicySpec({ policy: 'fixed', k: flags.k });
    case 'confidence':
      return validatePolicySpec({ policy: 'confidence', pMin: flags.pMin, kMax: flags.kMax });
    case 'specdec++':
      return validatePolicySpec({ policy: 'specdec++', threshold: flags.threshold, kMin: flags.kMin, kMax: flags.kMax });
    case 'ngram':
      return validatePolicySpec({ policy: 'ngram', promptLookupMin: flags.promptLookupMin, promptLookupMax: flags.promptLookupMax, numSpeculativeTokens: flags.numSpeculativeTokens });
    case 'suffix':
      return validatePolicySpec({ ...parsePolicy('suffix'), numSpeculativeTokens: flags.numSpeculativeTokens } as PolicySpec);
    default:
      throw new PolicySpecError(`--policy: unknown policy "${flags.policy}"; expected none, fixed, confidence, specdec++, ngram or suffix`);
  }
}

