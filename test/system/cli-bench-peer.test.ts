/**
 * `specd bench peer` end to end: with llama.cpp's real llama-server and llama-quantize
 * (LLAMA_SERVER / LLAMA_QUANTIZE, or on PATH; CI sets them through
 * scripts/llama-server-debian.sh), a tiny run on the bundled pair at q4 writes Q4_0 GGUF files,
 * runs both engines in interleaved rounds, prints the table, and writes JSON whose ratios are each
 * round's tokens/s over llama-server's target alone, with every specd policy's output equal to
 * specd none's (llama-server's --spec-type draft-simple,ngram-mod among its configurations, its
 * output equal to its target's alone); and a chart. Without the tools, or with bad flags: one line on stderr and exit 1.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { LLAMA_SERVER, requireTool } from '../../src/bench/llama-server.js';
import type { PeerRow, PeerSummary } from '../../src/bench/peer-llamacpp.js';
import { GgmlType, readGguf } from '../../src/gguf/gguf-file.js';
import { PACKAGE_ROOT } from '../../src/paths.js';

const cli = join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js');
const root = mkdtempSync(join(tmpdir(), 'specd-bench-peer-'));
after(() => rmSync(root, { recursive: true, force: true }));
// Quantized weights of the bundled pair go to a cache of this test's own.
const env = { ...process.env, SPECD_CACHE_DIR: join(root, 'cache') };

const specd = (args: string[], extraEnv: NodeJS.ProcessEnv = {}) => spawnSync(process.execPath, [cli, 'bench', 'peer', ...args], { encoding: 'utf8', env: { ...env, ...extraEnv } });

function oneLineError(run: ReturnType<typeof specd>, pattern: RegExp): void {
  assert.equal(run.status, 1, run.stdout + run.stderr);
  const lines = run.stderr.trim().split('\n');
  assert.equal(lines.length, 1, run.stderr);
  assert.match(lines[0]!, pattern);
}

describe('specd bench peer', () => {
  test('no llama-server, or bad flags: one line naming the problem, exit 1', () => {
    oneLineError(specd([], { LLAMA_SERVER: join(root, 'no-such-llama-server') }), /^specd: error: llama-server not found: .*no-such-llama-server \(from \$LLAMA_SERVER\) cannot be run \(ENOENT\); set LLAMA_SERVER or --llama-server; eval "\$\(bash scripts\/llama-server-debian.sh\)"/);
    oneLineError(specd(['--llama-server', join(root, 'nothing here')]), /llama-server not found: .*nothing here \(from --llama-server\)/);
    oneLineError(specd(['--llama-server', 'false']), /^specd: error: llama-server: false \(from --llama-server\) exited with 1/);
    oneLineError(specd(['--llama-server', process.execPath, '--llama-quantize', join(root, 'no-quantize')]), /llama-quantize not found: .*no-quantize \(from --llama-quantize\)/);
    oneLineError(specd(['--quant', 'q8,q5']), /--quant <list>' argument 'q8,q5' is invalid. expected a comma-separated list of q8, q4, got q5/);
    oneLineError(specd(['--target', root]), /--draft: a draft model directory is needed with --target/);
    oneLineError(specd(['--no-head', '--policies', 'none,specdec++']), /specdec\+\+ needs an acceptance head/);
    oneLineError(specd(['--policies', 'ngram']), /ngram is not compared here without --llama-spec-type/);
    oneLineError(specd(['--llama-spec-type', 'ngram-mod,ngram-magic']), /--llama-spec-type <types>' argument 'ngram-mod,ngram-magic' is invalid. unknown llama-server --spec-type "ngram-magic"; expected a comma-separated list of draft-simple, ngram-simple/);
    oneLineError(specd(['--llama-spec-type', 'ngram-mod,ngram-mod']), /ngram-mod is listed twice/);
    oneLineError(specd(['--dataset', 'edits']), /--dataset <name>' argument 'edits' is invalid. expected one of gsm8k, humaneval, alpaca, edit$/);
  });

  test('bundled pair at q4 against the real llama-server: table, JSON with per-round ratios and exact specd outputs, chart, Q4_0 files', async (t) => {
    let llamaServer: string[];
    try {
      llamaServer = requireTool(LLAMA_SERVER);
    } catch (err) {
      const hint = `${(err as Error).message.split(';')[0]} (eval "$(bash scripts/llama-server-debian.sh)")`;
      if (process.env.CI) throw new Error(`${hint}: .ci/run sets it in CI`);
      return t.skip(hint);
    }
    const json = join(root, 'peer.json');
    const chart = join(root, 'peer.svg');
    const ggufDir = join(root, 'gguf');
    const run = specd(['--quant', 'q4', '--prompts', '2', '--max-tokens', '12', '--rounds', '2', '--k', '3', '--spec-draft-n-max', '3', '--llama-spec-type', 'draft-simple,ngram-mod', '--gguf-dir', ggufDir, '--json', json, '--chart', chart]);
    assert.equal(run.status, 0, run.stderr);
    const configs = ['llama-server target only', 'llama-server -md (n-max 3, p-min 0.6)', 'llama-server --spec-type draft-simple,ngram-mod (n-max 3, p-min 0.6)', 'specd --dtype q4 none', 'specd --dtype q4 fixed:3', 'specd --dtype q4 specdec++'];
    for (const c of configs) assert.match(run.stdout, new RegExp(`Q4_0\\s+${c.replace(/[()+.]/g, '\\$&')}\\s+\\d+\\.\\d\\s+\\d+\\.\\d\\dx`), run.stdout);
    // Rounds are interleaved: every configuration of round 1 before any of round 2.
    const order = run.stderr.split('\n').filter((l) => l.startsWith('round ')).map((l) => l.slice(0, 'round 1/2'.length));
    assert.deepEqual(order, [...Array(6).fill('round 1/2'), ...Array(6).fill('round 2/2')]);

    const out = JSON.parse(readFileSync(json, 'utf8')) as { schema: string; settings: { llama_server: string; prompt_tokens: number[] }; rows: PeerRow[]; summary: PeerSummary[] };
    assert.equal(out.schema, 'specd-bench-peer/1');
    assert.equal(out.settings.llama_server, llamaServer.join(' '));
    assert.equal(out.settings.prompt_tokens.length, 2);
    assert.equal(out.rows.length, 12);
    for (const r of out.rows) {
      assert.equal(r.tokens, 2 * 12, `${r.config}: every prompt decodes 12 tokens`);
      assert.ok(Math.abs(r.tokens_per_s - r.tokens / r.seconds) < 0.1 + 0.01 * r.tokens_per_s, `${r.config}: ${r.tokens_per_s} tok/s from ${r.tokens} / ${r.seconds} s`);
      if (r.engine === 'specd' && !r.config.endsWith(' none')) assert.equal(r.matches_reference, true, `${r.config}: greedy speculation equals specd none`);
      if (r.config.includes('--spec-type')) assert.equal(r.matches_reference, true, `${r.config}: llama-server's n-gram speculation equals its target alone`);
    }
    assert.deepEqual(out.summary.map((s) => s.config), configs);
    for (const s of out.summary) {
      const ratios = [0, 1].map((round) => {
        const row = out.rows.find((r) => r.round === round && r.config === s.config)!;
        const base = out.rows.find((r) => r.round === round && r.config === 'llama-server target only')!;
        return row.tokens_per_s / base.tokens_per_s;
      });
      s.ratio_per_round.forEach((r, i) => assert.ok(Math.abs(r - ratios[i]!) < 1e-3, `${s.config} round ${i}: ${r} against ${ratios[i]}`));
      assert.ok(Math.abs(s.median_ratio - (ratios[0]! + ratios[1]!) / 2) < 2e-3, `${s.config}: median of two rounds`);
    }
    assert.deepEqual(out.summary[0]!.ratio_per_round, [1, 1]);

    const svg = readFileSync(chart, 'utf8');
    assert.match(svg, /^<svg /);
    for (const label of ['Q4_0', 'llama.cpp alone', 'llama.cpp -md', 'llama.cpp draft-simple,ngram-mod', 'specd none', 'specd fixed:3', 'specd specdec++']) assert.ok(svg.includes(label), label);

    for (const role of ['target', 'draft']) {
      const file = readGguf(join(ggufDir, `${role}-Q4_0.gguf`));
      assert.equal(file.tensors.find((x) => x.name === 'blk.0.attn_qkv.weight')!.type, GgmlType.Q4_0, `${role}: quantized by llama-quantize`);
      assert.ok(existsSync(join(ggufDir, `${role}-F32.gguf`)));
    }
  });
});
