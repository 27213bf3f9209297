/**
 * A periodic duty per member (a heartbeat per connection), spread over time: each member is served
 * one `interval` after it joined or was last served, not all of them in one sweep. One sweep over
 * 10,000 connections writes to 10,000 sockets in one turn, a pause of hundreds of milliseconds that
 * every delivery due in it waits for; spread, the same writes come a few dozen per tick.
 *
 * The members are kept in the order they fall due: a member served is moved to the end, and every
 * member is due one interval after its last service, so a tick serves from the front and stops at
 * the first member not yet due. Times are counted in ticks (small integers, no allocation per
 * member); call {@link Beats.tick} every {@link Beats.tickMs}.
 * @module
 */

/** At most this many ticks per interval: a member is served at most one tick late. */
const TICKS_PER_INTERVAL = 25;
/** The shortest tick, in ms. */
const MIN_TICK_MS = 10;

export class Beats<T> {
  /** How often {@link tick} must be called, in ms. */
  readonly tickMs: number;
  readonly #ticksPerInterval: number;
  /** Each member and the tick it is next due at, in the order they fall due. */
  readonly #due = new Map<T, number>();
  #now = 0;

  /** Serves each member with `serve` every `interval` ms. */
  constructor(
    interval: number,
    private readonly serve: (member: T) => void,
  ) {
    this.tickMs = Math.max(MIN_TICK_MS, Math.floor(interval / TICKS_PER_INTERVAL));
    this.#ticksPerInterval = Math.max(1, Math.round(interval / this.tickMs));
  }

  /** Members. */
  get size(): number {
    return this.#due.size;
  }

  /** Adds `member`, first due one interval from now. */
  add(member: T): void {
    this.#due.delete(member);
    this.#due.set(member, this.#now + this.#ticksPerInterval);
  }

  /** Removes `member`; false if it was not one. */
  delete(member: T): boolean {
    return this.#due.delete(member);
  }

  /** Every member, in the order they fall due. */
  [Symbol.iterator](): IterableIterator<T> {
    return this.#due.keys();
  }

  /** One tick: serves every member that is due, each then due again one interval later. */
  tick(): void {
    const now = ++this.#now;
    const next = now + this.#ticksPerInterval;
    for (const [member, due] of this.#due) {
      // Members served in this tick were moved to the end, due `next`: the loop stops there at the latest.
      if (due > now) return;
      this.#due.delete(member);
      this.#due.set(member, next);
      this.serve(member);
    }
  }
}
