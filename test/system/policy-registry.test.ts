/**
 * The policy registry without a model: `NAME:VALUE` strings, the API's `speculative` field and
 * the CLI's flags all parse through one table, and every error names the knob and its range
 * (the API's `param`, the CLI's flag).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { Command, CommanderError } from 'commander';
import { addPolicyOptions, policyListArg, type PolicyFlags, policySpec } from '../../src/cli/options.js';
import { parseCompareList } from '../../src/bench/serve/configs.js';
import {
  allKnobs,
  DEFAULT_FIXED_K,
  type HybridPolicySpec,
  hybridParts,
  MAX_DRAFT_LIMIT,
  parsePolicy,
  POLICIES,
  POLICY_NAMES,
  policyFromKnobs,
  policyNeeds,
  PolicySpecError,
  validatePolicySpec,
} from '../../src/engine/policy-registry.js';
import { policyLabel } from '../../src/engine/stop-policy.js';
import { ApiError } from '../../src/server/errors.js';
import { requestPolicy, speculativeSchemaProperties } from '../../src/server/speculation.js';
import { SPECD_BIN } from '../support/serve-process.js';

const knobError = (knob: string, text: RegExp) => (e: unknown) => e instanceof PolicySpecError && e.knob === knob && text.test(e.message);

describe('NAME:VALUE strings', () => {
  test('each policy by name, its shorthand knob by value', () => {
    assert.deepEqual(parsePolicy('fixed'), { policy: 'fixed', k: DEFAULT_FIXED_K });
    assert.deepEqual(parsePolicy('fixed:6'), { policy: 'fixed', k: 6 });
    assert.deepEqual(parsePolicy('confidence:0.3'), { policy: 'confidence', pMin: 0.3, kMax: 16 });
    assert.deepEqual(parsePolicy('specdec++:0.7'), { policy: 'specdec++', threshold: 0.7, kMin: 1, kMax: 16 });
    assert.deepEqual(parsePolicy('specdec++:auto'), parsePolicy('specdec++'));
    assert.equal((parsePolicy('specdec++') as { threshold?: number }).threshold, undefined);
    assert.equal((parsePolicy('ngram:8') as { numSpeculativeTokens?: number }).numSpeculativeTokens, 8);
    assert.equal((parsePolicy('suffix:12') as { numSpeculativeTokens?: number }).numSpeculativeTokens, 12);
    assert.deepEqual(parsePolicy(' none '), { policy: 'none' });
  });

  test('every policy round-trips through its label', () => {
    for (const text of ['none', 'fixed:3', 'confidence:0.4', 'specdec++:0.55', 'specdec++']) assert.equal(policyLabel(parsePolicy(text)), text);
  });

  test('errors name the knob and its range', () => {
    assert.throws(() => parsePolicy('fixed:99'), knobError('k', new RegExp(`k must be an integer in \\[1, ${MAX_DRAFT_LIMIT}\\], got 99`)));
    assert.throws(() => parsePolicy('fixed:2.5'), knobError('k', /integer/));
    assert.throws(() => parsePolicy('confidence:1.5'), knobError('p_min', /\[0, 1\]/));
    assert.throws(() => parsePolicy('fixed:x'), knobError('k', /bad policy "fixed:x"/));
    assert.throws(() => parsePolicy('fixed:auto'), knobError('k', /integer in/), 'auto only where the knob is decided later');
    assert.throws(() => parsePolicy('ngram:0'), knobError('num_speculative_tokens', /\[1, 256\]/));
    assert.throws(() => parsePolicy('none:3'), /none takes no value/);
    assert.throws(() => parsePolicy('fixed:1:2'), /NAME or NAME:VALUE/);
    assert.throws(() => parsePolicy('magic'), (e: unknown) => e instanceof PolicySpecError && e.knob === undefined && /unknown policy "magic"; expected one of none, fixed/.test(e.message));
  });

  test('hybrid: its draft-free method by value, specdec++ and the method\'s knobs beside it', () => {
    const bare = parsePolicy('hybrid');
    assert.deepEqual(
      Object.fromEntries(Object.entries(bare).filter(([, v]) => v !== undefined)),
      { policy: 'hybrid', method: 'suffix', kMin: 1, kMax: 16 },
    );
    assert.equal((parsePolicy('hybrid:ngram') as { method: string }).method, 'ngram');
    assert.deepEqual(hybridParts(policyFromKnobs('hybrid', { method: 'ngram', threshold: 0.6, k_max: 8, prompt_lookup_max: 9 }) as HybridPolicySpec), {
      draft: { policy: 'specdec++', threshold: 0.6, kMin: 1, kMax: 8 },
      free: { policy: 'ngram', promptLookupMin: undefined, promptLookupMax: 9, numSpeculativeTokens: undefined },
    });
    for (const text of ['hybrid', 'hybrid:ngram']) assert.equal(policyLabel(parsePolicy(text)), text);
    assert.ok(POLICY_NAMES.includes('hybrid'));
    assert.deepEqual(policyNeeds({ policy: 'hybrid' }), { draft: true, head: true });
  });

  test('hybrid\'s errors name the knob', () => {
    assert.throws(() => parsePolicy('hybrid:eagle'), knobError('method', /method must be one of ngram, suffix, got "eagle"/));
    assert.throws(() => policyFromKnobs('hybrid', { method: 'suffix', prompt_lookup_min: 3 }), knobError('prompt_lookup_min', /prompt_lookup_min does not apply to policy hybrid with method suffix/));
    assert.throws(() => policyFromKnobs('hybrid', { method: 'ngram', suffix_decoding_min_token_prob: 0.2 }), knobError('suffix_decoding_min_token_prob', /with method ngram/));
    assert.throws(() => policyFromKnobs('hybrid', { k_min: 5, k_max: 3 }), knobError('k_min', /k_min must not exceed k_max/));
    assert.throws(() => policyFromKnobs('hybrid', { method: 'ngram', prompt_lookup_min: 6, prompt_lookup_max: 3 }), knobError('prompt_lookup_min', /must not exceed/));
    assert.throws(() => policyFromKnobs('hybrid', { threshold: 1.5 }), knobError('threshold', /\[0, 1\]/));
    assert.throws(() => policyFromKnobs('hybrid', { method: 3 }), knobError('method', /one of ngram, suffix, got 3/));
  });

  test('--policies lists and bench serve --compare entries parse the same way', () => {
    assert.deepEqual(policyListArg('none, fixed:4,specdec++'), [parsePolicy('none'), parsePolicy('fixed:4'), parsePolicy('specdec++')]);
    assert.throws(() => policyListArg('none,fixed:40'), /k must be an integer in \[1, 32\]/);
    const compare = parseCompareList('ngram:8,specdec++:auto,confidence:0.5,hybrid:ngram,hybrid');
    assert.deepEqual(compare.map((c) => c.serverFlags), [
      ['--policy', 'ngram', '--num-speculative-tokens', '8'],
      ['--policy', 'specdec++', '--threshold', 'auto'],
      ['--policy', 'confidence', '--p-min', '0.5'],
      ['--policy', 'hybrid', '--method', 'ngram'],
      ['--policy', 'hybrid'],
    ]);
    assert.deepEqual(compare.map((c) => c.speculative), [
      { policy: 'ngram', num_speculative_tokens: 8 },
      { policy: 'specdec++', threshold: null },
      { policy: 'confidence', p_min: 0.5 },
      { policy: 'hybrid', method: 'ngram' },
      { policy: 'hybrid' },
    ]);
  });
});

describe('the table', () => {
  test('what each policy needs loaded', () => {
    assert.deepEqual(policyNeeds({ policy: 'none' }), { draft: false, head: false });
    assert.deepEqual(policyNeeds({ policy: 'fixed' }), { draft: true, head: false });
    assert.deepEqual(policyNeeds({ policy: 'specdec++' }), { draft: true, head: true });
    assert.deepEqual(policyNeeds({ policy: 'ngram' }), { draft: false, head: false });
    assert.deepEqual(policyNeeds({ policy: 'suffix' }), { draft: false, head: false });
  });

  test('knobs across policies: k_min above k_max, prompt_lookup_min above prompt_lookup_max', () => {
    assert.throws(() => policyFromKnobs('specdec++', { k_min: 5, k_max: 3 }), knobError('k_min', /k_min must not exceed k_max \(3\), got 5/));
    assert.throws(() => policyFromKnobs('ngram', { prompt_lookup_min: 6, prompt_lookup_max: 3 }), knobError('prompt_lookup_min', /must not exceed/));
    assert.throws(() => policyFromKnobs('suffix', { suffix_decoding_max_tree_depth: 8, suffix_decoding_max_spec_factor: 9 }), knobError('suffix_decoding_max_spec_factor', /\[0, 8\]/));
    assert.throws(() => validatePolicySpec({ policy: 'specdec++', threshold: 1.5, kMin: 1, kMax: 4 }), knobError('threshold', /\[0, 1\]/));
    assert.throws(() => validatePolicySpec({ policy: 'fixed', k: 0 }), knobError('k', /\[1, 32\]/));
  });

  test('a knob of another policy is refused naming it and what the policy takes', () => {
    assert.throws(() => policyFromKnobs('fixed', { p_min: 0.5 }), knobError('p_min', /p_min does not apply to policy fixed \(it takes k\)/));
    assert.throws(() => policyFromKnobs('none', { k: 2 }), knobError('k', /it takes no knobs/));
  });

  test('knobs left out keep the base policy\'s values when it is the same policy', () => {
    const base = parsePolicy('confidence:0.3');
    assert.deepEqual(policyFromKnobs('confidence', { k_max: 5 }, base), { policy: 'confidence', pMin: 0.3, kMax: 5 });
    assert.deepEqual(policyFromKnobs('fixed', {}, base), { policy: 'fixed', k: DEFAULT_FIXED_K });
  });

  test('the request schema admits exactly the registry\'s knobs, typed', () => {
    const properties = speculativeSchemaProperties();
    assert.deepEqual(Object.keys(properties).sort(), ['policy', ...allKnobs().map((k) => k.api)].sort());
    for (const p of POLICIES) for (const k of p.knobs) assert.equal(properties[k.api]!.type, k.type === 'choice' ? 'string' : k.type, k.api);
    assert.equal(properties['method']!.type, 'string');
  });
});

describe('the speculative request field', () => {
  const server = parsePolicy('fixed:4');
  const refusal = (param: string, text: RegExp) => (e: unknown) => e instanceof ApiError && e.status === 400 && e.param === param && text.test(e.message);

  test('a policy and knobs over the server default', () => {
    assert.deepEqual(requestPolicy({ k: 2 }, server), { policy: 'fixed', k: 2 });
    assert.deepEqual(requestPolicy({ policy: 'suffix', num_speculative_tokens: 9 }, server), { ...parsePolicy('suffix'), numSpeculativeTokens: 9 });
    assert.deepEqual(requestPolicy({ policy: 'specdec++', threshold: null }, server), parsePolicy('specdec++'));
    assert.deepEqual(requestPolicy({ policy: 'hybrid', method: 'ngram', k_max: 6 }, server), policyFromKnobs('hybrid', { method: 'ngram', k_max: 6 }));
  });

  test('errors give the param of the knob and its range', () => {
    assert.throws(() => requestPolicy({ policy: 'fixed', k: 99 }, server), refusal('speculative.k', /Invalid 'speculative.k': k must be an integer in \[1, 32\], got 99\./));
    assert.throws(() => requestPolicy({ policy: 'magic' }, server), refusal('speculative.policy', /unknown policy "magic"/));
    assert.throws(() => requestPolicy({ policy: 'hybrid', method: 'eagle' }, server), refusal('speculative.method', /method must be one of ngram, suffix/));
    assert.throws(() => requestPolicy({ policy: 'hybrid', prompt_lookup_max: 4 }, server), refusal('speculative.prompt_lookup_max', /does not apply to policy hybrid with method suffix/));
    assert.throws(() => requestPolicy({ policy: 'fixed', p_min: 0.5 }, server), refusal('speculative.p_min', /does not apply to policy fixed/));
    assert.throws(() => requestPolicy({ policy: 'ngram', prompt_lookup_min: 65 }, server), refusal('speculative.prompt_lookup_min', /\[1, 64\]/));
    // The server's k_min does not fit the request's k_max: the field as a whole.
    assert.throws(() => requestPolicy({ k_max: 2 }, policyFromKnobs('specdec++', { k_min: 3 })), refusal('speculative', /k_min must not exceed k_max/));
  });
});

describe('CLI flags', () => {
  /** The flags as `specd serve` / `specd generate` parse them. */
  function flags(args: string[]): PolicyFlags {
    const cmd = addPolicyOptions(new Command()).exitOverride().configureOutput({ writeErr: () => {} });
    cmd.parse(args, { from: 'user' });
    return cmd.opts<PolicyFlags>();
  }

  test('one flag per knob of the registry', () => {
    const cmd = addPolicyOptions(new Command());
    const long = cmd.options.map((o) => o.long);
    for (const k of allKnobs()) assert.ok(long.includes(`--${k.api.replace(/_/g, '-')}`), k.api);
  });

  test('--policy and its knobs', () => {
    assert.deepEqual(policySpec(flags(['--policy', 'fixed', '--k', '6'])), { policy: 'fixed', k: 6 });
    assert.deepEqual(policySpec(flags(['--policy', 'specdec++', '--threshold', 'auto', '--k-max', '8'])), { policy: 'specdec++', threshold: undefined, kMin: 1, kMax: 8 });
    assert.equal((policySpec(flags(['--policy', 'suffix', '--suffix-decoding-max-tree-depth', '24'])) as { suffixDecodingMaxTreeDepth?: number }).suffixDecodingMaxTreeDepth, 24);
    assert.deepEqual(policySpec(flags(['--policy', 'hybrid', '--method', 'ngram', '--threshold', '0.5', '--prompt-lookup-max', '7'])), policyFromKnobs('hybrid', { method: 'ngram', threshold: 0.5, prompt_lookup_max: 7 }));
  });

  test('without --policy, knob flags of other policies are left for the default to ignore', () => {
    assert.deepEqual(policySpec(flags(['--k', '2', '--p-min', '0.1']), 'fixed'), { policy: 'fixed', k: 2 });
  });

  test('errors name the flag and its range', () => {
    assert.throws(() => flags(['--k', '99']), (e: unknown) => e instanceof CommanderError && /--k <n>.*expected an integer in \[1, 32\]/.test(e.message));
    assert.throws(() => flags(['--threshold', '2']), (e: unknown) => e instanceof CommanderError && /expected auto or a number in \[0, 1\]/.test(e.message));
    assert.throws(() => policySpec(flags(['--policy', 'fixed', '--p-min', '0.3'])), /--p-min does not apply to --policy fixed \(it takes --k\)/);
    assert.throws(() => policySpec(flags(['--policy', 'specdec++', '--k-min', '5', '--k-max', '3'])), /^InvalidArgumentError: --k-min: k_min must not exceed k_max/);
    assert.throws(() => policySpec(flags(['--policy', 'turbo'])), /--policy: unknown policy "turbo"/);
    assert.throws(() => flags(['--method', 'eagle']), (e: unknown) => e instanceof CommanderError && /--method <name>.*expected one of ngram, suffix/.test(e.message));
    assert.throws(() => policySpec(flags(['--policy', 'hybrid', '--suffix-decoding-min-token-prob', '0.2', '--method', 'ngram'])), /^InvalidArgumentError: --suffix-decoding-min-token-prob: suffix_decoding_min_token_prob does not apply to policy hybrid with method ngram/);
    assert.throws(() => policySpec(flags(['--policy', 'fixed', '--method', 'ngram'])), /--method does not apply to --policy fixed/);
  });

  test('specd generate refuses a bad knob in one line and exit 1, before loading models', () => {
    for (const [args, text] of [
      [['--policy', 'none', '--k', '3'], /--k does not apply to --policy none \(it takes no knobs\)/],
      [['--policy', 'hybrid', '--method', 'ngram', '--suffix-decoding-max-tree-depth', '8'], /--suffix-decoding-max-tree-depth: suffix_decoding_max_tree_depth does not apply to policy hybrid with method ngram/],
      [['--policy', 'hybrid', '--method', 'eagle'], /--method <name>.*expected one of ngram, suffix/],
    ] as const) {
      const run = spawnSync(process.execPath, [SPECD_BIN, 'generate', '--prompt', 'x', ...args], { encoding: 'utf8', timeout: 60_000 });
      assert.equal(run.status, 1, run.stderr);
      assert.equal(run.stderr.trim().split('\n').length, 1, run.stderr);
      assert.match(run.stderr, text);
    }
  });
});
