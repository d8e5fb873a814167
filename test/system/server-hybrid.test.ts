/**
 * Policy `hybrid` through the server with the bundled pair and its head, via the real openai
 * client on a real port: `--policy hybrid` as the server's default and `hybrid` with either
 * draft-free method and knobs through the `speculative` request field; greedy output equals
 * `none`'s; bad knobs are OpenAI errors naming the field. `specd bench offline --policies` runs
 * hybrid entries beside none with the same output; bad entries are one line and exit 1.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';
import type { OfflineResult } from '../../src/bench/offline.js';
import { parsePrometheusText, sumSamples } from '../../src/bench/serve/prometheus-text.js';
import { SPECD_BIN, startServe, type ServeProcess } from '../support/serve-process.js';

const MODEL = 'specd-pair-target';
const NO_EOS = { '256': -100, '258': -100 };
const CODE = 'def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n';
const PROMPT = `Repeat this code exactly.\n${CODE}\nRepeat this code exactly.\n${CODE}`;

interface MethodUsage {
  num_drafts: number;
  num_draft_tokens: number;
  num_accepted_tokens: number;
  num_accepted_tokens_per_pos: number[];
}

interface SpeculativeUsage {
  policy: string;
  rounds: number;
  draft_tokens: number;
  accepted_tokens: number;
  methods: Partial<Record<'draft' | 'ngram' | 'suffix', MethodUsage>>;
}

describe('policy hybrid through the server (draft model, head and a draft-free proposer)', () => {
  let server: ServeProcess;
  let client: OpenAI;
  before(async () => {
    server = await startServe(['--threads', '1', '--policy', 'hybrid']);
    client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  });
  after(async () => {
    await server?.stop();
  });

  const complete = (speculative?: Record<string, unknown>, prompt = PROMPT) =>
    client.completions.create({ model: MODEL, prompt, max_tokens: 48, temperature: 0, logit_bias: NO_EOS, ...(speculative ? { speculative } : {}) } as OpenAI.CompletionCreateParamsNonStreaming);
  const usageOf = (r: OpenAI.Completion) => (r.usage as OpenAI.CompletionUsage & { speculative: SpeculativeUsage }).speculative;

  test('greedy output of hybrid (the server default, suffix and ngram with knobs) equals none; candidates are accepted', async () => {
    for (const prompt of [PROMPT, 'The capital of France is']) {
      const none = await complete({ policy: 'none' }, prompt);
      assert.equal(usageOf(none).draft_tokens, 0);
      for (const speculative of [undefined, { policy: 'hybrid', method: 'suffix' }, { policy: 'hybrid', method: 'ngram', prompt_lookup_min: 3, prompt_lookup_max: 8, k_max: 6, threshold: 0.6 }]) {
        const res = await complete(speculative, prompt);
        assert.equal(res.choices[0]!.text, none.choices[0]!.text, JSON.stringify(speculative));
        const spec = usageOf(res);
        assert.equal(spec.policy, speculative?.method === 'ngram' ? 'hybrid:ngram' : 'hybrid');
        assert.ok(spec.draft_tokens > 0 && spec.accepted_tokens > 0, `${JSON.stringify(speculative)}: ${spec.accepted_tokens} of ${spec.draft_tokens}`);
      }
    }
  });

  test('usage.speculative and /metrics count the draft\'s and the draft-free proposer\'s rounds apart', async () => {
    const scrape = async () => parsePrometheusText(await (await fetch(`${server.url}/metrics`)).text());
    for (const method of ['suffix', 'ngram'] as const) {
      const before = await scrape();
      const spec = usageOf(await complete({ policy: 'hybrid', method }));
      const after = await scrape();
      const delta = (name: string, match: Record<string, string>) => sumSamples(after, `specd_spec_decode_method_${name}`, match) - sumSamples(before, `specd_spec_decode_method_${name}`, match);
      assert.deepEqual(Object.keys(spec.methods).sort(), ['draft', method], `${method}: both sides verified candidates`);
      const all = Object.values(spec.methods);
      assert.equal(all.reduce((n, m) => n + m.num_draft_tokens, 0), spec.draft_tokens);
      assert.equal(all.reduce((n, m) => n + m.num_accepted_tokens, 0), spec.accepted_tokens);
      assert.ok(all.reduce((n, m) => n + m.num_drafts, 0) <= spec.rounds);
      for (const [name, m] of Object.entries(spec.methods)) {
        assert.equal(m.num_accepted_tokens_per_pos.reduce((a, b) => a + b, 0), m.num_accepted_tokens, name);
        assert.equal(m.num_accepted_tokens_per_pos[0] ?? 0, delta('num_accepted_tokens_per_pos_total', { method: name, position: '0' }), name);
        assert.deepEqual(
          [delta('num_drafts_total', { method: name }), delta('num_draft_tokens_total', { method: name }), delta('num_accepted_tokens_total', { method: name })],
          [m.num_drafts, m.num_draft_tokens, m.num_accepted_tokens],
          `${name}: /metrics moved as the usage says`,
        );
      }
    }
    const none = usageOf(await complete({ policy: 'none' }));
    assert.deepEqual(none.methods, {});
  });

  test('bad knobs are 400s naming the field', async () => {
    const fails = (speculative: Record<string, unknown>, param: string, message: RegExp) =>
      assert.rejects(complete(speculative), (e: InstanceType<typeof OpenAI.APIError>) => e.status === 400 && (e.error as { param: string }).param === param && message.test(e.message));
    await fails({ policy: 'hybrid', method: 'eagle' }, 'speculative.method', /method must be one of ngram, suffix/);
    await fails({ policy: 'hybrid', method: 'ngram', suffix_decoding_max_tree_depth: 8 }, 'speculative.suffix_decoding_max_tree_depth', /does not apply to policy hybrid with method ngram/);
    await fails({ policy: 'hybrid', k_min: 9, k_max: 4 }, 'speculative.k_min', /k_min must not exceed k_max/);
    await fails({ policy: 'hybrid', p_min: 0.5 }, 'speculative.p_min', /does not apply to policy hybrid/);
    await fails({ method: 7 }, 'speculative.method', /'speculative.method': expected a string/);
  });
});

describe('policy hybrid in specd bench offline and on the CLI', () => {
  const specd = (args: string[]) => spawnSync(process.execPath, [SPECD_BIN, ...args], { encoding: 'utf8', timeout: 300_000 });

  test('hybrid entries beside none on the edit set: the same output, candidates from both sides', () => {
    const dir = mkdtempSync(join(tmpdir(), 'specd-hybrid-bench-'));
    try {
      const json = join(dir, 'bench.json');
      const run = specd(['bench', 'offline', '--dataset', 'edit', '--prompts', '2', '--max-tokens', '24', '--threads', '1', '--policies', 'none,hybrid,hybrid:ngram', '--json', json]);
      assert.equal(run.status, 0, run.stderr);
      const { results } = JSON.parse(readFileSync(json, 'utf8')) as { results: OfflineResult[] };
      assert.deepEqual(results.map((r) => r.policy), ['none', 'hybrid', 'hybrid:ngram']);
      for (const r of results) assert.equal(r.matches_none, true, `${r.policy}: greedy output equals none's`);
      for (const r of results.slice(1)) assert.ok(r.draft_tokens > 0 && r.accepted_tokens > 0, `${r.policy}: ${r.accepted_tokens} of ${r.draft_tokens}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('what hybrid cannot run is one line and exit 1', () => {
    for (const [args, text] of [
      [['bench', 'offline', '--policies', 'none,hybrid:eagle'], /method must be one of ngram, suffix, got "eagle"/],
      [['generate', '--prompt', 'x', '--no-draft', '--policy', 'hybrid'], /--policy hybrid needs a draft model/],
    ] as const) {
      const run = specd([...args]);
      assert.equal(run.status, 1, run.stderr);
      assert.equal(run.stderr.trim().split('\n').length, 1, run.stderr);
      assert.match(run.stderr, text);
    }
  });
});
