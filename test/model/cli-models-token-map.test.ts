/**
 * `specd models token-map` and `--speculative-token-map` through the command line: the map is
 * the most frequent tokens of the counted prompts with the special and end-of-sequence tokens
 * added, written where asked (by default into the model's directory, where a draft then uses
 * it); `specd generate` with a map gives target-only decoding's greedy text; bad input is one
 * line on stderr and exit 1.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { loadPrompts } from '../../src/bench/datasets.js';
import { readModelDir } from '../../src/engine/model-dir.js';
import { BUNDLED_DRAFT, BUNDLED_TARGET, PACKAGE_ROOT } from '../../src/paths.js';
import { TextTokenizer } from '../../src/text/tokenizer.js';

const cli = join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js');
const root = mkdtempSync(join(tmpdir(), 'specd-token-map-'));
after(() => rmSync(root, { recursive: true, force: true }));
const specd = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
const oneLineError = (run: ReturnType<typeof specd>, pattern: RegExp) => {
  assert.equal(run.status, 1, run.stderr);
  assert.match(run.stderr, pattern);
  assert.equal(run.stderr.trim().split('\n').length, 1, run.stderr);
};

describe('specd models token-map', () => {
  test('the most frequent tokens of the counted prompts plus the special tokens, ascending', async () => {
    const out = join(root, 'gsm8k.json');
    const run = specd('models', 'token-map', BUNDLED_TARGET, '--size', '60', '--dataset', 'gsm8k', '--out', out);
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stderr, /wrote .*gsm8k\.json: 60 of 259 tokens, covering \d+\.\d% of the counted tokens/);
    const file = JSON.parse(readFileSync(out, 'utf8')) as { format: string; token_ids: number[]; vocab_size: number; source: string };
    assert.equal(file.format, 'specd-token-map');
    assert.equal(file.vocab_size, 259);
    assert.match(file.source, /gsm8k prompts \(\d+ tokens\)/);
    assert.deepEqual(file.token_ids, [...file.token_ids].sort((a, b) => a - b));
    // Recount: the specials and EOS, then the most frequent ids.
    const tokenizer = await TextTokenizer.fromDir(BUNDLED_TARGET);
    const always = new Set([...tokenizer.specialTokenIds, ...readModelDir(BUNDLED_TARGET).eosTokenIds]);
    const counts = new Map<number, number>();
    for (const p of loadPrompts('gsm8k', Number.MAX_SAFE_INTEGER)) for (const id of tokenizer.encode(p.messages[0]!.content as string)) counts.set(id, (counts.get(id) ?? 0) + 1);
    const ranked = [...counts].sort((a, b) => b[1] - a[1] || a[0] - b[0]).map(([id]) => id).filter((id) => !always.has(id));
    const expected = [...always, ...ranked.slice(0, 60 - always.size)].sort((a, b) => a - b);
    assert.deepEqual(file.token_ids, expected);
  });

  test("by default written into the model's directory, where a draft uses it; specd generate stays exact", () => {
    const draft = join(root, 'draft');
    cpSync(BUNDLED_DRAFT, draft, { recursive: true });
    const run = specd('models', 'token-map', draft, '--size', '120', '--generate', '8', '--prompts', '1', '--threads', '1');
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stderr, /token_map\.json: 120 of 259 tokens, .* of the outputs/);
    const args = ['generate', '--target', BUNDLED_TARGET, '--prompt', 'What is 12 times 7?', '--temperature', '0', '--max-tokens', '24', '--no-head', '--json', '--threads', '1'];
    const none = specd(...args, '--policy', 'none');
    const restricted = specd(...args, '--draft', draft, '--policy', 'fixed');
    const off = specd(...args, '--draft', draft, '--policy', 'fixed', '--no-speculative-token-map');
    for (const r of [none, restricted, off]) assert.equal(r.status, 0, r.stderr);
    const text = (r: typeof none) => (JSON.parse(r.stdout) as { text: string }).text;
    assert.equal(text(restricted), text(none));
    assert.equal(text(off), text(none));
  });

  test('bad input: one line, exit 1', () => {
    oneLineError(specd('models', 'token-map', BUNDLED_TARGET, '--size', '0'), /--size.*expected an integer/);
    oneLineError(specd('models', 'token-map', BUNDLED_TARGET, '--dataset', 'gsm9k'), /unknown dataset "gsm9k"/);
    oneLineError(specd('models', 'token-map', BUNDLED_TARGET, '--size', '2', '--out', join(root, 'x.json')), /special tokens do not fit a token map of 2/);
    const bad = join(root, 'bad.json');
    writeFileSync(bad, '{"token_ids": [1, 300]}');
    oneLineError(specd('generate', '--prompt', 'hi', '--max-tokens', '2', '--speculative-token-map', bad), /bad\.json: token id 300 is not an id of the draft's vocabulary of 259/);
  });
});
