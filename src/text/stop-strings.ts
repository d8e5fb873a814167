/**
 * Stop strings over streamed text.
 *
 * `push` returns only text that can no longer be part of a stop string: any suffix of the text
 * seen so far that is a prefix of some stop string is held back until later text decides it.
 * So a stop string is never partly emitted, even when it arrives split across pushes. On a
 * match the text before the earliest stop string is emitted and the matcher stops.
 */

export interface StopPushResult {
  /** Text safe to emit now. */
  emit: string;
  /** True once a stop string has matched; later pushes emit nothing. */
  stopped: boolean;
  /** The stop string that matched (set with `stopped`). */
  stop?: string;
}

export class StopStringMatcher {
  private readonly stops: string[];
  private held = '';
  private matched: string | undefined;

  /** Empty strings in `stops` are ignored; no stops means pass-through. */
  constructor(stops: readonly string[]) {
    this.stops = [...new Set(stops.filter((s) => s.length > 0))];
  }

  get stopped(): boolean {
    return this.matched !== undefined;
  }

  push(delta: string): StopPushResult {
    if (this.matched !== undefined) return { emit: '', stopped: true, stop: this.matched };
    if (this.stops.length === 0) return { emit: delta, stopped: false };

    const text = this.held + delta;
    let at = -1;
    let stop: string | undefined;
    for (const s of this.stops) {
      const i = text.indexOf(s);
      if (i !== -1 && (at === -1 || i < at)) {
        at = i;
        stop = s;
      }
    }
    if (stop !== undefined) {
      this.matched = stop;
      this.held = '';
      return { emit: text.slice(0, at), stopped: true, stop };
    }

    const hold = this.longestPendingSuffix(text);
    this.held = text.slice(text.length - hold);
    return { emit: text.slice(0, text.length - hold), stopped: false };
  }

  /** Generation ended without a stop: returns the held-back text. */
  flush(): string {
    const rest = this.held;
    this.held = '';
    return rest;
  }

  /** Length of the longest suffix of `text` that is a proper prefix of a stop string. */
  private longestPendingSuffix(text: string): number {
    let best = 0;
    for (const s of this.stops) {
      for (let k = Math.min(s.length - 1, text.length); k > best; k--) {
        if (text.endsWith(s.slice(0, k))) {
          best = k;
          break;
        }
      }
    }
    return best;
  }
}
