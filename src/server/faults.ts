/**
 * Fault injection for the engine workers, for tests of how the server survives a worker that
 * fails mid-generation. Only `buildApp`'s `faults` option sets it (never a flag, never a
 * request field); without it the workers run no fault code at all.
 *
 * Generations are numbered 1, 2, ... across the whole pool (a counter in shared memory, so a
 * worker that replaces a dead one goes on counting), and the generations listed in `at` fail
 * right after their first tokens have been posted:
 *
 *   throw     the generation throws: the worker reports an `error` and lives on
 *   uncaught  an exception escapes every handler: the worker thread dies
 *   exit      the worker thread calls process.exit
 *   stall     the worker thread spins for ever (a stuck round: nothing more comes from it)
 */

export type FaultKind = 'throw' | 'uncaught' | 'exit' | 'stall';

export interface FaultOptions {
  kind: FaultKind;
  /** 1-based generation numbers (counted over the pool) that fail. */
  at: number[];
}

/** What crosses into the workers (`workerData`): the options and the shared counter. */
export interface WorkerFaults extends FaultOptions {
  counter: SharedArrayBuffer;
}

export class InjectedFault extends Error {
  override name = 'InjectedFault';
}

export function workerFaults(options: FaultOptions): WorkerFaults {
  return { ...options, counter: new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT) };
}

/** Counts a generation; returns the fault it must suffer, if any. */
export function nextFault(faults: WorkerFaults | undefined): FaultKind | undefined {
  if (!faults) return undefined;
  const n = Atomics.add(new Int32Array(faults.counter), 0, 1) + 1;
  return faults.at.includes(n) ? faults.kind : undefined;
}

/** Make the fault happen (called on the worker thread). */
export function triggerFault(kind: FaultKind): void {
  switch (kind) {
    case 'throw':
      throw new InjectedFault('injected fault: the generation threw');
    case 'uncaught':
      // Thrown a little later, so that the tokens just posted reach the client first: a worker's
      // death and its port's last messages arrive on the main thread in no fixed order.
      setTimeout(() => {
        throw new InjectedFault('injected fault: uncaught exception in the engine worker');
      }, 20);
      return;
    case 'stall':
      for (;;);
    case 'exit':
      process.exit(70);
  }
}
