/**
 * How ONNX Runtime's intra-op threads wait between runs. By default a session's worker threads
 * spin-wait for the next parallel section; specd turns that off unless asked.
 */

/**
 * Whether intra-op threads spin-wait between runs unless asked otherwise: no. On the 2-core CPU
 * shared with other work (load average 10-13, bundled pair, 4 gsm8k prompts x 128 tokens, the
 * two settings alternated), spinning made `none` 2.5-3.5x slower, and a draft step in the round
 * 2-5x slower: the target's spinning workers hold the cores the draft's pass and the JavaScript
 * between passes need. At load average 4-5 every policy ran 1.7-2.1x as fast without spinning. On the same CPU
 * quiet, spinning was faster: `none` 1.2-1.3x, specdec++ 1.1x (two builds alternated in one
 * process, docs/benchmarks.md). Off is the default that never loses by a multiple; a dedicated
 * host passes `spinning: true` (`--intra-op-spinning`).
 */
export const SPIN_BY_DEFAULT = false;

/** ONNX Runtime's session config for intra-op spin-waiting (`SessionOptions.extra`). */
export function spinningConfig(spinning = SPIN_BY_DEFAULT): { session: { intra_op: { allow_spinning: '0' | '1' } } } {
  return { session: { intra_op: { allow_spinning: spinning ? '1' : '0' } } };
}
