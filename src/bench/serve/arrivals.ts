/**
 * Request arrival times for the load generator: a Poisson process of rate R requests/s
 * (exponential inter-arrival times with mean 1/R, drawn from a seeded generator so a seed
 * reproduces the schedule), or every request at once when R is infinite. The first request
 * goes at time 0, as in `vllm bench serve`.
 */
import { Rng } from '../../engine/rng.js';

/** An exponential variate with the given rate, by inversion of a uniform in [0, 1). */
export function exponential(rng: Rng, rate: number): number {
  return -Math.log(1 - rng.next()) / rate;
}

/** Offsets in seconds from the start of the run at which each of `count` requests is sent. */
export function arrivalOffsets(count: number, rate: number, seed: number): number[] {
  if (!(rate > 0)) throw new RangeError(`request rate must be positive, got ${rate}`);
  if (rate === Infinity) return new Array<number>(count).fill(0);
  const rng = new Rng(seed);
  const out: number[] = [];
  let t = 0;
  for (let i = 0; i < count; i++) {
    if (i > 0) t += exponential(rng, rate);
    out.push(t);
  }
  return out;
}
