/**
 * Constrained decoding under speculation: greedy output with a grammar is identical for every
 * policy (and with jump-forward on or off) and validates against its schema; sampled output with
 * a grammar is distributed as the masked target's (chi-square against the exact masked joint on
 * a small-vocabulary fixture pair, jump-forward included); grammars that cannot compile are
 * errors naming the reason; no grammar leaves rows untouched.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Ajv } from 'ajv';
import { LogitsProcessor } from '../../src/engine/logits-processors.js';
import { ModelPair } from '../../src/pair/model-pair.js';
import { SpeculativeDecoder } from '../../src/engine/speculative.js';
import { GREEDY, toProbs, type SamplingParams } from '../../src/engine/sampling.js';
import { policyLabel, type PolicySpec } from '../../src/engine/stop-policy.js';
import { GrammarError, type GrammarSpec } from '../../src/grammar/compiler.js';
import { writeFixturePair } from '../../src/testing/decoder-fixture.js';
import { PACKAGE_ROOT } from '../../src/paths.js';
import { chiSquare } from '../support/statistics.js';

const SCHEMAS: Record<string, object> = {
  person: {
    type: 'object',
    properties: { name: { type: 'string' }, age: { type: 'integer' }, city: { type: 'string' } },
    required: ['name', 'age', 'city'],
    additionalProperties: false,
  },
  order: {
    type: 'object',
    properties: {
      status: { enum: ['open', 'paid', 'shipped'] },
      items: { type: 'array', items: { type: 'object', properties: { sku: { type: 'string' }, qty: { type: 'integer' } }, required: ['sku', 'qty'] }, maxItems: 3 },
      total: { type: 'number' },
    },
    required: ['status', 'items', 'total'],
    additionalProperties: false,
  },
};

const POLICIES: PolicySpec[] = [
  { policy: 'none' },
  { policy: 'fixed', k: 1 },
  { policy: 'fixed', k: 3 },
  { policy: 'fixed', k: 6 },
  { policy: 'confidence', pMin: 0.5, kMax: 8 },
  { policy: 'specdec++', kMin: 1, kMax: 16 },
];

describe('greedy constrained decoding is exact under speculation (bundled pair)', () => {
  let pair: ModelPair;
  before(async () => {
    pair = await ModelPair.load({ threads: 1 });
  });
  after(async () => {
    await pair?.release();
  });

  const prompts = [
    'Extract the person as JSON: Maria Lopez, 34, lives in Madrid.',
    'Return the order as JSON: two boxes of tea (sku T-1), paid, 12.50 in total.',
  ];
  for (const [name, schema] of Object.entries(SCHEMAS)) {
    test(`schema "${name}": every policy gives the constrained target-only output, which validates`, async (t) => {
      const grammars = await pair.grammars();
      const spec: GrammarSpec = { type: 'json_schema', schema: JSON.stringify(schema) };
      const validate = new Ajv().compile(schema);
      for (const content of prompts) {
        const prompt = pair.tokenizer.encodeChat([{ role: 'user', content }]);
        let reference: number[] | undefined;
        for (const policy of POLICIES) {
          for (const jumpForward of policy.policy === 'none' ? [true] : [true, false]) {
            const constraint = await grammars.constraint(spec);
            const g = pair.decoder.start(prompt, { maxTokens: 160, sampling: GREEDY, policy, constraint, jumpForward });
            const tokens = [...(await g.run())];
            const label = `${name}, ${policyLabel(policy)}${jumpForward ? '' : ' without jump-forward'}`;
            if (reference === undefined) {
              reference = tokens;
              const text = pair.tokenizer.decode(tokens, { skipSpecialTokens: true });
              t.diagnostic(`${label}: ${g.finishReason} ${text}`);
              if (g.finishReason === 'stop') assert.ok(validate(JSON.parse(text)), `${label}: ${text} fails the schema: ${JSON.stringify(validate.errors)}`);
              else assert.equal(g.finishReason, 'length');
            } else {
              assert.deepEqual(tokens, reference, `${label} differs from target-only decoding`);
            }
            if (policy.policy !== 'none') assert.ok(g.stats.draft_tokens > 0, `${label} drafted`);
          }
        }
      }
    });
  }

  test('the grammar\'s end ends the output even when EOS is ignored', async () => {
    const grammars = await pair.grammars();
    const schema = { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'], additionalProperties: false };
    const constraint = await grammars.constraint({ type: 'json_schema', schema: JSON.stringify(schema) });
    const prompt = pair.tokenizer.encodeChat([{ role: 'user', content: 'Is it fine?' }]);
    const g = pair.decoder.start(prompt, { maxTokens: 100, sampling: GREEDY, policy: { policy: 'fixed', k: 4 }, constraint, eosTokenIds: [] });
    await g.run();
    assert.equal(g.finishReason, 'stop');
    assert.deepEqual(Object.keys(JSON.parse(pair.tokenizer.decode(g.tokenIds))), ['ok']);
  });

  test('without a grammar, rows pass through untouched (no copy, no mask)', () => {
    const p = new LogitsProcessor();
    const row = new Float32Array([1, 2, 3]);
    assert.equal(p.apply(row, [1, 2]), row);
    assert.equal(p.prepare([1]), undefined);
  });

  test('compiled grammars are cached; schemas xgrammar cannot compile are errors naming the reason', async () => {
    const grammars = await pair.grammars();
    const spec: GrammarSpec = { type: 'json_schema', schema: JSON.stringify(SCHEMAS.person) };
    await grammars.compile(spec);
    const cached = grammars.cached;
    const again = performance.now();
    await grammars.compile(spec);
    assert.ok(performance.now() - again < 5, 'a cached grammar compiles at once');
    assert.equal(grammars.cached, cached);
    await assert.rejects(grammars.compile({ type: 'json_schema', schema: '{"type": "foo"}' }), (err: Error) => err instanceof GrammarError && /Unsupported type "foo"/.test(err.message));
    await assert.rejects(grammars.compile({ type: 'json_schema', schema: JSON.stringify({ type: 'string', pattern: '(?<=a)b' }) }), (err: Error) => err instanceof GrammarError && /[Ll]ookbehind/.test(err.message));
    await assert.rejects(grammars.compile({ type: 'ebnf', grammar: 'root ::= missing' }), GrammarError);
    // The compiler still works after refusing those.
    const constraint = await grammars.constraint({ type: 'json_object' });
    await constraint.prepare([]);
    assert.equal(constraint.forcedToken([]), pair.tokenizer.encode('{')[0]);
    constraint.release();
  });
});

// ---- sampled output with a grammar -------------------------------------------------------------

const VOCAB = 12; // specials 0-3, then ' ', '\n', 'e', 't', 'a', 'o', 'i', 'n'
const PROMPT = [1, 4, 10];
/** First token one of t/a/o, then a forced "e", then one of n/o/space/t, then the end. */
const GRAMMAR = 'root ::= [tao] "e" [no t]';
const FIRST = [7, 8, 9];
const FORCED = 6;
const LAST = [11, 9, 4, 7];
const GENERATIONS = 3000;
/** Accept the chi-square test when its p-value exceeds this (as in engine-distribution.test.ts). */
const ALPHA = 1e-4;

describe('speculative sampling with a grammar matches the masked target (fixture pair, vocab 12)', () => {
  let root: string;
  let pair: ModelPair;
  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'specd-grammar-'));
    const p = writeFixturePair(root, { style: 'llama', vocabSize: VOCAB });
    pair = await ModelPair.load({ target: p.targetDir, draft: p.draftDir, threads: 1, draftThreads: 1 });
  });
  after(async () => {
    await pair?.release();
    rmSync(root, { recursive: true, force: true });
  });

  /** The masked target's exact distribution of (first, last) token: index i * LAST.length + j. */
  async function maskedJoint(params: SamplingParams): Promise<Float64Array> {
    const target = pair.target;
    const last = async (ids: number[], allowed: number[]) => {
      const logits = await target.forward(target.newCache(), ids);
      const row = Float32Array.from(logits.subarray(logits.length - VOCAB));
      for (let t = 0; t < VOCAB; t++) if (!allowed.includes(t)) row[t] = -Infinity;
      return toProbs(row, params);
    };
    const p1 = await last(PROMPT, FIRST);
    const joint = new Float64Array(FIRST.length * LAST.length);
    for (const [i, a] of FIRST.entries()) {
      const p3 = await last([...PROMPT, a, FORCED], LAST);
      for (const [j, b] of LAST.entries()) joint[i * LAST.length + j] = p1[a]! * p3[b]!;
    }
    return joint;
  }

  const cases: { spec: PolicySpec; params: SamplingParams; jumpForward: boolean }[] = [
    { spec: { policy: 'fixed', k: 3 }, params: { temperature: 1, topK: 0, topP: 1 }, jumpForward: true },
    { spec: { policy: 'fixed', k: 1 }, params: { temperature: 1, topK: 0, topP: 1 }, jumpForward: false },
    { spec: { policy: 'fixed', k: 2 }, params: { temperature: 0.8, topK: 3, topP: 0.95 }, jumpForward: true },
  ];
  for (const { spec, params, jumpForward } of cases) {
    const label = `${policyLabel(spec)}, T=${params.temperature} top_k=${params.topK} top_p=${params.topP}${jumpForward ? ', jump-forward' : ''}`;
    test(label, async (t) => {
      const grammars = await pair.grammars();
      const expected = await maskedJoint(params);
      const counts = new Float64Array(expected.length);
      let drafted = 0;
      let accepted = 0;
      for (let seed = 0; seed < GENERATIONS; seed++) {
        const constraint = await grammars.constraint({ type: 'ebnf', grammar: GRAMMAR });
        const g = pair.decoder.start(PROMPT, { maxTokens: 5, sampling: params, seed, policy: spec, constraint, jumpForward });
        const out = await g.run();
        assert.equal(g.finishReason, 'stop', `seed ${seed}: the grammar ends the output (${out})`);
        assert.equal(out.length, 3);
        assert.equal(out[1], FORCED);
        counts[FIRST.indexOf(out[0]!) * LAST.length + LAST.indexOf(out[2]!)]!++;
        drafted += g.stats.draft_tokens;
        accepted += g.stats.accepted_tokens;
      }
      const r = chiSquare(counts, expected);
      t.diagnostic(`${label}: chi2 ${r.stat.toFixed(2)}, dof ${r.dof}, p ${r.pValue.toExponential(2)}; drafted ${drafted}, accepted ${accepted}`);
      assert.ok(drafted - accepted > 0.05 * GENERATIONS, 'candidates were rejected often');
      assert.equal(r.impossible, 0);
      assert.ok(r.pValue > ALPHA, `${label}: output differs from the masked target's distribution`);
    });
  }

  test('the test has power: the masked draft sampled alone does not fit the masked target', async (t) => {
    const params: SamplingParams = { temperature: 1, topK: 0, topP: 1 };
    const expected = await maskedJoint(params);
    const grammars = await pair.grammars();
    const draftOnly = new SpeculativeDecoder(pair.draft!);
    const counts = new Float64Array(expected.length);
    for (let seed = 0; seed < GENERATIONS; seed++) {
      const constraint = await grammars.constraint({ type: 'ebnf', grammar: GRAMMAR });
      const out = await draftOnly.start(PROMPT, { maxTokens: 5, sampling: params, seed, policy: { policy: 'none' }, constraint }).run();
      counts[FIRST.indexOf(out[0]!) * LAST.length + LAST.indexOf(out[2]!)]!++;
    }
    const r = chiSquare(counts, expected);
    t.diagnostic(`masked draft alone: chi2 ${r.stat.toFixed(2)}, dof ${r.dof}, p ${r.pValue.toExponential(2)}`);
    assert.ok(r.pValue < ALPHA, 'the statistic does not tell the masked draft from the masked target');
  });
});

describe('specd generate --json-schema', () => {
  const cli = join(PACKAGE_ROOT, 'bin', 'specd.js');
  const schema = { type: 'object', properties: { name: { type: 'string', maxLength: 20 }, age: { type: 'integer', minimum: 0, maximum: 120 } }, required: ['name', 'age'], additionalProperties: false };
  const generate = (...args: string[]) => spawnSync(process.execPath, [cli, 'generate', '--prompt', 'Maria is 34 and lives in Madrid.', '--temperature', '0', '--threads', '1', ...args], { encoding: 'utf8' });

  test('prints JSON valid against the schema', () => {
    const run = generate('--json-schema', JSON.stringify(schema), '--json');
    assert.equal(run.status, 0, run.stderr);
    const out = JSON.parse(run.stdout) as { text: string; finish_reason: string };
    assert.equal(out.finish_reason, 'stop');
    assert.ok(new Ajv().validate(schema, JSON.parse(out.text)), out.text);
  });

  test('a schema it cannot enforce or compile: one line naming the reason, exit 1', () => {
    for (const [bad, reason] of [
      [{ type: 'foo' }, /Unsupported type "foo"/],
      [{ type: 'number', maximum: 3 }, /'maximum' \(at #\/maximum\)/],
    ] as const) {
      const run = generate('--json-schema', JSON.stringify(bad));
      assert.notEqual(run.status, 0);
      assert.match(run.stderr, reason);
      assert.equal(run.stderr.trim().split('\n').length, 1, run.stderr);
    }
  });
});
