/**
 * Defaults a newcomer gets: `specd generate` and `specd serve` draft with specdec++ when an
 * acceptance head is loaded (the bundled pair has one), fixed:4 with a draft and no head, and
 * decode with the target alone without a draft; an explicit --policy wins. `npx specd` prints no
 * npm warning (package.json's allowScripts, not an .npmrc key npm does not know, keeps
 * onnxruntime-node's CUDA download out of `npm ci`).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { SPECD_BIN, startServe } from '../support/serve-process.js';

function generate(args: string[]): { policy: string; finish_reason: string } {
  const run = spawnSync(process.execPath, [SPECD_BIN, 'generate', '--prompt', 'How many legs do 3 spiders have?', '--max-tokens', '8', '--temperature', '0', '--threads', '1', '--json', ...args], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(run.status, 0, run.stderr);
  return JSON.parse(run.stdout) as { policy: string; finish_reason: string };
}

test('npx specd prints no npm warning', () => {
  const run = spawnSync('npx', ['--no-install', 'specd', '--help'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(run.status, 0, run.stderr);
  assert.match(run.stdout, /^Usage: specd/);
  assert.equal(run.stderr, '', 'nothing on stderr');
});

describe('specd generate: the default policy', () => {
  test('specdec++ with the bundled head, fixed:4 without a head, none without a draft', () => {
    assert.equal(generate([]).policy, 'specdec++');
    assert.equal(generate(['--no-head']).policy, 'fixed:4');
    assert.equal(generate(['--no-draft']).policy, 'none');
    assert.equal(generate(['--policy', 'fixed', '--k', '2']).policy, 'fixed:2', 'an explicit --policy wins');
  });
});

describe('specd serve: the default policy', () => {
  for (const [args, expected] of [
    [[], 'specdec++'],
    [['--no-head'], 'fixed:4'],
  ] as const) {
    test(`${args.join(' ') || 'the bundled pair'}: ${expected}`, async () => {
      const server = await startServe(['--threads', '1', ...args]);
      try {
        const res = await fetch(`${server.url}/v1/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'specd-pair-target', messages: [{ role: 'user', content: 'hi' }], max_tokens: 8, temperature: 0 }),
        });
        assert.equal(res.status, 200);
        const body = (await res.json()) as { usage: { speculative: { policy: string } } };
        assert.equal(body.usage.speculative.policy, expected);
        assert.ok(server.stderr().includes(`default policy ${expected}\n`), server.stderr());
      } finally {
        assert.equal(await server.stop(), 0);
      }
    });
  }
});
