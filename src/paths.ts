/** Where the package's own files live, wherever it is installed or run from. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package root (this file is compiled to dist/src/paths.js). */
export const PACKAGE_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** The bundled default pair. */
export const BUNDLED_TARGET = fileURLToPath(new URL('../../models/specd-pair-target', import.meta.url));
export const BUNDLED_DRAFT = fileURLToPath(new URL('../../models/specd-pair-draft', import.meta.url));
/** The bundled pair's acceptance head (SpecDec++), trained by `specd head train`. */
export const BUNDLED_HEAD = fileURLToPath(new URL('../../models/specd-pair.head.onnx', import.meta.url));

/** Benchmark data sets shipped with the package. */
export const DATASETS_DIR = fileURLToPath(new URL('../../bench/datasets', import.meta.url));

/** specd's version (package.json). */
export const SPECD_VERSION = (JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
