/**
 * Real tools from Debian packages (prometheus, promtool, haproxy) for the operations tests.
 * Where one is missing the test is skipped with the package to install, except in CI (CI=true),
 * where .ci/run installs them and a missing one is a failure.
 */
import { spawnSync } from 'node:child_process';
import type { TestContext } from 'node:test';

/** Tool -> the Debian package that provides it. */
const PACKAGES: Record<string, string> = { prometheus: 'prometheus', promtool: 'prometheus', haproxy: 'haproxy' };
/** The flag that makes each tool print its version and exit 0. */
const VERSION_FLAG: Record<string, string> = { haproxy: '-v' };

/** Whether `name` runs (found on PATH or in /usr/sbin). */
export function hasTool(name: string): boolean {
  return toolPath(name) !== undefined;
}

/** The tool's path, or undefined. */
export function toolPath(name: string): string | undefined {
  for (const candidate of [name, `/usr/sbin/${name}`, `/usr/bin/${name}`]) {
    const run = spawnSync(candidate, [VERSION_FLAG[name] ?? '--version'], { encoding: 'utf8', timeout: 10_000 });
    if (run.error === undefined && run.status === 0) return candidate;
  }
  return undefined;
}

/**
 * The tools' paths; when one is missing, skips the test (returns undefined) or, in CI, throws.
 */
export function requireTools(t: TestContext, ...names: string[]): Record<string, string> | undefined {
  const found: Record<string, string> = {};
  const missing: string[] = [];
  for (const name of names) {
    const path = toolPath(name);
    if (path) found[name] = path;
    else missing.push(name);
  }
  if (missing.length === 0) return found;
  const hint = `${missing.join(', ')} not installed (apt-get install ${[...new Set(missing.map((m) => PACKAGES[m] ?? m))].join(' ')})`;
  if (process.env.CI) throw new Error(`${hint}: .ci/run installs it in CI`);
  t.skip(hint);
  return undefined;
}
