/**
 * How ONNX Runtime's intra-op threads wait between runs. By default a session's worker threads
 * spin-wait for the next parallel section; specd lets them spin only while it is alone on the
 * machine (`auto`), decided when a pair's sessions are created.
 *
 * Why: on the 2-core CPU shared with other work (load average 10-13, bundled pair, 4 gsm8k
 * prompts x 128 tokens, the two settings alternated), spinning made `none` 2.5-3.5x slower, and a
 * draft step in the round 2-5x slower: the target's spinning workers hold the cores the draft's
 * pass and the JavaScript between passes need. At load average 4-5 every policy ran 1.7-2.1x as
 * fast without spinning. On the same CPU quiet, spinning was faster: `none` 1.2-1.3x, specdec++
 * 1.1x (two builds alternated in one process, docs/benchmarks.md). So spinning pays exactly when
 * no other process wants the cores.
 */
import { cpus } from 'node:os';

/** `on` and `off` as they say; `auto`: spin when no other process is busy as the sessions are created. */
export type SpinningMode = 'auto' | 'on' | 'off';
export const SPINNING_MODES: readonly SpinningMode[] = ['auto', 'on', 'off'];
/** The mode unless asked otherwise. */
export const DEFAULT_SPINNING: SpinningMode = 'auto';
/**
 * Under `auto`, the CPU time other processes may take (in cores, over the sampling window) for
 * the engine to count as alone: a quiet host's daemons take a few hundredths of a core, a second
 * busy process a whole one.
 */
export const ALONE_MAX_BUSY_CORES = 0.25;
/** How long `auto` watches the CPU before deciding, ms. */
export const SAMPLE_MS = 100;

/** ONNX Runtime's session config for intra-op spin-waiting (`SessionOptions.extra`); a session built without a decision does not spin. */
export function spinningConfig(spinning = false): { session: { intra_op: { allow_spinning: '0' | '1' } } } {
  return { session: { intra_op: { allow_spinning: spinning ? '1' : '0' } } };
}

/**
 * Whether sessions spin under `mode` when other processes keep `othersBusyCores` cores busy:
 * `auto` spins below ALONE_MAX_BUSY_CORES.
 */
export function spinWhen(mode: SpinningMode, othersBusyCores: number): boolean {
  return mode === 'on' || (mode === 'auto' && othersBusyCores < ALONE_MAX_BUSY_CORES);
}

/** Busy and total CPU time of every core together, ms (os.cpus() times). */
export interface CpuTimes {
  busyMs: number;
  totalMs: number;
}

export function cpuTimes(): CpuTimes {
  let busyMs = 0;
  let totalMs = 0;
  for (const { times } of cpus()) {
    const busy = times.user + times.nice + times.sys + times.irq;
    busyMs += busy;
    totalMs += busy + times.idle;
  }
  return { busyMs, totalMs };
}

/**
 * Cores kept busy by other processes between two readings: the machine's busy time less this
 * process's own (`ownMs`, from process.cpuUsage()), over the wall time the readings span (the
 * total CPU time divided by the cores). Never below 0.
 * @param cores the machine's logical cores (> 0)
 */
export function othersBusyCoresBetween(before: CpuTimes, after: CpuTimes, ownMs: number, cores: number): number {
  const wallMs = (after.totalMs - before.totalMs) / cores;
  if (!(wallMs > 0)) return 0;
  return Math.max(0, (after.busyMs - before.busyMs - ownMs) / wallMs);
}

/**
 * Whether the sessions about to be created spin: `on`/`off` (or a boolean) as given; `auto`
 * (also when undefined) watches the CPU for SAMPLE_MS and spins when other processes kept less
 * than ALONE_MAX_BUSY_CORES busy. Decided once: a host that gets busy later keeps the decision
 * until the sessions are created again (a restart).
 */
export async function resolveSpinning(mode: SpinningMode | boolean | undefined = DEFAULT_SPINNING): Promise<boolean> {
  if (typeof mode === 'boolean') return mode;
  if (mode !== 'auto') return spinWhen(mode, 0);
  const before = cpuTimes();
  const ownBefore = process.cpuUsage();
  await new Promise((resolve) => setTimeout(resolve, SAMPLE_MS));
  const own = process.cpuUsage(ownBefore);
  return spinWhen(mode, othersBusyCoresBetween(before, cpuTimes(), (own.user + own.system) / 1000, cpus().length));
}

/**
 * The spinning mode for a pair whose draft runs on `draftThreads` intra-op threads: `auto` becomes
 * off beside a draft on several threads (two thread pools spinning on the same cores took them from
 * each other: on the quiet 2-core host a Qwen3-0.6B-shaped pair with a 2-thread draft ran fixed:2 at
 * 0.81x `none` with spinning and 1.33x without, docs/benchmarks.md 2026-12-08); explicit modes stay.
 */
export function spinningBesideDraft(mode: SpinningMode | boolean | undefined, draftThreads: number): SpinningMode | boolean {
  const chosen = mode ?? DEFAULT_SPINNING;
  return chosen === 'auto' && draftThreads > 1 ? false : chosen;
}
