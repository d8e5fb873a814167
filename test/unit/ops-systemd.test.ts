/**
 * deploy/systemd/specd.service runs specd as the README says a service should: node itself on
 * bin/specd.js (npm and npx do not pass SIGTERM on), stopped with SIGTERM and given longer than
 * specd's drain (--grace plus the forced close) before systemd kills it; and systemd's own
 * `systemd-analyze verify` accepts the unit where systemd is installed.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { PACKAGE_ROOT } from '../../src/paths.js';
import { DEFAULT_GRACE_S } from '../../src/server/defaults.js';
import { FORCE_CLOSE_MS } from '../../src/server/shutdown.js';

const UNIT = join(PACKAGE_ROOT, 'deploy', 'systemd', 'specd.service');

/** The unit's keys by section (`Service.ExecStart`), the last value of each. */
function readUnit(text: string): Map<string, string> {
  const keys = new Map<string, string>();
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const header = /^\[(\w+)\]$/.exec(line);
    if (header) section = header[1]!;
    else {
      const eq = line.indexOf('=');
      assert.ok(eq > 0, `not a key=value line: ${line}`);
      keys.set(`${section}.${line.slice(0, eq)}`, line.slice(eq + 1));
    }
  }
  return keys;
}

test('the unit runs node on bin/specd.js serve, stops it with SIGTERM and waits out the drain', () => {
  const unit = readUnit(readFileSync(UNIT, 'utf8'));
  const exec = unit.get('Service.ExecStart')!.split(/\s+/);
  assert.match(exec[0]!, /\/node$/, 'node itself, not npm or npx');
  assert.equal(exec[1], `${unit.get('Service.WorkingDirectory')}/bin/specd.js`);
  assert.equal(exec[2], 'serve');
  assert.equal(unit.get('Service.KillSignal'), 'SIGTERM');
  const graceAt = exec.indexOf('--grace');
  const grace = graceAt >= 0 ? Number(exec[graceAt + 1]) : DEFAULT_GRACE_S;
  const stopS = Number(unit.get('Service.TimeoutStopSec'));
  assert.ok(stopS > grace + FORCE_CLOSE_MS / 1000, `TimeoutStopSec ${stopS} <= --grace ${grace} + ${FORCE_CLOSE_MS / 1000} s of forced close`);
  assert.equal(unit.get('Install.WantedBy'), 'multi-user.target');
});

test('systemd-analyze verify accepts the unit', (t) => {
  const which = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
  if (which.error) {
    // Only the unit's own checks above can run without systemd.
    t.diagnostic('systemd-analyze is not installed: the unit was checked by the test above only');
    return;
  }
  // verify reads the unit under its own name; a copy keeps the checkout's file untouched.
  const dir = mkdtempSync(join(tmpdir(), 'specd-systemd-'));
  try {
    copyFileSync(UNIT, join(dir, 'specd.service'));
    const run = spawnSync('systemd-analyze', ['verify', join(dir, 'specd.service')], { encoding: 'utf8', timeout: 30_000 });
    const problems = `${run.stdout}${run.stderr}`.split('\n').filter((l) => l.includes('specd.service') && !/Command .* is not executable|No such file/.test(l));
    assert.deepEqual(problems, []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
