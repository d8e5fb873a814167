/**
 * The main thread's event-loop delay (perf_hooks `monitorEventLoopDelay`): how late a timer
 * that should fire every RESOLUTION_MS actually fires. The recorded samples include the
 * interval itself, so it is subtracted: an idle loop reads about 0, a loop blocked for 30 ms
 * reads about 30 ms. Forward passes never run on this thread, so this stays small while the
 * workers generate.
 */
import { type IntervalHistogram, monitorEventLoopDelay } from 'node:perf_hooks';

/** Sampling interval of the monitor. */
export const RESOLUTION_MS = 1;

export interface EventLoopDelay {
  /** Seconds. */
  p50: number;
  p90: number;
  p99: number;
  max: number;
  /** Samples behind the figures. */
  samples: number;
}

export class EventLoopMonitor {
  private readonly histogram: IntervalHistogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS });

  constructor() {
    this.histogram.enable();
  }

  /** Forget the samples so far (e.g. those taken while the server started). */
  reset(): void {
    this.histogram.reset();
  }

  snapshot(): EventLoopDelay {
    const h = this.histogram;
    const seconds = (ns: number) => (h.count === 0 ? 0 : Math.max(0, ns / 1e6 - RESOLUTION_MS) / 1000);
    return { p50: seconds(h.percentile(50)), p90: seconds(h.percentile(90)), p99: seconds(h.percentile(99)), max: seconds(h.max), samples: h.count };
  }

  stop(): void {
    this.histogram.disable();
  }
}
