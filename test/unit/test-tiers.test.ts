/**
 * Every test suite sits in one tier folder, and the tiers keep their promises:
 * - test/unit: no model and no server, seconds (`npm run test:unit`, the inner loop);
 * - test/model: fixtures, synthetic pairs and the bundled pair, no server (WebGPU cases of the
 *   engine's checks included);
 * - test/system: servers, real clients, Prometheus, HAProxy, llama-server, the WebGPU server.
 * A suite anywhere else would run under no tier's script, so it fails here, by name. A unit
 * suite that imports what loads a model or starts a server, or a model suite that imports what
 * starts a server, fails here too (type-only imports aside: they load nothing).
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, posix, relative } from 'node:path';
import { test } from 'node:test';
import ts from 'typescript';
import { PACKAGE_ROOT } from '../../src/paths.js';

const TEST_ROOT = join(PACKAGE_ROOT, 'test');
export const TIERS = ['unit', 'model', 'system'] as const;

/** Modules (paths under the repository, without extension) a tier's suites may not import for their values. */
const LOADS_A_MODEL = ['src/pair/model-pair', 'src/engine/model', 'src/testing/decoder-fixture', 'src/heads/runtime/head-loader', 'test/support/real-vocab-pair', 'test/support/heads'];
const STARTS_A_SERVER = ['src/server/app', 'src/server/engine-pool', 'test/support/serve-process', 'test/support/prometheus', 'test/support/debian-tools'];
/**
 * The WebGPU probe. Model suites may hold WebGPU cases beside their CPU ones (the same checks on
 * another device, skipped with the reason where no Vulkan driver is installed); unit suites not.
 */
const NEEDS_A_GPU = ['test/support/webgpu'];
const FORBIDDEN: Record<(typeof TIERS)[number], string[]> = { unit: [...LOADS_A_MODEL, ...STARTS_A_SERVER, ...NEEDS_A_GPU], model: STARTS_A_SERVER, system: [] };

/** Every `*.test.ts` under test/, relative to it. */
function suites(dir = TEST_ROOT): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? suites(join(dir, e.name)) : e.name.endsWith('.test.ts') ? [relative(TEST_ROOT, join(dir, e.name)).split('\\').join('/')] : [],
  );
}

/** The relative modules a file imports for their values (not `import type`), as repository paths without extension. */
function valueImports(file: string): string[] {
  const source = ts.createSourceFile(file, readFileSync(join(TEST_ROOT, file), 'utf8'), ts.ScriptTarget.Latest);
  const out: string[] = [];
  for (const node of source.statements) {
    if (!ts.isImportDeclaration(node) && !ts.isExportDeclaration(node)) continue;
    const spec = node.moduleSpecifier;
    if (!spec || !ts.isStringLiteral(spec) || !spec.text.startsWith('.')) continue;
    if (ts.isImportDeclaration(node) ? node.importClause?.isTypeOnly : node.isTypeOnly) continue;
    out.push(posix.normalize(posix.join('test', posix.dirname(file), spec.text)).replace(/\.js$/, ''));
  }
  return out;
}

test('every suite is in test/unit, test/model or test/system', () => {
  const all = suites();
  assert.ok(all.length > 60, `only ${all.length} suites under ${TEST_ROOT}`);
  const outside = all.filter((f) => !TIERS.some((tier) => f.startsWith(`${tier}/`) && !f.slice(tier.length + 1).includes('/')));
  assert.deepEqual(outside, [], 'move these suites into the folder of their tier (README, "Tests")');
});

test('unit suites load no model and start no server; model suites start no server', () => {
  const problems: string[] = [];
  for (const file of suites()) {
    const tier = TIERS.find((t) => file.startsWith(`${t}/`));
    if (!tier) continue;
    for (const target of valueImports(file)) {
      if (FORBIDDEN[tier].includes(target)) problems.push(`${file} imports ${target}, which the ${tier} tier may not`);
    }
  }
  assert.deepEqual(problems, []);
});
