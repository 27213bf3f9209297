/**
 * A periodic duty per member (a heartbeat per connection), spread over time rather than done for
 * every member in one sweep. One sweep over 10,000 connections writes to 10,000 sockets in one turn,
 * a pause of hundreds of milliseconds that every delivery due in it waits for.
 *
 * Time is counted in ticks, `interval / tickMs` of them per interval: a ring of as many slots, and a
 * member sits in one slot, served at every tick that comes to it, so exactly one interval apart.
 * When it joins, a member takes the least loaded slot of those between half an interval and one
 * interval ahead (one interval ahead when there is no difference): its first service is never later
 * than an interval after it joined. So members joining at different times are served at different
 * ticks, and so are members joining together: after a restart or a network blip, thousands of
 * clients reconnect within a second or two, and their heartbeats would otherwise come in the same
 * tick or two every interval, for as long as they stay.
 *
 * Call {@link Beats.tick} every {@link Beats.tickMs}.
 * @module
 */

/** At most this many ticks per interval: a member is served at most one tick late. */
const TICKS_PER_INTERVAL = 25;
/** The shortest tick, in ms. */
const MIN_TICK_MS = 10;

export class Beats<T> {
  /** How often {@link tick} must be called, in ms. */
  readonly tickMs: number;
  /** Ticks per interval: slots in the ring. */
  readonly #period: number;
  /** A member joining now may be first served this many ticks ahead at the earliest (half an interval). */
  readonly #earliest: number;
  /**
   * The members of each slot, served when a tick comes to it. A member's slot is not kept beside it:
   * that would be a second entry per connection, and only a leave looks for it.
   */
  readonly #slots: Set<T>[];
  #now = 0;

  /** Serves each member with `serve` every `interval` ms. */
  constructor(
    interval: number,
    private readonly serve: (member: T) => void,
  ) {
    this.tickMs = Math.max(MIN_TICK_MS, Math.floor(interval / TICKS_PER_INTERVAL));
    this.#period = Math.max(1, Math.round(interval / this.tickMs));
    this.#earliest = Math.max(1, Math.ceil(this.#period / 2));
    this.#slots = Array.from({ length: this.#period }, () => new Set<T>());
  }

  /** Members. */
  get size(): number {
    let n = 0;
    for (const members of this.#slots) n += members.size;
    return n;
  }

  /** Adds `member`, first due between half an interval and one interval from now (once, however often added). */
  add(member: T): void {
    this.delete(member);
    const period = this.#period;
    // One interval ahead is the current tick's slot; fewer ticks ahead only for a slot less loaded.
    let slot = this.#now % period;
    let load = (this.#slots[slot] as Set<T>).size;
    for (let ahead = period - 1; ahead >= this.#earliest && load > 0; ahead--) {
      const s = (this.#now + ahead) % period;
      const n = (this.#slots[s] as Set<T>).size;
      if (n < load) {
        slot = s;
        load = n;
      }
    }
    (this.#slots[slot] as Set<T>).add(member);
  }

  /** Removes `member`; false if it was not one. */
  delete(member: T): boolean {
    for (const members of this.#slots) if (members.delete(member)) return true;
    return false;
  }

  /** Every member. */
  *[Symbol.iterator](): IterableIterator<T> {
    for (const members of this.#slots) yield* members;
  }

  /** One tick: serves the members of the slot it comes to. */
  tick(): void {
    const slot = ++this.#now % this.#period;
    const members = this.#slots[slot] as Set<T>;
    if (members.size === 0) return;
    // A copy: a member that joins while these are served, into this very slot (one interval ahead), is
    // not served in this tick but an interval later.
    for (const member of [...members]) if (members.has(member)) this.serve(member);
  }
}
