/** Parsers and shared option groups for the command line. */
import { InvalidArgumentError, type Command } from 'commander';
import { type Device, parseDevice } from '../engine/device.js';
import { GRAPH_CHOICES, type GraphChoice } from '../engine/graph-choice.js';
import { ONNX_VARIANTS } from '../engine/model-dir.js';
import { SPINNING_MODES, type SpinningMode } from '../engine/session-threads.js';
import type { PairOptions } from '../pair/model-pair.js';
import type { SamplingParams } from '../engine/sampling.js';
import {
  allKnobs,
  knobFlag,
  knobRange,
  type PolicyKnob,
  POLICY_NAMES,
  type PolicySpec,
  policiesTaking,
  policyEntry,
  policyFromKnobs,
  parsePolicy,
  PolicySpecError,
} from '../engine/policy-registry.js';

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

/** A comma-separated list of `NAME` / `NAME:VALUE` policies (policy-registry.ts parsePolicy), e.g. `none,fixed:4,specdec++`. */
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

/** --intra-op-spinning's value: auto, on or off (session-threads.ts). */
export function spinningArg(text: string): SpinningMode {
  if (!(SPINNING_MODES as readonly string[]).includes(text)) throw new InvalidArgumentError(`expected one of ${SPINNING_MODES.join(', ')}`);
  return text as SpinningMode;
}

/** A weight dtype: one of the ONNX variants (model-dir.ts). */
export function dtypeArg(text: string): string {
  if (!(text in ONNX_VARIANTS)) throw new InvalidArgumentError(`expected one of ${Object.keys(ONNX_VARIANTS).join(', ')}`);
  return text;
}

/** --target, --draft, --no-draft, --device, --device-id, --graph, --threads, --draft-threads, --intra-op-spinning, --draft-device, --dtype, --draft-dtype, --head, --no-head, --speculative-token-map. */
export function addModelOptions(cmd: Command): Command {
  return cmd
    .option('--target <dir>', 'target model directory (default: the bundled specd-pair target)')
    .option('--draft <dir>', 'draft model directory (default: the bundled specd-pair draft with the bundled target)')
    .option('--no-draft', 'load no draft model (target-only decoding)')
    .option('--device <device>', 'execution provider: cpu, cuda or webgpu', deviceArg, 'cpu' as Device)
    .option('--device-id <n>', 'GPU index', intIn(0, 64), 0)
    .option('--graph <kind>', 'exported: run the models\' ONNX graphs as they are; fused: rebuild GPT-2 graphs with fused operators; inplace: GPT-2 and Llama-family (llama, mistral, qwen2, qwen3) graphs rebuilt with the KV cache written in place (CPU) (default: inplace on the CPU, fused on webgpu, exported on cuda)', graphArg)
    .option('--threads <n>', 'intra-op threads of the target (default: all cores)', intIn(1, 1024))
    .option('--draft-threads <n>', "intra-op threads of the draft (default: 1, the target's for a draft of 32M multiply-adds per token or more)", intIn(1, 1024))
    .option('--intra-op-spinning [mode]', "whether ONNX Runtime's intra-op threads spin-wait for work between passes: auto (default: only when no other process is busy as the models load; on a busy host spinning threads take the cores the passes need), on (also the bare flag), off", spinningArg)
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
  draftThreads?: number;
  intraOpSpinning?: SpinningMode | true;
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
    ...(flags.intraOpSpinning !== undefined ? { spinning: flags.intraOpSpinning === true ? 'on' : flags.intraOpSpinning } : {}),
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

/** A knob flag's value meaning "decided from what is loaded" (specdec++'s threshold from the head). */
const AUTO = 'auto';

/** A knob flag's parser: the knob's type and range (policy-registry.ts); `auto` where the knob has no fixed default. */
function knobArg(knob: PolicyKnob) {
  return (text: string): number | string => {
    if (knob.default === undefined && text.trim() === AUTO) return AUTO;
    if (knob.type === 'choice') {
      if (!(knob.choices ?? []).includes(text.trim())) throw new InvalidArgumentError(`expected ${knobRange(knob)}`);
      return text.trim();
    }
    const v = Number(text);
    const auto = knob.default === undefined ? 'auto or ' : '';
    if (text.trim() === '' || !Number.isFinite(v) || (knob.type === 'integer' && !Number.isInteger(v)) || v < knob.min || v > knob.max) {
      throw new InvalidArgumentError(`expected ${auto}${knobRange(knob)}`);
    }
    return v;
  };
}

/** --policy and one flag per knob of the policy registry (--k, --p-min, --k-max, --threshold, --k-min, --prompt-lookup-min, ...). */
export function addPolicyOptions(cmd: Command): Command {
  cmd.option(
    '--policy <name>',
    `draft-length policy: ${POLICY_NAMES.join(', ')} (default: specdec++ when an acceptance head is loaded, else fixed; none without a draft)`,
  );
  for (const knob of allKnobs()) {
    const takes = policiesTaking(knob.api).join(', ');
    const fallback = knob.default !== undefined ? `; default ${knob.default}` : knob.auto ? `; default auto: ${knob.auto}` : '';
    cmd.option(`${knobFlag(knob)} <${knob.type === 'integer' ? 'n' : knob.type === 'choice' ? 'name' : 'x'}>`, `${knob.help} (--policy ${takes}${fallback})`, knobArg(knob));
  }
  return cmd;
}

/** --policy and the knob flags as parsed; a knob flag left out is undefined (the policy's default). */
export interface PolicyFlags {
  /** Undefined: the default for the models loaded (defaultPolicyName). */
  policy?: string;
  /** Knob values by the spec's field name (commander's camelCase of the flag: `--p-min` -> `pMin`). */
  [knobField: string]: unknown;
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

/**
 * --policy and its knob flags as a spec, through the policy registry.
 * @param fallback the policy when --policy was not given (defaultPolicyName); knob flags it does
 *   not take are then left unused, where with an explicit --policy they are an error
 * @throws InvalidArgumentError naming the flag: an unknown policy, a knob flag the policy does not
 *   take, knobs that do not fit together (--k-min above --k-max)
 */
export function policySpec(flags: PolicyFlags, fallback?: string): PolicySpec {
  const explicit = flags.policy !== undefined;
  const name = flags.policy ?? fallback;
  if (name === undefined) throw new InvalidArgumentError('--policy: no policy given');
  try {
    const entry = policyEntry(name);
    const knobs: Record<string, unknown> = {};
    for (const knob of allKnobs()) {
      const value = flags[knob.field];
      if (value === undefined) continue;
      if (entry.knobs.some((k) => k.api === knob.api)) knobs[knob.api] = value === AUTO ? undefined : value;
      else if (explicit) {
        const takes = entry.knobs.length ? `it takes ${entry.knobs.map(knobFlag).join(', ')}` : 'it takes no knobs';
        throw new InvalidArgumentError(`${knobFlag(knob)} does not apply to --policy ${name} (${takes})`);
      }
    }
    return policyFromKnobs(name, knobs);
  } catch (err) {
    if (!(err instanceof PolicySpecError)) throw err;
    throw new InvalidArgumentError(err.knob === undefined ? `--policy: ${err.message}` : `${knobFlag({ api: err.knob })}: ${err.message}`);
  }
}
