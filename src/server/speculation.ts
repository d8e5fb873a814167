/**
 * The `speculative` request field: a per-request draft policy over the server's default.
 *
 *   "speculative": {"policy": "fixed", "k": 6}
 *   "speculative": {"policy": "confidence", "p_min": 0.4, "k_max": 12}
 *   "speculative": {"policy": "specdec++", "threshold": 0.7, "k_min": 2, "k_max": 16}
 *   "speculative": {"k": 2}                 (the server's policy, another knob value)
 *   "speculative": {"policy": "none"}       (target-only decoding)
 *
 * Knobs are the policy spec's fields in snake_case. Knobs left out come from the server's
 * default when the request keeps its policy, else from the policy's own defaults
 * (`parsePolicy(name)`); a knob the policy does not take is an error, and the ranges are
 * those of `validatePolicySpec`, so every policy stop-policy.ts knows is served as it is added.
 */
import { createPolicy, type PolicySpec, POLICY_NAMES, parsePolicy, PolicySpecError, validatePolicySpec, withDefaultThreshold } from '../engine/stop-policy.js';
import { apiErrors } from './errors.js';

/** The field as the schema admits it. */
export type SpeculativeField = { policy?: string } & Record<string, unknown>;

const snake = (camel: string) => camel.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
const camel = (snakeName: string) => snakeName.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());

/** Whether a policy needs the acceptance head (its threshold does not change that, so any stands in for a missing one). */
export function needsHead(spec: PolicySpec): boolean {
  return createPolicy(withDefaultThreshold(spec, 1)).needsHead;
}

/** The policy a request asks for; throws a 400 naming `speculative.*` when it is not valid. */
export function requestPolicy(field: SpeculativeField | null | undefined, serverDefault: PolicySpec): PolicySpec {
  if (!field) return serverDefault;
  const name = field.policy ?? serverDefault.policy;
  let spec: Record<string, unknown>;
  if (name === serverDefault.policy) {
    spec = { ...serverDefault };
  } else {
    const known = `expected one of ${POLICY_NAMES.join(', ')}`;
    if (!/^[a-z0-9+_-]+$/i.test(name)) throw apiErrors.invalidValue('speculative.policy', `Invalid 'speculative.policy': "${name}"; ${known}.`);
    try {
      spec = { ...parsePolicy(name) };
    } catch (err) {
      if (err instanceof PolicySpecError) throw apiErrors.invalidValue('speculative.policy', `Invalid 'speculative.policy': "${name}"; ${known}.`);
      throw err;
    }
  }
  for (const [knob, value] of Object.entries(field)) {
    if (knob === 'policy' || value === undefined || value === null) continue;
    const key = camel(knob);
    if (!(key in spec)) {
      const takes = Object.keys(spec).filter((k) => k !== 'policy').map(snake);
      throw apiErrors.invalidValue(
        `speculative.${knob}`,
        `'speculative.${knob}' does not apply to policy ${name} (${takes.length ? `it takes ${takes.join(', ')}` : 'it takes no knobs'}).`,
      );
    }
    spec[key] = value;
  }
  try {
    return validatePolicySpec(spec as PolicySpec);
  } catch (err) {
    if (!(err instanceof PolicySpecError)) throw err;
    // validatePolicySpec's messages start with the knob's snake_case name.
    const knob = err.message.split(' ')[0]!;
    const param = knob in field ? `speculative.${knob}` : 'speculative';
    throw apiErrors.invalidValue(param, `Invalid '${param}': ${err.message}.`);
  }
}

/** A policy as the `speculative` field writes it (snake_case knobs; specdec++'s threshold null when it is the head's recommended one). */
export function speculativeField(spec: PolicySpec): Record<string, unknown> {
  const field: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(spec)) field[snake(key)] = value;
  if (spec.policy === 'specdec++' && spec.threshold === undefined) field['threshold'] = null;
  return field;
}
