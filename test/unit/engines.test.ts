/**
 * The Node.js versions specd claims are honest: every package `npm ci` installs (production and
 * development, from package-lock.json) accepts every Node.js version package.json's `engines`
 * admits, so `npm ci` on a supported Node prints no EBADENGINE warning; the Docker image's Node
 * and the Node types match the lowest supported major; CI refuses an older Node before `npm ci`.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import semver from 'semver';
import { PACKAGE_ROOT } from '../../src/paths.js';

interface LockPackage {
  version?: string;
  engines?: { node?: string } | string[];
}

const pkg = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { engines: { node: string }; devDependencies: Record<string, string> };
const lock = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockPackage> };
const range = pkg.engines.node;
const lowest = semver.minVersion(range)!;

test('package.json engines.node is a range whose lowest version is a current Node.js line (>= 22)', () => {
  assert.ok(semver.validRange(range), `engines.node "${range}" is not a range`);
  assert.ok(semver.gte(lowest, '22.0.0'), `engines.node "${range}" admits Node ${lowest}, which some dependencies refuse and which is past its end of life`);
  assert.equal((lock.packages[''] as { engines?: { node?: string } }).engines?.node, range, "package-lock.json's root engines match package.json (run npm install)");
});

test('every locked package accepts every Node.js version engines.node admits', () => {
  const refusing: string[] = [];
  let checked = 0;
  for (const [path, entry] of Object.entries(lock.packages)) {
    const wanted = Array.isArray(entry.engines) ? undefined : entry.engines?.node;
    if (!path || !wanted) continue;
    checked++;
    if (!semver.subset(range, wanted, { includePrerelease: false })) refusing.push(`${path.replace(/^node_modules\//, '')}@${entry.version} wants node ${wanted}`);
  }
  assert.ok(checked > 20, `only ${checked} locked packages declare engines.node`);
  assert.deepEqual(refusing, [], `engines.node "${range}" admits versions these packages refuse`);
});

test("the Docker image's Node, the Node types and CI agree with engines.node", () => {
  const dockerfile = readFileSync(join(PACKAGE_ROOT, 'Dockerfile'), 'utf8');
  const image = /^ARG NODE_VERSION=(\d+)$/m.exec(dockerfile)?.[1];
  assert.ok(image, 'the Dockerfile sets ARG NODE_VERSION');
  assert.ok(semver.satisfies(`${image}.0.0`, range), `the image's Node ${image} is outside engines.node "${range}"`);
  assert.equal(semver.minVersion(pkg.devDependencies['@types/node']!)!.major, lowest.major, '@types/node is the lowest supported major');
  const ci = readFileSync(join(PACKAGE_ROOT, '.ci', 'run'), 'utf8');
  assert.ok(ci.indexOf('engines.node') >= 0 && ci.indexOf('engines.node') < ci.indexOf('npm ci'), '.ci/run checks the Node version against engines.node before npm ci');
});
