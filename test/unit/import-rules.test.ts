/**
 * The layers of src/ point one way (docs/architecture.md, "Layers"). Every relative import of
 * every source file is read with TypeScript's own pre-processor (`ts.preProcessFile`: static
 * imports, `export ... from` and dynamic `import()`, type-only ones included) and checked
 * against the rules below; the rules are also run over small made-up trees to show that each
 * one fails when broken.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, posix, relative } from 'node:path';
import { after, describe, test } from 'node:test';
import ts from 'typescript';
import { PACKAGE_ROOT } from '../../src/paths.js';

/**
 * Layers, lowest first: a file may import its own area and the areas of lower layers only. An
 * area is a folder of src/ (src/heads/ counts as two: runtime and training) or a file at its top.
 */
const LAYERS: readonly (readonly string[])[] = [
  ['errors.ts', 'paths.ts'],
  ['text', 'onnx', 'proposers'],
  ['engine'],
  ['grammar', 'heads/runtime', 'gguf', 'synthetic'],
  ['pair', 'heads/training', 'testing'],
  ['server', 'bench'],
  ['cli'],
];

/** What the server and the engine load: nothing of it may reach training, test or benchmark code. */
const RUNTIME = ['errors.ts', 'paths.ts', 'text', 'onnx', 'proposers', 'engine', 'grammar', 'heads/runtime', 'pair', 'server'];
const NOT_FOR_RUNTIME = ['heads/training', 'synthetic', 'testing', 'bench', 'cli'];

export interface ImportEdge {
  /** Importing file, relative to the tree's root (`src/engine/model.ts`). */
  from: string;
  /** Imported file, relative to the same root. */
  to: string;
}

/** The area of a path under src/: its first folder (two for src/heads/), or the file itself. */
export function areaOf(path: string): string {
  const parts = path.split('/').slice(1);
  if (parts[0] === 'heads' && parts.length > 2) return `heads/${parts[1]}`;
  return parts[0];
}

/** Every relative import of every .ts file under `root`/src, resolved to a path under `root`. */
export function importEdges(root: string): ImportEdge[] {
  const edges: ImportEdge[] = [];
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) {
        const from = relative(root, path).split('\\').join('/');
        const info = ts.preProcessFile(readFileSync(path, 'utf8'), true, true);
        for (const { fileName } of info.importedFiles) {
          if (!fileName.startsWith('.')) continue;
          edges.push({ from, to: posix.normalize(posix.join(posix.dirname(from), fileName)).replace(/\.js$/, '.ts') });
        }
      }
    }
  };
  walk(join(root, 'src'));
  return edges;
}

/** One line per import that breaks a rule; empty when the tree keeps them all. */
export function layerViolations(edges: readonly ImportEdge[]): string[] {
  const rank = new Map(LAYERS.flatMap((areas, i) => areas.map((a) => [a, i] as const)));
  const problems: string[] = [];
  for (const { from, to } of edges) {
    const [a, b] = [areaOf(from), areaOf(to)];
    if (a === b) continue;
    const [ra, rb] = [rank.get(a), rank.get(b)];
    if (ra === undefined) problems.push(`${from}: area ${a} has no layer (add it to LAYERS)`);
    else if (rb === undefined) problems.push(`${from} imports ${to}: area ${b} has no layer (add it to LAYERS)`);
    else if (rb > ra) problems.push(`${from} imports ${to}: ${a} (layer ${ra}) may not import ${b} (layer ${rb})`);
    if (RUNTIME.includes(a) && NOT_FOR_RUNTIME.includes(b)) problems.push(`${from} imports ${to}: runtime code may not import ${b}`);
    if (b === 'testing') problems.push(`${from} imports ${to}: only tests import src/testing`);
  }
  return problems;
}

describe('import rules', () => {
  const made = mkdtempSync(join(tmpdir(), 'specd-import-rules-'));
  after(() => rmSync(made, { recursive: true, force: true }));
  let trees = 0;
  /** A made-up tree of files (path -> source) checked as the real one is. */
  const check = (files: Record<string, string>): string[] => {
    const root = join(made, String(trees++));
    for (const [path, text] of Object.entries(files)) {
      mkdirSync(dirname(join(root, path)), { recursive: true });
      writeFileSync(join(root, path), text);
    }
    return layerViolations(importEdges(root));
  };

  test('src/ keeps every rule: the engine imports neither heads/ nor grammar/, runtime code no training, test or synthetic-model code', () => {
    const edges = importEdges(PACKAGE_ROOT);
    assert.ok(edges.length > 300, `only ${edges.length} imports read under ${PACKAGE_ROOT}src`);
    assert.deepEqual(layerViolations(edges), []);
  });

  test('the engine importing heads/ or grammar/ is refused', () => {
    const problems = check({
      'src/engine/pair.ts': "import { AcceptanceHead } from '../heads/runtime/head-runner.js';\nimport type { GrammarCompiler } from '../grammar/compiler.js';\n",
      'src/heads/runtime/head-runner.ts': 'export class AcceptanceHead {}\n',
      'src/grammar/compiler.ts': 'export class GrammarCompiler {}\n',
    });
    assert.equal(problems.length, 2, problems.join('\n'));
    assert.match(problems[0], /engine \(layer 2\) may not import heads\/runtime \(layer 3\)/);
    assert.match(problems[1], /engine \(layer 2\) may not import grammar/);
  });

  test('runtime head code importing training code is refused, the reverse allowed', () => {
    const problems = check({
      'src/heads/runtime/head-runner.ts': "export { rowStride } from '../training/train.js';\n",
      'src/heads/training/train.ts': "import { AcceptanceHead } from '../runtime/head-runner.js';\nexport const rowStride = 1;\n",
    });
    assert.equal(problems.length, 2, problems.join('\n'));
    assert.match(problems[0], /heads\/runtime \(layer 3\) may not import heads\/training/);
    assert.match(problems[1], /runtime code may not import heads\/training/);
  });

  test('importing a test fixture outside tests is refused, dynamic and type-only imports included', () => {
    const problems = check({
      'src/onnx/head-graph.ts': "const f = await import('../testing/decoder-fixture.js');\n",
      'src/bench/bench.ts': "import type { KvDtype } from '../testing/decoder-fixture.js';\n",
      'src/testing/decoder-fixture.ts': "export type KvDtype = 'float32';\n",
    });
    assert.ok(problems.some((p) => p.startsWith('src/onnx/head-graph.ts') && p.includes('only tests import src/testing')), problems.join('\n'));
    assert.ok(problems.some((p) => p.startsWith('src/bench/bench.ts') && p.includes('only tests import src/testing')), problems.join('\n'));
  });

  test('a new folder under src/ must be given a layer', () => {
    const problems = check({ 'src/policies/fixed.ts': "import { Rng } from '../engine/rng.js';\n", 'src/engine/rng.ts': 'export class Rng {}\n' });
    assert.deepEqual(problems, ['src/policies/fixed.ts: area policies has no layer (add it to LAYERS)']);
  });
});
