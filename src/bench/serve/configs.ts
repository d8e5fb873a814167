/**
 * The configurations a serving benchmark compares (`--compare none,fixed:4,specdec++`): each
 * policy entry becomes the flags of its own `specd serve` (with --spawn) or the `speculative`
 * field of every request (with --url). Only the knob written in the entry is passed, so the
 * rest keep the server's values.
 */
import { knobFlag, parsePolicy, shorthandKnob } from '../../engine/policy-registry.js';
import { policyLabel } from '../../engine/stop-policy.js';
import { shellJoin } from './server-process.js';

export interface BenchConfig {
  label: string;
  /** `specd serve` flags that select the policy. */
  serverFlags: string[];
  /** The request's `speculative` field. */
  speculative: Record<string, unknown>;
}

/** Parse a comma-separated policy list; throws PolicySpecError on a bad entry. */
export function parseCompareList(text: string): BenchConfig[] {
  const entries = text.split(',').map((s) => s.trim()).filter(Boolean);
  const configs = entries.map((entry): BenchConfig => {
    const spec = parsePolicy(entry);
    const value = entry.split(':')[1];
    const knob = shorthandKnob(spec.policy);
    const serverFlags = ['--policy', spec.policy];
    const speculative: Record<string, unknown> = { policy: spec.policy };
    if (knob && value !== undefined && value !== '') {
      // `auto` (a knob decided from what is loaded): the flag takes it; the request field says null.
      serverFlags.push(knobFlag(knob), value);
      speculative[knob.api] = value === 'auto' ? null : knob.type === 'choice' ? value : Number(value);
    }
    return { label: policyLabel(spec), serverFlags, speculative };
  });
  const labels = configs.map((c) => c.label);
  const repeated = labels.find((l, i) => labels.indexOf(l) !== i);
  if (repeated) throw new Error(`${repeated} is listed twice`);
  if (configs.length === 0) throw new Error('no policies given');
  return configs;
}

/** The most requests in flight a concurrency level may ask for. */
export const MAX_CONCURRENCY = 1_000_000;

/**
 * Parse `--concurrency 1,4,16,64`: positive whole numbers (at most MAX_CONCURRENCY), each once,
 * kept in the order given; a single number is a list of one.
 * @throws Error naming the first bad entry
 */
export function parseConcurrencyList(text: string): number[] {
  const entries = text.split(',').map((s) => s.trim());
  if (entries.every((s) => s === '')) throw new Error('no concurrency levels given');
  const levels = entries.map((entry) => {
    const v = Number(entry);
    if (!/^\d+$/.test(entry) || v < 1 || v > MAX_CONCURRENCY) throw new Error(`${JSON.stringify(entry)} is not a whole number in [1, ${MAX_CONCURRENCY}]`);
    return v;
  });
  const repeated = levels.find((l, i) => levels.indexOf(l) !== i);
  if (repeated !== undefined) throw new Error(`${repeated} is listed twice`);
  return levels;
}

/**
 * A server variant's name in labels: its `--server-args` words as a shell would write them, or
 * `defaults` for an empty one (`--server-args ""`).
 */
export function variantName(words: readonly string[]): string {
  return words.length ? shellJoin(words) : 'defaults';
}

/**
 * Check the variants (`--server-args`, each value one variant): no two alike.
 * @throws Error naming the repeated one
 */
export function checkVariants(variants: readonly (readonly string[])[]): void {
  const names = variants.map(variantName);
  const repeated = names.find((n, i) => names.indexOf(n) !== i);
  if (repeated !== undefined) throw new Error(`the server variant ${JSON.stringify(repeated)} is given twice`);
}

/** A configuration's label: the policy, and the variant in brackets when several variants run (`specdec++ [--max-batch 1]`). */
export function configLabel(policy: string, variant: readonly string[] | null, manyVariants: boolean): string {
  return manyVariants && variant ? `${policy} [${variantName(variant)}]` : policy;
}
