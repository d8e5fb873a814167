/**
 * The configurations a serving benchmark compares (`--compare none,fixed:4,specdec++`): each
 * policy entry becomes the flags of its own `specd serve` (with --spawn) or the `speculative`
 * field of every request (with --url). Only the knob written in the entry is passed, so the
 * rest keep the server's values.
 */
import { parsePolicy, type PolicySpec, policyLabel } from '../../engine/stop-policy.js';

export interface BenchConfig {
  label: string;
  /** `specd serve` flags that select the policy. */
  serverFlags: string[];
  /** The request's `speculative` field. */
  speculative: Record<string, unknown>;
}

/** The knob a `NAME:VALUE` entry sets, as the serve flag and the request field name it. */
const KNOBS: Partial<Record<PolicySpec['policy'], { flag: string; field: string }>> = {
  fixed: { flag: '--k', field: 'k' },
  confidence: { flag: '--p-min', field: 'p_min' },
  'specdec++': { flag: '--threshold', field: 'threshold' },
};

/** Parse a comma-separated policy list; throws PolicySpecError on a bad entry. */
export function parseCompareList(text: string): BenchConfig[] {
  const entries = text.split(',').map((s) => s.trim()).filter(Boolean);
  const configs = entries.map((entry): BenchConfig => {
    const spec = parsePolicy(entry);
    const value = entry.split(':')[1];
    const knob = KNOBS[spec.policy];
    const serverFlags = ['--policy', spec.policy];
    const speculative: Record<string, unknown> = { policy: spec.policy };
    if (knob && value !== undefined && value !== '') {
      serverFlags.push(knob.flag, value);
      speculative[knob.field] = Number(value);
    }
    return { label: policyLabel(spec), serverFlags, speculative };
  });
  const labels = configs.map((c) => c.label);
  const repeated = labels.find((l, i) => labels.indexOf(l) !== i);
  if (repeated) throw new Error(`${repeated} is listed twice`);
  if (configs.length === 0) throw new Error('no policies given');
  return configs;
}
