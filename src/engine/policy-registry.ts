/**
 * The policy registry: every draft policy specd serves, its knobs (defaults, ranges, the names
 * the API and the CLI give them) and what it needs loaded (a draft model, an acceptance head).
 *
 * Every way of naming a policy goes through this table: the CLI's `--policy` and knob flags
 * (cli/options.ts), `NAME:VALUE` strings such as `fixed:4` (`--policies`, `bench serve
 * --compare`), and the API's `speculative` request field (server/speculation.ts). A knob's API
 * name is snake_case (vLLM's name where vLLM has the knob: `num_speculative_tokens`,
 * `prompt_lookup_min`, `suffix_decoding_*`), its CLI flag the same in kebab-case (`--p-min`),
 * its field in the spec camelCase (`pMin`).
 *
 * Adding a policy: its variant in `PolicySpec`, its entry in `POLICIES`, and its class in
 * stop-policy.ts `createPolicy` (docs/architecture.md, "Adding a stop policy").
 */
import { DRAFT_FREE_METHODS, type DraftFreeMethod, type DraftFreeOptions, DraftFreeProposer } from '../proposers/draft-free.js';
import { MAX_PROMPT_LOOKUP } from '../proposers/ngram.js';
import { ProposerOptionError } from '../proposers/proposal.js';
import { MAX_SUFFIX_TREE_DEPTH } from '../proposers/suffix.js';

/** Plain-data description of a policy (crosses worker boundaries, parsed from CLI and API). */
export type PolicySpec =
  | { policy: 'none' }
  | { policy: 'fixed'; k: number }
  | { policy: 'confidence'; pMin: number; kMax: number }
  /**
   * `threshold` absent (`auto`): the head's recommended one (stop-policy.ts `withDefaultThreshold`),
   * adapted to the load each round unless the request samples with a seed (cost-model.ts).
   */
  | { policy: 'specdec++'; threshold?: number; kMin: number; kMax: number }
  /**
   * Prompt lookup (proposers/ngram.ts), no draft model: knobs left undefined take the
   * proposer's defaults for the target's vocabulary (proposers/draft-free.ts knobDefaultsFor).
   */
  | ({ policy: 'ngram' } & NgramKnobs)
  /** Suffix decoding (proposers/suffix.ts), no draft model; knobs as for `ngram`, named as vLLM's. */
  | ({ policy: 'suffix' } & SuffixKnobs)
  /**
   * The draft model under specdec++ (its knobs) against a draft-free proposer, `method`, per
   * round and sequence (engine/hybrid-proposer.ts); the knobs of the method not chosen stay
   * undefined.
   */
  | ({ policy: 'hybrid'; method: DraftFreeMethod; threshold?: number; kMin: number; kMax: number } & NgramKnobs & SuffixKnobs);

/** Prompt lookup's knobs (vLLM's names in camelCase); undefined: the proposer's default for the vocabulary. */
export interface NgramKnobs {
  promptLookupMin?: number;
  promptLookupMax?: number;
  numSpeculativeTokens?: number;
}

/** Suffix decoding's knobs (vLLM's names in camelCase); undefined: the proposer's default. */
export interface SuffixKnobs {
  suffixDecodingMaxTreeDepth?: number;
  suffixDecodingMaxCachedRequests?: number;
  suffixDecodingMaxSpecFactor?: number;
  suffixDecodingMaxSpecOffset?: number;
  suffixDecodingMinTokenProb?: number;
  numSpeculativeTokens?: number;
}

export type PolicyName = PolicySpec['policy'];

/** Longest draft any draft-model policy may ask for; beyond it acceptance of the whole run is negligible. */
export const MAX_DRAFT_LIMIT = 32;
/** Most candidates a draft-free proposer may copy in one round (its passes cost nothing; the target verifies them all). */
export const MAX_DRAFT_FREE_TOKENS = 256;
export const DEFAULT_FIXED_K = 4;
/** llama.cpp's default p_min for its draft-confidence stop. */
export const DEFAULT_P_MIN = 0.6;
export const DEFAULT_CONFIDENCE_K_MAX = 16;
/** specdec++ bounds: steps below K_MIN always continue, step K_MAX always stops. */
export const DEFAULT_SPECDEC_K_MIN = 1;
export const DEFAULT_SPECDEC_K_MAX = 16;

/** A policy's knob value out of its range, or a policy or knob that does not exist. */
export class PolicySpecError extends Error {
  override name = 'PolicySpecError';
  constructor(
    message: string,
    /** The knob at fault by its API name (`k`, `p_min`, ...); undefined: the policy name itself. */
    readonly knob?: string,
  ) {
    super(message);
  }
}

/** One knob of a policy: one field of its spec. */
export interface PolicyKnob {
  /** The spec's field, camelCase (`pMin`). */
  readonly field: string;
  /** The name in the API's `speculative` field, snake_case (`p_min`); the CLI flag is `--p-min`. */
  readonly api: string;
  /** `choice`: one of `choices` (a string); the others a number within [min, max]. */
  readonly type: 'integer' | 'number' | 'choice';
  /** Inclusive bounds (a choice knob: unused, 0). */
  readonly min: number;
  readonly max: number;
  /** A choice knob's values. */
  readonly choices?: readonly string[];
  /**
   * Value when not given. Undefined: chosen later from what is loaded (specdec++'s threshold from
   * the head, a draft-free knob from the vocabulary); such a knob also takes `auto` in
   * `NAME:VALUE` and `--flag auto`, and null in the API.
   */
  readonly default?: number | string;
  /** What an undefined default stands for, for --help. */
  readonly auto?: string;
  /** One line for --help and the docs. */
  readonly help: string;
}

/** One policy of the registry. */
export interface PolicyEntry {
  readonly name: PolicyName;
  /** One line for --help and the docs. */
  readonly help: string;
  /** Runs the draft model (false: target-only, or candidates copied by a draft-free proposer). */
  readonly needsDraft: boolean;
  /** Asks the acceptance head after every draft step. */
  readonly needsHead: boolean;
  readonly knobs: readonly PolicyKnob[];
  /** The knob `NAME:VALUE` sets (`fixed:4` is k = 4), by API name; none: `NAME` only. */
  readonly shorthand?: string;
  /** Rules across knobs beyond each one's range; throws PolicySpecError naming the knob. */
  readonly check?: (spec: Record<string, unknown>) => void;
}

const kMaxKnob = (fallback: number, help: string): PolicyKnob => ({ field: 'kMax', api: 'k_max', type: 'integer', min: 1, max: MAX_DRAFT_LIMIT, default: fallback, help });
const numTokensKnob: PolicyKnob = {
  field: 'numSpeculativeTokens',
  api: 'num_speculative_tokens',
  type: 'integer',
  min: 1,
  max: MAX_DRAFT_FREE_TOKENS,
  auto: "the proposer's for the vocabulary, docs/proposers.md",
  help: 'most candidates per round',
};

/** The draft-free proposer `hybrid` runs beside the draft when none is named: suffix decoding, whose trees also hold earlier outputs. */
export const DEFAULT_HYBRID_METHOD: DraftFreeMethod = 'suffix';

const SPECDEC_KNOBS: readonly PolicyKnob[] = [
  { field: 'threshold', api: 'threshold', type: 'number', min: 0, max: 1, auto: "the head's recommended h, adapted to the measured costs", help: "stop once the head's P(some candidate is rejected) exceeds h" },
  { field: 'kMin', api: 'k_min', type: 'integer', min: 1, max: MAX_DRAFT_LIMIT, default: DEFAULT_SPECDEC_K_MIN, help: 'shortest draft' },
  kMaxKnob(DEFAULT_SPECDEC_K_MAX, 'longest draft'),
];
const NGRAM_KNOBS: readonly PolicyKnob[] = [
  { field: 'promptLookupMin', api: 'prompt_lookup_min', type: 'integer', min: 1, max: MAX_PROMPT_LOOKUP, auto: "the proposer's for the vocabulary, docs/proposers.md", help: 'shortest n-gram matched' },
  { field: 'promptLookupMax', api: 'prompt_lookup_max', type: 'integer', min: 1, max: MAX_PROMPT_LOOKUP, auto: "the proposer's for the vocabulary", help: 'longest n-gram matched' },
];
const SUFFIX_KNOBS: readonly PolicyKnob[] = [
  { field: 'suffixDecodingMaxTreeDepth', api: 'suffix_decoding_max_tree_depth', type: 'integer', min: 1, max: MAX_SUFFIX_TREE_DEPTH, auto: "the proposer's, docs/proposers.md", help: 'deepest suffix matched and copied' },
  { field: 'suffixDecodingMaxCachedRequests', api: 'suffix_decoding_max_cached_requests', type: 'integer', min: 0, max: Number.MAX_SAFE_INTEGER, auto: "the proposer's, docs/proposers.md", help: 'earlier outputs kept in the tree' },
  { field: 'suffixDecodingMaxSpecFactor', api: 'suffix_decoding_max_spec_factor', type: 'number', min: 0, max: MAX_SUFFIX_TREE_DEPTH, auto: "the proposer's, docs/proposers.md", help: 'candidates at most this many times the match length (up to the tree depth)' },
  { field: 'suffixDecodingMaxSpecOffset', api: 'suffix_decoding_max_spec_offset', type: 'number', min: -MAX_SUFFIX_TREE_DEPTH, max: MAX_SUFFIX_TREE_DEPTH, auto: "the proposer's, docs/proposers.md", help: 'plus this many candidates' },
  { field: 'suffixDecodingMinTokenProb', api: 'suffix_decoding_min_token_prob', type: 'number', min: 0, max: 1, auto: "the proposer's, docs/proposers.md", help: 'stop copying below this estimated probability' },
];

/** specdec++'s rule across knobs: k_min <= k_max. */
function checkKRange(spec: Record<string, unknown>): void {
  if ((spec['kMin'] as number) > (spec['kMax'] as number)) throw new PolicySpecError(`k_min must not exceed k_max (${String(spec['kMax'])}), got ${String(spec['kMin'])}`, 'k_min');
}

/** `hybrid`'s rules: specdec++'s, no knob of the draft-free method not chosen, the chosen method's. */
function checkHybrid(spec: Record<string, unknown>): void {
  checkKRange(spec);
  const other = spec['method'] === 'ngram' ? SUFFIX_KNOBS : NGRAM_KNOBS;
  const given = other.find((k) => spec[k.field] !== undefined);
  if (given) throw new PolicySpecError(`${given.api} does not apply to policy hybrid with method ${String(spec['method'])}`, given.api);
  checkDraftFree(hybridParts(spec as unknown as HybridPolicySpec).free);
}

/** The draft-free proposers' checks across knobs (prompt_lookup_min <= prompt_lookup_max, spec factor within the tree depth). */
function checkDraftFree(spec: object): void {
  try {
    new DraftFreeProposer(draftFreeOptions(spec as DraftFreePolicySpec));
  } catch (err) {
    if (err instanceof ProposerOptionError) throw new PolicySpecError(err.message, err.option);
    throw err;
  }
}

/** Every policy specd serves. */
export const POLICIES: readonly PolicyEntry[] = [
  { name: 'none', help: 'target-only decoding, no drafting (the baseline)', needsDraft: false, needsHead: false, knobs: [] },
  {
    name: 'fixed',
    help: 'K draft candidates every round',
    needsDraft: true,
    needsHead: false,
    knobs: [{ field: 'k', api: 'k', type: 'integer', min: 1, max: MAX_DRAFT_LIMIT, default: DEFAULT_FIXED_K, help: 'candidates per round' }],
    shorthand: 'k',
  },
  {
    name: 'confidence',
    help: "draft until the draft's probability of its candidate drops below p_min, dropping that candidate (llama.cpp's rule)",
    needsDraft: true,
    needsHead: false,
    knobs: [
      { field: 'pMin', api: 'p_min', type: 'number', min: 0, max: 1, default: DEFAULT_P_MIN, help: 'stop drafting below this draft probability' },
      kMaxKnob(DEFAULT_CONFIDENCE_K_MAX, 'longest draft'),
    ],
    shorthand: 'p_min',
  },
  {
    name: 'specdec++',
    help: "draft while the acceptance head's P(some candidate is rejected) stays at or below h (SpecDec++, arXiv 2405.19715)",
    needsDraft: true,
    needsHead: true,
    knobs: SPECDEC_KNOBS,
    shorthand: 'threshold',
    check: checkKRange,
  },
  {
    name: 'ngram',
    help: 'prompt lookup: candidates copied from where the last n-gram occurred before (no draft model)',
    needsDraft: false,
    needsHead: false,
    knobs: [...NGRAM_KNOBS, numTokensKnob],
    shorthand: 'num_speculative_tokens',
    check: checkDraftFree,
  },
  {
    name: 'suffix',
    help: 'suffix decoding: candidates from a suffix tree of this and earlier outputs (no draft model)',
    needsDraft: false,
    needsHead: false,
    knobs: [...SUFFIX_KNOBS, numTokensKnob],
    shorthand: 'num_speculative_tokens',
    check: checkDraftFree,
  },
  {
    name: 'hybrid',
    help: 'the draft model under specdec++ against a draft-free proposer (method), per round and sequence: the proposal expected to deliver more is verified',
    needsDraft: true,
    needsHead: true,
    knobs: [
      {
        field: 'method',
        api: 'method',
        type: 'choice',
        min: 0,
        max: 0,
        choices: DRAFT_FREE_METHODS,
        default: DEFAULT_HYBRID_METHOD,
        help: 'the draft-free proposer beside the draft (vLLM\'s method names)',
      },
      ...SPECDEC_KNOBS,
      ...NGRAM_KNOBS,
      ...SUFFIX_KNOBS,
      numTokensKnob,
    ],
    shorthand: 'method',
    check: checkHybrid,
  },
];

export const POLICY_NAMES: readonly PolicyName[] = POLICIES.map((p) => p.name);

/**
 * Names kept for policies still to come, with why they are refused: a request or flag naming one
 * gets that reason, not "unknown policy".
 */
export const RESERVED_POLICY_NAMES: Readonly<Record<string, string>> = {};

/** The entry of a policy name; throws PolicySpecError (knob undefined) for a name the registry does not have. */
export function policyEntry(name: string): PolicyEntry {
  const entry = POLICIES.find((p) => p.name === name);
  if (entry) return entry;
  if (Object.hasOwn(RESERVED_POLICY_NAMES, name)) throw new PolicySpecError(`${RESERVED_POLICY_NAMES[name]}; use one of ${POLICY_NAMES.join(', ')}`);
  throw new PolicySpecError(`unknown policy ${JSON.stringify(name)}; expected one of ${POLICY_NAMES.join(', ')}`);
}

/** Knob API names with the policies that take them, each once (the CLI's flags). */
export function allKnobs(): PolicyKnob[] {
  const seen = new Map<string, PolicyKnob>();
  for (const p of POLICIES) for (const k of p.knobs) if (!seen.has(k.api)) seen.set(k.api, k);
  return [...seen.values()];
}

/** A knob's CLI flag: its API name in kebab-case (`p_min` -> `--p-min`). */
export function knobFlag(knob: Pick<PolicyKnob, 'api'>): string {
  return `--${knob.api.replace(/_/g, '-')}`;
}

/** The knob `NAME:VALUE` sets for a policy, if it takes a value. */
export function shorthandKnob(name: string): PolicyKnob | undefined {
  const entry = policyEntry(name);
  return entry.knobs.find((k) => k.api === entry.shorthand);
}

/** The policies that take a knob, by its API name. */
export function policiesTaking(api: string): PolicyName[] {
  return POLICIES.filter((p) => p.knobs.some((k) => k.api === api)).map((p) => p.name);
}

/** `[lo, hi]` (or a choice knob's values) as a knob's error message writes it. */
export function knobRange(knob: PolicyKnob): string {
  if (knob.type === 'choice') return `one of ${(knob.choices ?? []).join(', ')}`;
  const kind = knob.type === 'integer' ? 'an integer' : 'a number';
  return knob.max === Number.MAX_SAFE_INTEGER ? `${kind} >= ${knob.min}` : `${kind} in [${knob.min}, ${knob.max}]`;
}

/** Throws PolicySpecError naming the knob unless `value` is within its type and range. */
export function checkKnob(knob: PolicyKnob, value: unknown): number | string {
  const ok =
    knob.type === 'choice'
      ? typeof value === 'string' && (knob.choices ?? []).includes(value)
      : typeof value === 'number' && (knob.type === 'integer' ? Number.isInteger(value) : Number.isFinite(value)) && value >= knob.min && value <= knob.max;
  if (!ok) throw new PolicySpecError(`${knob.api} must be ${knobRange(knob)}, got ${JSON.stringify(value) ?? String(value)}`, knob.api);
  return value as number | string;
}

/**
 * A policy's spec from knob values by API name (`{k: 6}`, `{p_min: 0.4, k_max: 12}`); knobs
 * left out (or null) take `base`'s value, else the knob's default. Every knob of the policy is
 * a field of the result (undefined where it has no default: decided later).
 * @throws PolicySpecError naming the knob (its API name in `knob`) that the policy does not take
 *   or that is out of range, or the policy when the name is unknown
 */
export function policyFromKnobs(name: string, knobs: Readonly<Record<string, unknown>> = {}, base?: PolicySpec): PolicySpec {
  const entry = policyEntry(name);
  for (const api of Object.keys(knobs)) {
    if (!entry.knobs.some((k) => k.api === api)) {
      const takes = entry.knobs.length ? `it takes ${entry.knobs.map((k) => k.api).join(', ')}` : 'it takes no knobs';
      throw new PolicySpecError(`${api} does not apply to policy ${name} (${takes})`, api);
    }
  }
  const spec: Record<string, unknown> = { policy: entry.name };
  const from = base?.policy === entry.name ? (base as Record<string, unknown>) : {};
  for (const knob of entry.knobs) {
    const given = knobs[knob.api];
    const value = given ?? from[knob.field] ?? knob.default;
    spec[knob.field] = value === undefined ? undefined : checkKnob(knob, value);
  }
  entry.check?.(spec);
  return spec as PolicySpec;
}

/**
 * Check a spec against the registry (every knob's range, the rules across knobs).
 * @returns the spec itself
 * @throws PolicySpecError naming the bad knob
 */
export function validatePolicySpec(spec: PolicySpec): PolicySpec {
  const entry = policyEntry((spec as { policy: string }).policy);
  const fields = spec as Record<string, unknown>;
  for (const knob of entry.knobs) {
    const value = fields[knob.field];
    if (value === undefined && knob.default === undefined) continue;
    checkKnob(knob, value);
  }
  entry.check?.(fields);
  return spec;
}

/**
 * Parse `NAME` or `NAME:VALUE`, VALUE setting the policy's shorthand knob: `none`, `fixed:4`
 * (k), `confidence:0.6` (p_min), `specdec++:0.7` or `specdec++:auto` (threshold), `ngram:8`,
 * `suffix:16` (num_speculative_tokens), `hybrid:ngram` (method). A bare name has the default knobs: bare `specdec++` is
 * `specdec++:auto`, its threshold from the head and the measured costs.
 * @throws PolicySpecError naming the policy or the knob
 */
export function parsePolicy(text: string): PolicySpec {
  const [name = '', value, extra] = text.trim().split(':');
  if (extra !== undefined) throw new PolicySpecError(`bad policy "${text}": expected NAME or NAME:VALUE`);
  if (value === undefined || value === '') return policyFromKnobs(name);
  const knob = shorthandKnob(name);
  if (!knob) throw new PolicySpecError(`bad policy "${text}": ${name} takes no value`);
  if (value === 'auto' && knob.default === undefined) return policyFromKnobs(name);
  if (knob.type === 'choice') return policyFromKnobs(name, { [knob.api]: value });
  const v = Number(value);
  if (!Number.isFinite(v)) throw new PolicySpecError(`bad policy "${text}": ${knob.api} must be ${knobRange(knob)}`, knob.api);
  return policyFromKnobs(name, { [knob.api]: v });
}

/** What a policy needs loaded. */
export function policyNeeds(spec: Pick<PolicySpec, 'policy'>): { draft: boolean; head: boolean } {
  const entry = policyEntry(spec.policy);
  return { draft: entry.needsDraft, head: entry.needsHead };
}

/** The draft-free policies: candidates copied from the text seen (proposers/), no draft model. */
export type DraftFreePolicySpec = Extract<PolicySpec, { policy: 'ngram' | 'suffix' }>;

export function isDraftFree(spec: PolicySpec): spec is DraftFreePolicySpec {
  return spec.policy === 'ngram' || spec.policy === 'suffix';
}

/** A draft-free spec's knobs as the proposers take them (proposers/draft-free.ts DraftFreeOptions). */
export function draftFreeOptions(spec: DraftFreePolicySpec, vocabSize?: number): DraftFreeOptions {
  const defined = <T extends object>(o: T): Partial<T> => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
  if (spec.policy === 'ngram') {
    const { promptLookupMin, promptLookupMax, numSpeculativeTokens } = spec;
    return { methods: ['ngram'], vocabSize, ngram: defined({ promptLookupMin, promptLookupMax, numSpeculativeTokens }) };
  }
  return {
    methods: ['suffix'],
    vocabSize,
    suffix: defined({
      maxTreeDepth: spec.suffixDecodingMaxTreeDepth,
      maxCachedRequests: spec.suffixDecodingMaxCachedRequests,
      maxSpecFactor: spec.suffixDecodingMaxSpecFactor,
      maxSpecOffset: spec.suffixDecodingMaxSpecOffset,
      minTokenProb: spec.suffixDecodingMinTokenProb,
      numSpeculativeTokens: spec.numSpeculativeTokens,
    }),
  };
}

/** A `hybrid` spec. */
export type HybridPolicySpec = Extract<PolicySpec, { policy: 'hybrid' }>;

/**
 * A `hybrid` spec's two sides: the draft model's policy (specdec++ with its knobs) and the
 * draft-free proposer's (the method with its knobs) that competes with it each round.
 */
export function hybridParts(spec: HybridPolicySpec): { draft: Extract<PolicySpec, { policy: 'specdec++' }>; free: DraftFreePolicySpec } {
  const { threshold, kMin, kMax, numSpeculativeTokens } = spec;
  const free: DraftFreePolicySpec =
    spec.method === 'ngram'
      ? { policy: 'ngram', promptLookupMin: spec.promptLookupMin, promptLookupMax: spec.promptLookupMax, numSpeculativeTokens }
      : {
          policy: 'suffix',
          suffixDecodingMaxTreeDepth: spec.suffixDecodingMaxTreeDepth,
          suffixDecodingMaxCachedRequests: spec.suffixDecodingMaxCachedRequests,
          suffixDecodingMaxSpecFactor: spec.suffixDecodingMaxSpecFactor,
          suffixDecodingMaxSpecOffset: spec.suffixDecodingMaxSpecOffset,
          suffixDecodingMinTokenProb: spec.suffixDecodingMinTokenProb,
          numSpeculativeTokens,
        };
  return { draft: { policy: 'specdec++', threshold, kMin, kMax }, free };
}
