/**
 * Presence listings shared by the requests that wait for them: at most one broker read per channel in
 * flight on a node, and one queued behind it.
 *
 * A listing reads every entry of the channel at the broker (on Redis, one script over the whole set,
 * which blocks the server every node shares while it runs), and clients may ask for it as often as they
 * like (`GET /presence`, the `presence` frame). Without sharing, a large room listed in a loop from many
 * connections costs that read once per request. Shared, it costs at most two reads at a time per
 * channel, whatever the rate.
 *
 * A request is answered by a read that began after it arrived, so it sees every join made before it
 * asked: the first request starts a read; requests that arrive while it runs share the one read queued
 * to start when it ends; requests that arrive while that one runs share the next.
 * @module
 */
import type { Channel } from '@tidings/protocol';
import type { PresenceEntry, PresenceStore } from './brokers/broker.js';

/** The reads of one channel: the one in flight, and the one queued behind it (shared by its waiters). */
interface Reads {
  running: Promise<PresenceEntry[]>;
  queued: Promise<PresenceEntry[]> | undefined;
}

const settled = (): void => undefined;

export class PresenceListings {
  /** Channels with a read in flight: an entry lives as long as its reads. */
  readonly #reads = new Map<Channel, Reads>();

  constructor(private readonly store: Pick<PresenceStore, 'presence'>) {}

  /** Channels being read now (for stats and leak checks). */
  get size(): number {
    return this.#reads.size;
  }

  /** The channel's entries, read at the broker after this call. */
  presence(channel: Channel): Promise<PresenceEntry[]> {
    const reads = this.#reads.get(channel);
    if (reads === undefined) {
      const fresh: Reads = { running: Promise.resolve([]), queued: undefined };
      this.#reads.set(channel, fresh);
      return this.#read(channel, fresh);
    }
    if (reads.queued !== undefined) return reads.queued;
    const queued = reads.running.then(settled, settled).then(() => {
      reads.queued = undefined;
      return this.#read(channel, reads);
    });
    reads.queued = queued;
    return queued;
  }

  #read(channel: Channel, reads: Reads): Promise<PresenceEntry[]> {
    const running = this.store.presence(channel);
    reads.running = running;
    // Runs before the queued read's start (registered earlier): with nothing queued, the channel is done.
    const done = (): void => {
      if (reads.queued === undefined && reads.running === running) this.#reads.delete(channel);
    };
    void running.then(done, done);
    return running;
  }
}
