/**
 * `specd bench peer --multi-turn` end to end against llama.cpp's real llama-server (LLAMA_SERVER,
 * or on PATH; CI sets it through scripts/llama-server-debian.sh) and a real `specd serve`: one
 * small conversation on the bundled pair, turn by turn, interleaved; the table, JSON rows (the
 * same prompt ids for both, each turn's earlier conversation taken from both caches) and the
 * chart; a conversation longer than the model's context is one line naming the turn. Flags that
 * do not apply: one line on stderr and exit 1.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { LLAMA_SERVER, requireTool } from '../../src/bench/llama-server.js';
import type { PeerTurnRow, PeerTurnSummary } from '../../src/bench/peer-multi-turn.js';
import { PACKAGE_ROOT } from '../../src/paths.js';

const cli = join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js');
const root = mkdtempSync(join(tmpdir(), 'specd-bench-peer-turns-'));
after(() => rmSync(root, { recursive: true, force: true }));

const specd = (args: string[]) => spawnSync(process.execPath, [cli, 'bench', 'peer', '--multi-turn', ...args], { encoding: 'utf8' });

describe('specd bench peer --multi-turn', () => {
  test('flags that do not apply: one line naming them, exit 1', () => {
    const run = specd(['--policies', 'none', '--llama-server', process.execPath]);
    assert.equal(run.status, 1, run.stderr);
    assert.match(run.stderr.trim(), /^specd: error: --policies does not apply to --multi-turn \(choose specd's policy with --serve-args '--policy NAME'\)$/);
    const unterminated = specd(['--serve-args', "--policy 'fixed", '--llama-server', process.execPath]);
    assert.equal(unterminated.status, 1, unterminated.stderr);
    assert.match(unterminated.stderr.trim(), /^specd: error: --serve-args: unterminated '/);
  });

  test('one conversation on the bundled pair beside the real llama-server: both take the earlier turns from their caches', async (t) => {
    try {
      requireTool(LLAMA_SERVER);
    } catch (err) {
      const hint = `${(err as Error).message.split(';')[0]} (eval "$(bash scripts/llama-server-debian.sh)")`;
      if (process.env.CI) throw new Error(`${hint}: .ci/run sets it in CI`);
      return t.skip(hint);
    }
    const json = join(root, 'turns.json');
    const chart = join(root, 'turns.svg');
    const run = specd(['--turns', '3', '--max-tokens', '4', '--rounds', '1', '--system-prompt-len', '120', '--question-len', '30', '--serve-args', '--policy fixed --k 3', '--json', json, '--chart', chart]);
    assert.equal(run.status, 0, run.stderr);
    const table = run.stdout.trim().split('\n');
    assert.equal(table.length, 4, run.stdout);
    assert.match(table[0]!, /turn\s+prompt\s+llama-server TTFT ms \(cached\)\s+specd TTFT ms \(cached\)\s+specd \/ llama/);
    assert.deepEqual(run.stderr.split('\n').filter((l) => l.startsWith('round ')).map((l) => l.slice(0, 'round 1/1 turn 1/3'.length)), ['round 1/1 turn 1/3', 'round 1/1 turn 2/3', 'round 1/1 turn 3/3']);

    const out = JSON.parse(readFileSync(json, 'utf8')) as { schema: string; settings: { specd_serve: string[] }; rows: PeerTurnRow[]; summary: PeerTurnSummary[] };
    assert.equal(out.schema, 'specd-bench-peer-turns/1');
    assert.ok(out.settings.specd_serve.join(' ').endsWith('--workers 1 --policy fixed --k 3'), out.settings.specd_serve.join(' '));
    assert.equal(out.rows.length, 6);
    for (const turn of [1, 2, 3]) {
      const [llama, ours] = ['llama-server', 'specd'].map((e) => out.rows.find((r) => r.turn === turn && r.engine === e)!);
      assert.equal(llama!.prompt_tokens, ours!.prompt_tokens, `turn ${turn}: the same prompt ids`);
      assert.equal(ours!.same_answer, null);
      assert.equal(typeof llama!.same_answer, 'boolean');
      for (const r of [llama!, ours!]) {
        assert.ok(r.ttft_ms > 0, `${r.engine} turn ${turn}: TTFT ${r.ttft_ms}`);
        assert.ok(r.output_tokens >= 1 && r.output_tokens <= 4, `${r.engine} turn ${turn}: ${r.output_tokens} tokens`);
      }
      if (turn > 1) {
        const previous = out.rows.find((r) => r.turn === turn - 1 && r.engine === 'specd')!.prompt_tokens;
        assert.ok(ours!.cached_tokens >= previous, `specd turn ${turn}: ${ours!.cached_tokens} cached, the previous prompt had ${previous}`);
        assert.ok(llama!.cached_tokens > 0, `llama-server turn ${turn}: its prompt cache is on`);
      }
    }
    assert.deepEqual(out.summary.map((s) => s.turn), [1, 2, 3]);
    for (const s of out.summary) assert.ok(Math.abs(s.ratio - s.ttft_ms.specd / s.ttft_ms['llama-server']) < 1e-2, JSON.stringify(s));
    // A conversation outgrowing the bundled pair's 1,024 positions (not llama-server's 2,048): one line naming the turn.
    const long = specd(['--turns', '2', '--max-tokens', '100', '--rounds', '1', '--system-prompt-len', '900', '--question-len', '30']);
    assert.equal(long.status, 1, long.stderr);
    assert.match(long.stderr.trim().split('\n').at(-1)!, /^specd: error: round 1, turn 1: the conversation \(\d+ prompt tokens \+ 100\) outgrows the context of 1024 tokens; use fewer --turns or shorter texts$/);
    const svg = readFileSync(chart, 'utf8');
    assert.match(svg, /^<svg /);
    for (const label of ['llama-server', 'specd', 'time to first token', 'prompt tokens from the cache']) assert.ok(svg.includes(label), label);
  });
});
