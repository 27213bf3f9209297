/**
 * A clock a test moves by hand (`GatewayParts.clock`): `advance(ms)` runs every timer that falls due,
 * in order, with `now()` at each timer's time, so an hour of token lifetimes passes in a moment.
 * @module
 */
import type { Clock, ClockTimer } from '@tidings/server';

interface Pending {
  readonly at: number;
  readonly seq: number;
  readonly fn: () => void;
  readonly handle: ClockTimer;
}

export class ManualClock implements Clock {
  #now: number;
  #seq = 0;
  readonly #timers = new Map<ClockTimer, Pending>();

  constructor(start = Date.now()) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(fn: () => void, ms: number): ClockTimer {
    const handle = { __clockTimer: true } as const;
    this.#timers.set(handle, { at: this.#now + Math.max(0, ms), seq: ++this.#seq, fn, handle });
    return handle;
  }

  clearTimeout(timer: ClockTimer | undefined): void {
    if (timer !== undefined) this.#timers.delete(timer);
  }

  /** Timers waiting. */
  get pending(): number {
    return this.#timers.size;
  }

  /** Moves time forward by `ms`, running each timer that falls due on the way (timers they set included). */
  advance(ms: number): void {
    const end = this.#now + ms;
    for (;;) {
      let next: Pending | undefined;
      for (const t of this.#timers.values()) if (t.at <= end && (next === undefined || t.at < next.at || (t.at === next.at && t.seq < next.seq))) next = t;
      if (next === undefined) break;
      this.#timers.delete(next.handle);
      this.#now = Math.max(this.#now, next.at);
      next.fn();
    }
    this.#now = end;
  }
}
