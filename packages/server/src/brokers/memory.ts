/**
 * The in-memory broker: the default for one node and the reference implementation of the broker
 * contract. Every channel stream (epoch, seq, history ring, idempotency keys) is bounded; the
 * least recently published streams are dropped past `maxChannels`, which starts a new epoch for
 * that channel so resuming clients are told of the discontinuity.
 * @module
 */
import { randomBytes } from 'node:crypto';
import type { Channel, Position } from '@tidings/protocol';
import type {
  Broker,
  EvictionReason,
  HistoryPage,
  Publication,
  PublicationHandler,
  PublishCommand,
  PublishOutcome,
} from './broker.js';

interface Entry {
  readonly pub: Publication;
  readonly expires: number;
}

interface Stream {
  readonly epoch: string;
  seq: number;
  /** Oldest first; bounded by the namespace's history size. */
  readonly history: Entry[];
  /** Index of the oldest live entry in `history` (lazy compaction avoids O(n) shifts). */
  head: number;
  evicted: EvictionReason | undefined;
  /** Idempotency key to outcome; insertion order is expiry order. */
  readonly keys: Map<string, { position: Position; expires: number }>;
}

/** Options of the in-memory broker. */
export interface MemoryBrokerOptions {
  readonly maxChannels: number;
  readonly dedupMaxKeys: number;
  /** Injected clock, for tests. */
  readonly now?: () => number;
}

/** A new random epoch: 8 base-36 characters. */
export function newEpoch(): string {
  return randomBytes(6).readUIntBE(0, 6).toString(36).padStart(8, '0').slice(-8);
}

export class MemoryBroker implements Broker {
  readonly #streams = new Map<Channel, Stream>();
  readonly #subscribed = new Set<Channel>();
  readonly #opts: MemoryBrokerOptions;
  readonly #now: () => number;
  #handler: PublicationHandler | undefined;

  constructor(opts: MemoryBrokerOptions) {
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
  }

  start(handler: PublicationHandler): Promise<void> {
    this.#handler = handler;
    return Promise.resolve();
  }

  publish(cmd: PublishCommand): Promise<PublishOutcome> {
    const now = this.#now();
    const stream = this.#stream(cmd.channel, true) as Stream;
    if (cmd.idempotencyKey !== undefined) {
      pruneKeys(stream.keys, now);
      const seen = stream.keys.get(cmd.idempotencyKey);
      if (seen !== undefined) return Promise.resolve({ position: seen.position, duplicate: true });
    }
    stream.seq += 1;
    const position: Position = { epoch: stream.epoch, seq: stream.seq };
    const pub: Publication = { channel: cmd.channel, position, type: cmd.type, data: cmd.data, ephemeral: cmd.ephemeral };
    if (!cmd.ephemeral && cmd.historySize > 0) {
      stream.history.push({ pub, expires: now + cmd.historyTtl });
      this.#trim(stream, cmd.historySize, now);
    }
    if (cmd.idempotencyKey !== undefined && cmd.dedupWindow > 0 && this.#opts.dedupMaxKeys > 0) {
      if (stream.keys.size >= this.#opts.dedupMaxKeys) {
        const oldest = stream.keys.keys().next();
        if (oldest.done !== true) stream.keys.delete(oldest.value);
      }
      stream.keys.set(cmd.idempotencyKey, { position, expires: now + cmd.dedupWindow });
    }
    if (this.#subscribed.has(cmd.channel)) this.#handler?.(pub);
    return Promise.resolve({ position, duplicate: false });
  }

  subscribe(channel: Channel): Promise<void> {
    this.#subscribed.add(channel);
    return Promise.resolve();
  }

  unsubscribe(channel: Channel): Promise<void> {
    this.#subscribed.delete(channel);
    return Promise.resolve();
  }

  history(channel: Channel, since: Position | undefined, limit: number): Promise<HistoryPage> {
    const stream = this.#stream(channel, true) as Stream;
    const now = this.#now();
    this.#expire(stream, now);
    const top: Position = { epoch: stream.epoch, seq: stream.seq };
    const publications: Publication[] = [];
    if (since === undefined || since.epoch === stream.epoch) {
      const after = since?.seq ?? 0;
      const { history } = stream;
      // Seqs ascend but may skip (ephemeral publications are not stored): binary search.
      let lo = stream.head;
      let hi = history.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if ((history[mid] as Entry).pub.position.seq <= after) lo = mid + 1;
        else hi = mid;
      }
      for (let i = lo; i < history.length && publications.length < limit; i++) publications.push((history[i] as Entry).pub);
    }
    return Promise.resolve({ top, publications, evicted: stream.evicted });
  }

  close(): Promise<void> {
    this.#subscribed.clear();
    this.#streams.clear();
    this.#handler = undefined;
    return Promise.resolve();
  }

  /** Number of channel streams held (for tests of the bound). */
  get size(): number {
    return this.#streams.size;
  }

  #stream(channel: Channel, create: boolean): Stream | undefined {
    let stream = this.#streams.get(channel);
    if (stream !== undefined) {
      // Re-insert to keep the map in least-recently-used order.
      this.#streams.delete(channel);
      this.#streams.set(channel, stream);
      return stream;
    }
    if (!create) return undefined;
    if (this.#streams.size >= this.#opts.maxChannels) {
      const lru = this.#streams.keys().next();
      if (lru.done !== true) this.#streams.delete(lru.value);
    }
    stream = { epoch: newEpoch(), seq: 0, history: [], head: 0, evicted: undefined, keys: new Map() };
    this.#streams.set(channel, stream);
    return stream;
  }

  #trim(stream: Stream, size: number, now: number): void {
    if (stream.history.length - stream.head > size) {
      stream.head = stream.history.length - size;
      stream.evicted = 'trimmed';
    }
    this.#expire(stream, now);
  }

  #expire(stream: Stream, now: number): void {
    const { history } = stream;
    while (stream.head < history.length && (history[stream.head] as Entry).expires <= now) {
      stream.head += 1;
      stream.evicted = 'expired';
    }
    if (stream.head > 64 && stream.head * 2 >= history.length) {
      history.splice(0, stream.head);
      stream.head = 0;
    }
  }
}

function pruneKeys(keys: Map<string, { expires: number }>, now: number): void {
  for (const [key, v] of keys) {
    if (v.expires > now) return;
    keys.delete(key);
  }
}
