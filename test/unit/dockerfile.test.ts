/** The Dockerfile parses and lints clean, and keeps the promises the README makes about it. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { validate } from 'dockerfile-utils';

const dockerfile = readFileSync('Dockerfile', 'utf8');

test('Dockerfile has no lint problems', () => {
  const problems = validate(dockerfile).map((d) => `line ${d.range.start.line + 1}: ${d.message}`);
  assert.deepEqual(problems, []);
});

test('Dockerfile: CUDA 12 + cuDNN 9 base, CUDA EP installed, non-root, port, health check, bundled models', () => {
  assert.match(dockerfile, /^FROM nvidia\/cuda:12\.[\d.]+-cudnn-runtime-/m);
  assert.match(dockerfile, /npm ci [^\n]*\\\n && npm run install-cuda/);
  assert.match(dockerfile, /^USER specd$/m);
  assert.match(dockerfile, /^EXPOSE 8000$/m);
  assert.match(dockerfile, /^HEALTHCHECK .*\n.*\/health/m);
  assert.match(dockerfile, /^COPY .*models \.\/models$/m);
  assert.match(dockerfile, /"serve", "--host", "0\.0\.0\.0", "--port", "8000", "--device", "cuda"/);
});
