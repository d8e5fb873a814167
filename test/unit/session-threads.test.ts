/**
 * Intra-op spin-waiting (session-threads.ts): `--intra-op-spinning auto|on|off` (bare: on)
 * reaches the pair options; `auto`, the default, spins only while other processes leave the
 * CPU idle, read from two os.cpus() readings less this process's own CPU time.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Command, CommanderError } from 'commander';
import { addModelOptions, type ModelFlags, pairOptions } from '../../src/cli/options.js';
import { ALONE_MAX_BUSY_CORES, DEFAULT_SPINNING, othersBusyCoresBetween, resolveSpinning, spinningBesideDraft, spinningConfig, spinWhen } from '../../src/engine/session-threads.js';

const parse = (argv: string[]) => pairOptions(addModelOptions(new Command()).exitOverride().configureOutput({ writeErr: () => {} }).parse(argv, { from: 'user' }).opts<ModelFlags>());

test('ONNX Runtime config: allow_spinning 0 for a session built without a decision, 1 when it spins', () => {
  assert.deepEqual(spinningConfig(), { session: { intra_op: { allow_spinning: '0' } } });
  assert.deepEqual(spinningConfig(false), { session: { intra_op: { allow_spinning: '0' } } });
  assert.deepEqual(spinningConfig(true), { session: { intra_op: { allow_spinning: '1' } } });
});

test('--intra-op-spinning auto|on|off reaches the pair options (bare: on); without it the pair keeps the default, auto', () => {
  assert.equal(parse(['--intra-op-spinning']).spinning, 'on');
  assert.equal(parse(['--intra-op-spinning', 'off']).spinning, 'off');
  assert.equal(parse(['--intra-op-spinning', 'on']).spinning, 'on');
  assert.equal(parse(['--intra-op-spinning', 'auto']).spinning, 'auto');
  assert.equal(parse([]).spinning, undefined);
  assert.equal(DEFAULT_SPINNING, 'auto');
  assert.equal(parse(['--threads', '2']).threads, 2);
  assert.throws(
    () => parse(['--intra-op-spinning', 'sometimes']),
    (err: unknown) => err instanceof CommanderError && /--intra-op-spinning.*sometimes.*expected one of auto, on, off/s.test(err.message),
  );
});

test('the rule: on and off as given; auto spins only below the busy share of other processes', () => {
  for (const busy of [0, 0.1, 1.9]) {
    assert.equal(spinWhen('on', busy), true);
    assert.equal(spinWhen('off', busy), false);
  }
  assert.equal(spinWhen('auto', 0), true);
  assert.equal(spinWhen('auto', ALONE_MAX_BUSY_CORES - 0.01), true);
  assert.equal(spinWhen('auto', ALONE_MAX_BUSY_CORES), false);
  assert.equal(spinWhen('auto', 1.5), false);
});

test("other processes' busy cores: the machine's busy time less this process's own, over the wall time", () => {
  // 2 cores over 100 ms of wall time (200 ms of CPU time in all).
  const before = { busyMs: 1000, totalMs: 5000 };
  assert.equal(othersBusyCoresBetween(before, { busyMs: 1150, totalMs: 5200 }, 50, 2), 1, '150 ms busy, 50 of them this process: one core');
  assert.equal(othersBusyCoresBetween(before, { busyMs: 1100, totalMs: 5200 }, 100, 2), 0, 'only this process was busy');
  assert.equal(othersBusyCoresBetween(before, { busyMs: 1010, totalMs: 5200 }, 40, 2), 0, 'never below 0 (readings of different granularity)');
  assert.equal(othersBusyCoresBetween(before, before, 0, 2), 0, 'no time passed');
});

test('resolveSpinning: booleans and on/off as given, without watching the CPU; auto gives a decision', async () => {
  assert.equal(await resolveSpinning(true), true);
  assert.equal(await resolveSpinning(false), false);
  assert.equal(await resolveSpinning('on'), true);
  assert.equal(await resolveSpinning('off'), false);
  assert.equal(typeof (await resolveSpinning('auto')), 'boolean');
});

test('beside a draft on several threads auto does not spin; a one-thread draft keeps auto; explicit modes stay', () => {
  assert.equal(spinningBesideDraft(undefined, 2), false);
  assert.equal(spinningBesideDraft('auto', 2), false);
  assert.equal(spinningBesideDraft('auto', 1), 'auto');
  assert.equal(spinningBesideDraft(undefined, 1), DEFAULT_SPINNING);
  assert.equal(spinningBesideDraft('on', 2), 'on');
  assert.equal(spinningBesideDraft(true, 2), true);
  assert.equal(spinningBesideDraft('off', 1), 'off');
});
