/**
 * Intra-op spin-waiting: off unless asked (session-threads.ts), and `--intra-op-spinning` turns
 * it on for every session the pair loads (options.ts -> PairOptions.spinning).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Command } from 'commander';
import { addModelOptions, type ModelFlags, pairOptions } from '../../src/cli/options.js';
import { SPIN_BY_DEFAULT, spinningConfig } from '../../src/engine/session-threads.js';

const parse = (argv: string[]) => pairOptions(addModelOptions(new Command()).exitOverride().parse(argv, { from: 'user' }).opts<ModelFlags>());

test('sessions do not spin-wait unless asked: ONNX Runtime config allow_spinning 0 by default, 1 when asked', () => {
  assert.equal(SPIN_BY_DEFAULT, false);
  assert.deepEqual(spinningConfig(), { session: { intra_op: { allow_spinning: '0' } } });
  assert.deepEqual(spinningConfig(false), { session: { intra_op: { allow_spinning: '0' } } });
  assert.deepEqual(spinningConfig(true), { session: { intra_op: { allow_spinning: '1' } } });
});

test('--intra-op-spinning reaches the pair options; without it the pair keeps the default', () => {
  assert.equal(parse(['--intra-op-spinning']).spinning, true);
  assert.equal(parse([]).spinning, undefined);
  assert.equal(parse(['--threads', '2']).threads, 2);
});
