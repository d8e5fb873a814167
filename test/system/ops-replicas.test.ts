/**
 * Three `specd serve` replicas behind a real HAProxy (Debian's), `specd bench serve` streaming
 * through it, a rolling restart (SIGTERM) of one replica and a SIGKILL of another meanwhile
 * (test/replicas/rolling-restart.ts, also `npm run replicas`): the streams under way on the
 * drained replica finish, the replica exits 0 and comes back; the only requests that fail are
 * ones the killed replica was serving when it died; every other request, those HAProxy had to
 * send elsewhere included, succeeds.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { requireTools } from '../support/debian-tools.js';
import { classify, runRollingRestart } from '../replicas/rolling-restart.js';

const PROMPTS = 100;

test('rolling restart and a crash behind HAProxy: only the killed replica\'s in-flight requests fail', { timeout: 280_000 }, async (t) => {
  const tools = requireTools(t, 'haproxy');
  if (!tools) return;
  const report = await runRollingRestart({ haproxy: tools.haproxy, prompts: PROMPTS, concurrency: 6, maxTokens: 96, timeoutMs: 260_000, log: (l) => t.diagnostic(l) });
  const c = classify(report);
  const b = report.bench;
  t.diagnostic(`${b.completed} completed, ${b.failed} failed; ${c.drainedInFlight.length} streams drained; ${c.abnormal.length} cut by the crash; ${c.redispatched.length} redispatched; ${b.output_throughput.toFixed(1)} tokens/s`);

  assert.equal(b.completed + b.failed, PROMPTS);
  assert.equal(c.chats.length, PROMPTS + 1, 'HAProxy logged every request (and the warm-up)');
  // The drained replica: streams under way at SIGTERM all finished, and it exited cleanly.
  assert.ok(c.drainedInFlight.length >= 1, 'streams were under way at SIGTERM');
  for (const r of c.drainedInFlight) assert.ok(r.status === 200 && r.termination === '--', `drained stream ended ${r.status} ${r.termination}`);
  assert.equal(report.drained.exitCode, 0);
  // Failures: only requests on the killed replica, accepted before it died, and no more than it was running.
  for (const r of c.abnormal) {
    assert.equal(r.server, report.killed.server, `a request failed on ${r.server}: ${r.status} ${r.termination}`);
    assert.ok(r.acceptedAt <= report.killed.sigkillAt, 'a request that arrived after the crash failed');
  }
  assert.ok(c.abnormal.length <= report.killed.runningAtSigkill, `${c.abnormal.length} cut, ${report.killed.runningAtSigkill} were running`);
  assert.equal(b.failed, c.abnormal.length, `the client saw exactly those fail: ${b.errors.join('; ')}`);
  // Requests after the crash went to the live replicas.
  assert.ok(c.chats.some((r) => r.acceptedAt > report.killed.sigkillAt && r.status === 200));
});
