/**
 * `specd serve` with models it cannot use: a missing directory or file, a truncated graph, a
 * truncated or missing weights file (named itself, not the graph that refers to it), a draft
 * whose vocabulary or tokenizer differs from the target's. The process exits non-zero with one
 * line on stderr that names the file at fault; while the workers try to load, /health answers 503.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { cpSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BUNDLED_DRAFT, BUNDLED_TARGET } from '../../src/paths.js';
import { SPECD_BIN, startServe } from '../support/serve-process.js';

let tmp: string;

before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'specd-startup-'));
});
after(() => rmSync(tmp, { recursive: true, force: true }));

/** A copy of a bundled model directory to break. */
function copyModel(from: string, name: string): string {
  const dir = join(tmp, name);
  cpSync(from, dir, { recursive: true });
  return dir;
}

function halve(file: string): void {
  truncateSync(file, Math.floor(statSync(file).size / 2));
}

/** Runs serve to its exit; returns the exit code, stderr and every /health status seen meanwhile. */
async function serveUntilExit(args: string[]): Promise<{ code: number | null; stderr: string; health: number[] }> {
  const child = spawn(process.execPath, [SPECD_BIN, 'serve', '--port', '0', '--workers', '1', '--no-head', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let stdout = '';
  const health: number[] = [];
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  let exited = false;
  const exit = once(child, 'exit').then(([code]) => {
    exited = true;
    return code as number | null;
  });
  child.stdout.on('data', async (d: Buffer) => {
    stdout += d.toString();
    const m = /listening on (\S+)/.exec(stdout);
    if (!m || health.length > 0) return;
    while (!exited) {
      const res = await fetch(`${m[1]}/health`).catch(() => undefined);
      if (!res) break;
      health.push(res.status);
      await res.body?.cancel();
      await new Promise((r) => setTimeout(r, 10));
    }
  });
  return { code: await exit, stderr, health };
}

/** The one `specd: error:` line: it names `file` and nothing follows it. */
function expectOneLineError(stderr: string, file: string): void {
  const lines = stderr.split('\n').filter((l) => l !== '');
  const errors = lines.filter((l) => l.startsWith('specd: error:'));
  assert.equal(errors.length, 1, stderr);
  assert.equal(lines.at(-1), errors[0], `the error line is the last line:\n${stderr}`);
  assert.ok(errors[0]!.includes(file), `${errors[0]} names ${file}`);
}

describe('models that cannot be served', () => {
  test('a missing target directory', async () => {
    const dir = join(tmp, 'nowhere');
    const { code, stderr } = await serveUntilExit(['--target', dir, '--no-draft', '--policy', 'none']);
    assert.notEqual(code, 0);
    expectOneLineError(stderr, dir);
  });

  test('a missing tokenizer.json', async () => {
    const dir = copyModel(BUNDLED_TARGET, 'no-tokenizer');
    rmSync(join(dir, 'tokenizer.json'));
    const { code, stderr } = await serveUntilExit(['--target', dir, '--no-draft', '--policy', 'none']);
    assert.notEqual(code, 0);
    expectOneLineError(stderr, join(dir, 'tokenizer.json'));
  });

  test('model.onnx cut in half: /health is 503 while loading, then exit 1 naming the file', async () => {
    const dir = copyModel(BUNDLED_TARGET, 'truncated-graph');
    halve(join(dir, 'onnx', 'model.onnx'));
    const { code, stderr, health } = await serveUntilExit(['--target', dir, '--no-draft', '--policy', 'none']);
    assert.equal(code, 1);
    expectOneLineError(stderr, join(dir, 'onnx', 'model.onnx'));
    assert.ok(health.every((s) => s === 503), `health ${health}`);
  });

  test('a weights file cut in half: exit 1 naming the weights file', async () => {
    const dir = copyModel(BUNDLED_TARGET, 'truncated-weights');
    halve(join(dir, 'onnx', 'model.onnx_data_1'));
    const { code, stderr } = await serveUntilExit(['--target', dir, '--no-draft', '--policy', 'none']);
    assert.equal(code, 1);
    expectOneLineError(stderr, join(dir, 'onnx', 'model.onnx_data_1'));
    assert.match(stderr, /model\.onnx_data_1 is truncated: \d+ bytes, but tensor \S+ of \S+model\.onnx ends at byte \d+/);
    assert.doesNotMatch(stderr, /out of bounds/, "ONNX Runtime's message, which names the graph file, is not what the user sees");
  });

  test('a missing weights file: exit 1 naming it', async () => {
    const dir = copyModel(BUNDLED_TARGET, 'missing-weights');
    rmSync(join(dir, 'onnx', 'model.onnx_data_1'));
    const { code, stderr } = await serveUntilExit(['--target', dir, '--no-draft', '--policy', 'none']);
    assert.equal(code, 1);
    expectOneLineError(stderr, `missing ${join(dir, 'onnx', 'model.onnx_data_1')}`);
  });

  test('a draft with another tokenizer: exit 1 naming its tokenizer.json', async () => {
    const target = copyModel(BUNDLED_TARGET, 'pair-target');
    const draft = copyModel(BUNDLED_DRAFT, 'pair-draft');
    const tokenizer = JSON.parse(readFileSync(join(draft, 'tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number> } };
    const { vocab } = tokenizer.model;
    [vocab['a'], vocab['b']] = [vocab['b']!, vocab['a']!];
    writeFileSync(join(draft, 'tokenizer.json'), JSON.stringify(tokenizer));
    const { code, stderr } = await serveUntilExit(['--target', target, '--draft', draft]);
    assert.equal(code, 1);
    expectOneLineError(stderr, join(draft, 'tokenizer.json'));
  });

  test('a draft with another vocabulary size: exit 1 naming its config.json', async () => {
    const target = copyModel(BUNDLED_TARGET, 'vocab-target');
    const draft = copyModel(BUNDLED_DRAFT, 'vocab-draft');
    const config = JSON.parse(readFileSync(join(draft, 'config.json'), 'utf8')) as { vocab_size: number };
    config.vocab_size += 1;
    writeFileSync(join(draft, 'config.json'), JSON.stringify(config));
    const { code, stderr } = await serveUntilExit(['--target', target, '--draft', draft]);
    assert.equal(code, 1);
    expectOneLineError(stderr, join(draft, 'config.json'));
  });

  for (const [positions, why] of [
    [1e12, /a context of 1000000000000 positions .* is beyond what specd can hold/],
    [2048, /context of 2048 positions .* longer than the graph's position table of 1024 rows/],
  ] as const) {
    test(`n_positions ${positions} (beyond the model): exit 1 naming config.json at start`, async () => {
      const dir = copyModel(BUNDLED_TARGET, `long-context-${positions}`);
      const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { n_positions: number };
      config.n_positions = positions;
      writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
      const { code, stderr } = await serveUntilExit(['--target', dir, '--no-draft', '--policy', 'none']);
      assert.equal(code, 1);
      expectOneLineError(stderr, join(dir, 'config.json'));
      assert.match(stderr, why);
    });
  }

  test('/health is 503 until the models have loaded, then 200', async () => {
    const server = await startServe(['--no-head'], { waitReady: false });
    try {
      const statuses: number[] = [];
      for (;;) {
        const res = await fetch(`${server.url}/health`);
        statuses.push(res.status);
        await res.body?.cancel();
        if (res.status === 200) break;
        await new Promise((r) => setTimeout(r, 5));
      }
      assert.equal(statuses[0], 503, 'loading at first');
      assert.ok(statuses.slice(0, -1).every((s) => s === 503));
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });
});
