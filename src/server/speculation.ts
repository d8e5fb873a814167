/**
 * The `speculative` request field: a per-request draft policy over the server's default.
 *
 *   "speculative": {"policy": "fixed", "k": 6}
 *   "speculative": {"policy": "confidence", "p_min": 0.4, "k_max": 12}
 *   "speculative": {"policy": "specdec++", "threshold": 0.7, "k_min": 2, "k_max": 16}
 *   "speculative": {"policy": "hybrid", "method": "ngram", "prompt_lookup_max": 8}
 *   "speculative": {"k": 2}                 (the server's policy, another knob value)
 *   "speculative": {"policy": "none"}       (target-only decoding)
 *
 * Policies, knob names and ranges are those of the policy registry (engine/policy-registry.ts).
 * Knobs left out come from the server's default when the request keeps its policy, else from
 * the policy's own defaults; a knob the policy does not take is an error naming it.
 */
import { type PolicySpec, POLICIES, policyFromKnobs, PolicySpecError } from '../engine/policy-registry.js';
import { apiErrors } from './errors.js';

/** The field as the schema admits it. */
export type SpeculativeField = { policy?: string } & Record<string, unknown>;

const snake = (camel: string) => camel.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/**
 * The policy a request asks for.
 * @param field the request's `speculative` field (absent: the server's default)
 * @param serverDefault the server's policy (`--policy` and its knobs)
 * @throws ApiError 400 with param `speculative.policy` (unknown policy) or `speculative.KNOB`
 *   (a knob the policy does not take, or out of its range); `speculative` when the server's own
 *   knob value does not fit the request's (k_min above the request's k_max)
 */
export function requestPolicy(field: SpeculativeField | null | undefined, serverDefault: PolicySpec): PolicySpec {
  if (!field) return serverDefault;
  const name = field.policy ?? serverDefault.policy;
  const knobs = Object.fromEntries(Object.entries(field).filter(([knob, value]) => knob !== 'policy' && value !== undefined && value !== null));
  try {
    return policyFromKnobs(name, knobs, serverDefault);
  } catch (err) {
    if (!(err instanceof PolicySpecError)) throw err;
    const param = err.knob === undefined ? 'speculative.policy' : err.knob in knobs ? `speculative.${err.knob}` : 'speculative';
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

/** The `speculative` field's JSON schema properties: `policy` and every knob of the registry, typed. */
export function speculativeSchemaProperties(): Record<string, { type: string }> {
  const properties: Record<string, { type: string }> = { policy: { type: 'string' } };
  for (const p of POLICIES) for (const k of p.knobs) properties[k.api] = { type: k.type === 'choice' ? 'string' : k.type };
  return properties;
}
