/**
 * `specd bench serve --multi-turn` (bench/serve/multi-turn.ts): the conversations' script is
 * reproducible and shares its system prompt, the per-turn summary from synthetic records, and a
 * short end-to-end run against two real `specd serve` processes, prefix caching on and off.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { formatMultiTurn, multiTurnScript, summarizeMultiTurn, type MultiTurnSummary, type TurnRecord } from '../../src/bench/serve/multi-turn.js';

const BIN = fileURLToPath(new URL('../../../bin/specd.js', import.meta.url));

describe('multi-turn workload', () => {
  test('the script: one system prompt of the given length for every conversation, questions reproducible by seed', () => {
    const a = multiTurnScript({ conversations: 3, turns: 4, systemPromptLen: 120, questionLen: 20, seed: 7 });
    const b = multiTurnScript({ conversations: 3, turns: 4, systemPromptLen: 120, questionLen: 20, seed: 7 });
    const c = multiTurnScript({ conversations: 3, turns: 4, systemPromptLen: 120, questionLen: 20, seed: 8 });
    assert.deepEqual(a, b);
    assert.notDeepEqual(a.questions, c.questions);
    assert.equal(a.system.length, 120);
    assert.equal(a.questions.length, 3);
    assert.ok(a.questions.every((q) => q.length === 4 && q.every((x) => x.length === 21)));
  });

  test('summary: TTFT per turn, turns 2+ median, hit rate in tokens, failures', () => {
    const rec = (conversation: number, turn: number, ttftMs: number, promptTokens: number, cachedTokens: number, ok = true): TurnRecord => ({ conversation, turn, ok, ttftMs, promptTokens, cachedTokens, outputTokens: 10, ...(ok ? {} : { error: 'HTTP 500' }) });
    const s = summarizeMultiTurn('x', [
      { turns: [rec(0, 1, 100, 200, 0), rec(0, 2, 30, 260, 240), rec(1, 1, 120, 200, 16), rec(1, 2, 50, 260, 200), rec(1, 3, 0, 0, 0, false), rec(0, 3, NaN, 300, 0)], wallMs: 2000 },
    ]);
    assert.deepEqual(s.perTurn.map((t) => t.turn), [1, 2, 3]);
    assert.ok(Number.isNaN(s.perTurn[2]!.ttftMedianMs), 'a turn that streamed no text has no TTFT');
    assert.equal(s.perTurn[0]!.ttftMedianMs, 110);
    assert.equal(s.perTurn[1]!.ttftMedianMs, 40);
    assert.equal(s.perTurn[1]!.cachedShare, 440 / 520);
    assert.equal(s.laterTurnsTtftMedianMs, 40, 'turns without a TTFT left out');
    assert.equal(s.hitRate, (240 + 16 + 200) / 1220);
    assert.equal(s.outputTokensPerS, 50 / 2);
    assert.equal(s.failed, 1);
    assert.deepEqual(s.errors, ['HTTP 500']);
    const other: MultiTurnSummary = { ...s, label: 'y', laterTurnsTtftMedianMs: 80, outputTokensPerS: 10 };
    assert.match(formatMultiTurn([s, other]), /y: TTFT median of turns 2\+ 80 ms \(2\.00x\), output 10\.0 tok\/s \(0\.40x\)/);
  });

  test('end to end: two servers, prefix caching on and off; later turns hit the cache on the first only', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'specd-multi-turn-'));
    const json = join(dir, 'multi.json');
    const chart = join(dir, 'multi.svg');
    const server = '--workers 1 --no-head --policy fixed --k 3';
    const args = ['bench', 'serve', '--multi-turn', '--spawn', '--conversations', '2', '--turns', '3', '--system-prompt-len', '150', '--question-len', '20', '--max-tokens', '8', '--concurrency', '2', '--server-args', server, '--server-args', `${server} --no-enable-prefix-caching`, '--json', json, '--chart', chart];
    const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      child.on('exit', (c) => resolve({ code: c, stdout: out, stderr: err }));
    });
    assert.equal(code, 0, stderr);
    assert.match(stdout, /prefix cache hit rate/);
    const report = JSON.parse(readFileSync(json, 'utf8')) as { variants: MultiTurnSummary[] };
    const [on, off] = report.variants;
    assert.equal(on!.perTurn.length, 3);
    assert.equal(on!.failed + off!.failed, 0);
    assert.equal(off!.hitRate, 0);
    assert.ok(on!.perTurn.slice(1).every((t) => t.cachedShare > 0.5), JSON.stringify(on!.perTurn));
    assert.match(readFileSync(chart, 'utf8'), /^<svg/);
  });
});
