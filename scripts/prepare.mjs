#!/usr/bin/env node
// npm's `prepare` script: builds dist/ with tsc (incremental). `npx specd` from a checkout installs
// the checkout into npx's cache, which runs `prepare` again; when dist/ is already built (by
// `npm ci`) that run is skipped, so the first `npx specd` starts at once. npm names the command
// that triggered the script in npm_command ("exec" for npx and npm exec).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

if (process.env.npm_command === 'exec' && existsSync(new URL('../dist/src/cli/main.js', import.meta.url))) process.exit(0);
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const run = spawnSync(process.execPath, [tsc, '-p', fileURLToPath(new URL('../tsconfig.json', import.meta.url))], { stdio: 'inherit' });
process.exit(run.status ?? 1);
