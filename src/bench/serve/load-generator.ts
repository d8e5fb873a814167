/**
 * The load generator: sends requests at their arrival times (arrivals.ts), at most
 * `concurrency` in flight (a request due while every slot is busy waits for one, as with
 * `vllm bench serve --max-concurrency`), and collects each outcome in request order.
 */
import { arrivalOffsets } from './arrivals.js';

export interface LoadOptions {
  /** Requests per second (Poisson arrivals); Infinity: all due at once. */
  requestRate: number;
  /** Most requests in flight; Infinity: no cap. */
  concurrency: number;
  /** Seeds the arrival times. */
  seed: number;
  /** Called after each request ends. */
  onDone?: (done: number) => void;
}

export interface LoadRun<T> {
  results: T[];
  /** From the first request sent to the last one ended, seconds. */
  durationS: number;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Run `send(0..count-1)` under the schedule; `send` must not throw. */
export async function runLoad<T>(count: number, send: (index: number) => Promise<T>, opts: LoadOptions): Promise<LoadRun<T>> {
  const offsets = arrivalOffsets(count, opts.requestRate, opts.seed);
  const results = new Array<T>(count);
  const waiting: (() => void)[] = [];
  let inFlight = 0;
  let done = 0;
  // A finished request hands its slot straight to the longest waiter, so none is taken twice.
  const acquire = async () => {
    if (inFlight < opts.concurrency) inFlight++;
    else await new Promise<void>((r) => waiting.push(r));
  };
  const release = () => {
    const next = waiting.shift();
    if (next) next();
    else inFlight--;
  };
  const start = performance.now();
  const tasks: Promise<void>[] = [];
  for (let i = 0; i < count; i++) {
    // Timers run whole milliseconds and may fire a fraction early: wait until the time has come.
    for (let due = start + offsets[i]! * 1000 - performance.now(); due > 0; due = start + offsets[i]! * 1000 - performance.now()) {
      await sleep(Math.ceil(due));
    }
    tasks.push(
      (async () => {
        await acquire();
        try {
          results[i] = await send(i);
        } finally {
          release();
          opts.onDone?.(++done);
        }
      })(),
    );
  }
  await Promise.all(tasks);
  return { results, durationS: (performance.now() - start) / 1000 };
}
