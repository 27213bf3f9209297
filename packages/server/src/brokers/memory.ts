/**
 * The in-memory broker: the default for one node and the reference implementation of the broker
 * contract (`broker.ts`: streams only from publishes, protected streams, derived epochs).
 *
 * Per channel stream: the epoch it was created with, a seq counter, a history ring bounded by the
 * namespace's size and age, and idempotency keys bounded by `dedupMaxKeys` and the window. Reads and
 * subscriptions of channels without a stream store nothing: their epoch is derived from the
 * broker's random `life` and one of {@link GENERATION_BUCKETS} generation counters (`epochs.ts`).
 *
 * Bounds, all enforced without ever dropping a protected stream (subscribed by this node, or holding
 * unexpired history or idempotency keys):
 * - `maxChannels` streams. A publish that needs a new stream past it drops the least recently used
 *   droppable stream, examining at most {@link EVICTION_SCAN} streams per attempt and moving
 *   protected ones to the back; with none found it is refused with `storage_full`. Dropping a stream
 *   increments its bucket's generation, so the channel comes back in a new epoch.
 * - `maxHistoryBytes` for everything retained: each history entry (UTF-8 bytes of data, type and
 *   channel, plus {@link ENTRY_OVERHEAD}), each idempotency key (UTF-8 bytes plus
 *   {@link KEY_OVERHEAD}) and each stream (channel bytes plus {@link STREAM_OVERHEAD}). A publish that
 *   would exceed it first releases expired entries and keys on up to {@link RECLAIM_SWEEP} streams and
 *   drops droppable streams (bounded as above), and otherwise is refused with `storage_full`.
 *
 * Expired entries and keys are released when their channel is published to or read, and by an
 * incremental sweep (started by `start()`, stopped by `close()`, `unref`'d) that examines
 * `sweepBatch` streams per run, so channels nobody touches release them too.
 * @module
 */
import { TidingsError, type Channel, type Position } from '@tidings/protocol';
import type {
  Broker,
  EvictionReason,
  HistoryPage,
  Publication,
  BrokerCapabilities,
  BrokerHandlers,
  BrokerSettings,
  PresenceEntry,
  PresenceKey,
  Retention,
  PublishCommand,
  PublishOutcome,
} from './broker.js';
import { isServerKey } from './broker.js';
import { bucketOf, deriveEpoch, GENERATION_BUCKETS, newLife } from './epochs.js';

export { bucketOf, deriveEpoch, GENERATION_BUCKETS, newEpoch } from './epochs.js';

/** Bytes counted per history entry on top of its data, type and channel. */
export const ENTRY_OVERHEAD = 128;
/** Bytes counted per idempotency key on top of the key. */
export const KEY_OVERHEAD = 64;
/** Bytes counted per stream on top of its channel name. */
export const STREAM_OVERHEAD = 256;
/** At most this many least recently used streams are examined per attempt to drop one. */
export const EVICTION_SCAN = 32;
/** Streams whose expired entries and keys a publish over the budget releases before giving up. */
export const RECLAIM_SWEEP = 64;
/** Default `maxHistoryBytes`: 256 MiB. */
export const DEFAULT_MAX_HISTORY_BYTES = 256 * 1024 * 1024;

/** A namespace's retention with the idempotency window. */
interface Policy extends Retention {
  readonly dedupWindow: number;
}

interface Key {
  readonly position: Position;
  readonly expires: number;
  readonly bytes: number;
}

interface Stream {
  readonly channel: Channel;
  readonly channelBytes: number;
  readonly epoch: string;
  seq: number;
  /**
   * Retained publications, oldest first; slots before `head` are released (undefined) until
   * compaction. Each entry's expiry and size are at the same index of `expires` and `sizes`:
   * parallel arrays of unboxed numbers, not an object and a boxed number per entry, which a
   * garbage collection marks one by one (with 960,000 entries retained: 10% less heap, and a full
   * collection of about 600 ms instead of 800).
   */
  readonly history: (Publication | undefined)[];
  /** When each entry expires (ms, the broker's clock). */
  readonly expires: number[];
  /** What each entry counts against the budget. */
  readonly sizes: number[];
  /** Index of the oldest retained entry in `history` (lazy compaction avoids O(n) shifts). */
  head: number;
  evicted: EvictionReason | undefined;
  /**
   * Idempotency key to outcome, clients' keys; insertion order is expiry order. Each map holds
   * `dedupMaxKeys` at most: the server side's keys are kept apart, so no client's push them out.
   */
  readonly keys: Map<string, Key>;
  /** The server side's keys (see {@link isServerKey}), as `keys`. */
  readonly serverKeys: Map<string, Key>;
  /** What the stream counts against the budget: overhead, retained entries and keys. */
  bytes: number;
}

/** Options of the in-memory broker. */
export interface MemoryBrokerOptions {
  /** Channel streams held at most; past it only droppable streams make room. */
  readonly maxChannels: number;
  /** Idempotency keys remembered per channel at most (the oldest is forgotten). */
  readonly dedupMaxKeys: number;
  /** Budget for all retained history, keys and streams, in bytes (default 256 MiB). */
  readonly maxHistoryBytes?: number;
  /** Ms between expiry sweep runs (default 1000; 0: no periodic sweep). */
  readonly sweepInterval?: number;
  /** Streams examined per sweep run (default 1000). */
  readonly sweepBatch?: number;
  /** This broker's life id (default random); tests pass one to reproduce epochs. */
  readonly life?: string;
  /** Injected clock, for tests. */
  readonly now?: () => number;
}

/** What the memory broker holds, for tests and introspection. */
export interface MemoryBrokerStats {
  /** Channel streams held. */
  readonly streams: number;
  /** Channels this node subscribes to. */
  readonly subscribed: number;
  /** Bytes counted against `maxHistoryBytes`. */
  readonly historyBytes: number;
}

const utf8 = (s: string): number => Buffer.byteLength(s, 'utf8');

/** The stream's map that holds `key`: the server side's or clients'. */
const keysFor = (stream: Stream, key: string): Map<string, Key> => (isServerKey(key) ? stream.serverKeys : stream.keys);

export class MemoryBroker implements Broker {
  /** Least recently used first. */
  readonly #streams = new Map<Channel, Stream>();
  readonly #subscribed = new Set<Channel>();
  readonly #maxChannels: number;
  readonly #dedupMaxKeys: number;
  readonly #maxBytes: number;
  readonly #sweepInterval: number;
  readonly #sweepBatch: number;
  readonly #now: () => number;
  #life: string;
  readonly #generations = new Float64Array(GENERATION_BUCKETS);
  #bytes = 0;
  /** Where the incremental sweep continues. */
  #sweepCursor: Iterator<Stream, undefined> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #handlers: BrokerHandlers | undefined;
  /** Retention per namespace, with the idempotency window: what a publish to a channel of that namespace keeps. */
  #policies = new Map<string, Policy>();

  readonly capabilities: BrokerCapabilities = { shared: false, boundedStreams: true, outages: false, lossless: true };
  /** Channel to client to its entry and when it expires. */
  readonly #present = new Map<Channel, Map<string, { entry: PresenceEntry; expires: number }>>();

  constructor(opts: MemoryBrokerOptions) {
    this.#maxChannels = opts.maxChannels;
    this.#dedupMaxKeys = opts.dedupMaxKeys;
    this.#maxBytes = opts.maxHistoryBytes ?? DEFAULT_MAX_HISTORY_BYTES;
    this.#sweepInterval = opts.sweepInterval ?? 1000;
    this.#sweepBatch = opts.sweepBatch ?? 1000;
    this.#now = opts.now ?? Date.now;
    this.#life = opts.life ?? newLife();
  }

  start(handlers: BrokerHandlers, settings: BrokerSettings): Promise<void> {
    this.#handlers = handlers;
    this.#policies = new Map(Object.entries(settings.namespaces).map(([ns, r]) => [ns, { ...r, dedupWindow: settings.dedupWindow }]));
    if (this.#timer === undefined && this.#sweepInterval > 0) {
      this.#timer = setInterval(() => this.sweep(), this.#sweepInterval).unref();
    }
    handlers.status('up', 'in memory');
    return Promise.resolve();
  }

  publish(cmd: PublishCommand): Promise<PublishOutcome> {
    // A throw in the executor (storage_full) rejects the promise.
    return new Promise((resolve) => resolve(this.#publish(cmd)));
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
    const stream = this.#streams.get(channel);
    if (stream === undefined) {
      // No stream, and none is made: the epoch its first publish will create it with.
      return Promise.resolve({ top: { epoch: this.#epochFor(channel), seq: 0 }, publications: [], evicted: undefined });
    }
    this.#touch(stream);
    this.#expire(stream, this.#now());
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
        if ((history[mid] as Publication).position.seq <= after) lo = mid + 1;
        else hi = mid;
      }
      for (let i = lo; i < history.length && publications.length < limit; i++) publications.push(history[i] as Publication);
    }
    return Promise.resolve({ top, publications, evicted: stream.evicted });
  }

  /** Forgets every stream and subscription and stops the sweep; a later use starts a new life. */
  close(): Promise<void> {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#subscribed.clear();
    this.#streams.clear();
    this.#present.clear();
    this.#sweepCursor = undefined;
    this.#bytes = 0;
    // A new life: every epoch changes, so no position of the old one is ever reused.
    this.#life = newLife();
    this.#generations.fill(0);
    this.#handlers = undefined;
    return Promise.resolve();
  }

  tops(channels: readonly Channel[]): Promise<Map<Channel, Position>> {
    const out = new Map<Channel, Position>();
    for (const channel of channels) {
      const stream = this.#streams.get(channel);
      out.set(channel, stream === undefined ? { epoch: this.#epochFor(channel), seq: 0 } : { epoch: stream.epoch, seq: stream.seq });
    }
    return Promise.resolve(out);
  }

  presenceAdd(channel: Channel, entry: PresenceEntry, ttl: number): Promise<void> {
    let clients = this.#present.get(channel);
    if (clients === undefined) this.#present.set(channel, (clients = new Map<string, { entry: PresenceEntry; expires: number }>()));
    const fresh = !clients.has(entry.client);
    clients.set(entry.client, { entry, expires: this.#now() + ttl });
    if (fresh && this.#subscribed.has(channel)) this.#handlers?.presence({ kind: 'join', channel, entry });
    return Promise.resolve();
  }

  presenceRemove(channel: Channel, entry: PresenceEntry): Promise<void> {
    const clients = this.#present.get(channel);
    if (clients?.delete(entry.client) === true) {
      if (clients.size === 0) this.#present.delete(channel);
      if (this.#subscribed.has(channel)) this.#handlers?.presence({ kind: 'leave', channel, entry });
    }
    return Promise.resolve();
  }

  presenceTouch(items: readonly PresenceKey[], ttl: number): Promise<PresenceKey[]> {
    const expires = this.#now() + ttl;
    const gone: PresenceKey[] = [];
    for (const item of items) {
      const held = this.#present.get(item.channel)?.get(item.client);
      if (held !== undefined) held.expires = expires;
      else gone.push(item);
    }
    return Promise.resolve(gone);
  }

  presence(channel: Channel): Promise<PresenceEntry[]> {
    this.#expirePresence(channel, this.#now());
    return Promise.resolve([...(this.#present.get(channel)?.values() ?? [])].map((p) => p.entry));
  }

  /** Drops presence entries whose node stopped refreshing them, announcing each leave. */
  #expirePresence(channel: Channel, now: number): void {
    const clients = this.#present.get(channel);
    if (clients === undefined) return;
    for (const [client, held] of clients) {
      if (held.expires > now) continue;
      clients.delete(client);
      if (this.#subscribed.has(channel)) this.#handlers?.presence({ kind: 'leave', channel, entry: held.entry });
    }
    if (clients.size === 0) this.#present.delete(channel);
  }

  /** Number of channel streams held (for tests of the bound). */
  get size(): number {
    return this.#streams.size;
  }

  /** Streams, node subscriptions and the bytes counted against `maxHistoryBytes`, for introspection. */
  stats(): MemoryBrokerStats {
    return { streams: this.#streams.size, subscribed: this.#subscribed.size, historyBytes: this.#bytes };
  }

  /**
   * One increment of the expiry sweep: releases expired entries and keys of the next `limit`
   * streams (continuing where the previous run stopped). Returns the bytes released.
   */
  sweep(limit = this.#sweepBatch): number {
    const before = this.#bytes;
    const now = this.#now();
    for (const channel of [...this.#present.keys()]) this.#expirePresence(channel, now);
    this.#sweepStreams(limit, this.#now());
    return before - this.#bytes;
  }

  #publish(cmd: PublishCommand): PublishOutcome {
    const policy = this.#policyOf(cmd.channel);
    const now = this.#now();
    const { channel, idempotencyKey: key } = cmd;
    let stream = this.#streams.get(channel);
    if (stream !== undefined) this.#touch(stream);
    if (key !== undefined && stream !== undefined) {
      this.#pruneKeys(stream, now);
      const seen = keysFor(stream, key).get(key);
      if (seen !== undefined && seen.expires > now) return { position: seen.position, duplicate: true };
    }
    const store = !policy.ephemeral && policy.historySize > 0;
    const keepKey = key !== undefined && policy.dedupWindow > 0 && this.#dedupMaxKeys > 0;
    const channelBytes = stream?.channelBytes ?? utf8(channel);
    const entryBytes = store ? utf8(cmd.data) + (cmd.type === undefined ? 0 : utf8(cmd.type)) + channelBytes + ENTRY_OVERHEAD : 0;
    const keyBytes = keepKey ? utf8(key) + KEY_OVERHEAD : 0;
    const added = entryBytes + keyBytes + (stream === undefined ? channelBytes + STREAM_OVERHEAD : 0);
    const pressed = this.#bytes + added > this.#maxBytes;
    if (pressed) {
      const fits = (): boolean => this.#bytes + added - this.#releasable(stream, cmd, policy, store, keepKey, now) <= this.#maxBytes;
      if (!fits()) {
        this.#reclaim(channel, now, fits);
        if (!fits()) {
          if (stream !== undefined) this.#expire(stream, now);
          throw new TidingsError(
            'storage_full',
            `publishing to ${channel} would take retained history over the broker's budget of ${this.#maxBytes} bytes (maxHistoryBytes)`,
          );
        }
      }
    }
    if (stream === undefined) stream = this.#create(channel, channelBytes, now);
    // The budget check counted the stream's expired entries as released: a storing publish releases
    // them after trimming (#trim), any other does it here.
    else if (pressed && !store) this.#expire(stream, now);
    stream.seq += 1;
    const position: Position = { epoch: stream.epoch, seq: stream.seq };
    const pub: Publication = { channel, position, type: cmd.type, data: cmd.data, ephemeral: policy.ephemeral };
    if (store) {
      stream.history.push(pub);
      stream.expires.push(now + policy.historyTtl);
      stream.sizes.push(entryBytes);
      this.#count(stream, entryBytes);
      this.#trim(stream, policy.historySize, now);
    }
    if (keepKey) {
      const keys = keysFor(stream, key);
      const old = keys.get(key);
      if (old !== undefined) {
        // An expired key not yet pruned (windows differed): replaced, and moved to the end.
        keys.delete(key);
        this.#count(stream, -old.bytes);
      } else if (keys.size >= this.#dedupMaxKeys) {
        const oldest = keys.entries().next();
        if (oldest.done !== true) {
          keys.delete(oldest.value[0]);
          this.#count(stream, -oldest.value[1].bytes);
        }
      }
      keys.set(key, { position, expires: now + policy.dedupWindow, bytes: keyBytes });
      this.#count(stream, keyBytes);
    }
    if (this.#subscribed.has(channel)) this.#handlers?.publication(pub);
    return { position, duplicate: false };
  }

  /**
   * Bytes this publish would release on its own stream: its oldest entries trimmed to historySize,
   * expired ones after them, and the key it replaces or pushes out.
   */
  #releasable(stream: Stream | undefined, cmd: PublishCommand, policy: Policy, store: boolean, keepKey: boolean, now: number): number {
    if (stream === undefined) return 0;
    const { history, expires, sizes } = stream;
    let freed = 0;
    let i = stream.head;
    if (store) {
      for (let excess = history.length - i + 1 - policy.historySize; excess > 0; excess--) freed += sizes[i++] as number;
    }
    for (; i < history.length && (expires[i] as number) <= now; i++) freed += sizes[i] as number;
    if (keepKey) {
      const key = cmd.idempotencyKey as string;
      const keys = keysFor(stream, key);
      const old = keys.get(key);
      if (old !== undefined) freed += old.bytes;
      else if (keys.size >= this.#dedupMaxKeys) freed += keys.values().next().value?.bytes ?? 0;
    }
    return freed;
  }

  /** Makes room within the budget: releases expired state (bounded), then drops droppable streams (bounded). */
  #reclaim(except: Channel, now: number, enough: () => boolean): void {
    this.#sweepStreams(RECLAIM_SWEEP, now);
    if (!enough()) this.#evict(except, now, enough);
  }

  #policyOf(channel: Channel): Policy {
    const colon = channel.indexOf(':');
    const policy = this.#policies.get(colon === -1 ? '' : channel.slice(0, colon));
    if (policy === undefined) throw new TidingsError('unknown_namespace', `the broker has no retention for the namespace of ${channel}`);
    return policy;
  }

  #create(channel: Channel, channelBytes: number, now: number): Stream {
    if (this.#streams.size >= this.#maxChannels && !this.#evict(channel, now, () => this.#streams.size < this.#maxChannels)) {
      throw new TidingsError(
        'storage_full',
        `the broker holds its maximum of ${this.#maxChannels} channel streams (maxChannels) and none it examined can be dropped: ` +
          'they are subscribed or hold unexpired history or idempotency keys',
      );
    }
    const stream: Stream = {
      channel,
      channelBytes,
      epoch: this.#epochFor(channel),
      seq: 0,
      history: [],
      expires: [],
      sizes: [],
      head: 0,
      evicted: undefined,
      keys: new Map(),
      serverKeys: new Map(),
      bytes: 0,
    };
    this.#streams.set(channel, stream);
    this.#count(stream, channelBytes + STREAM_OVERHEAD);
    return stream;
  }

  /**
   * Drops least recently used droppable streams until `enough()`, examining at most EVICTION_SCAN;
   * protected ones (and `except`) move to the back so the next attempt looks further.
   */
  #evict(except: Channel, now: number, enough: () => boolean): boolean {
    const limit = Math.min(EVICTION_SCAN, this.#streams.size);
    for (let i = 0; i < limit && !enough(); i++) {
      const lru = this.#streams.values().next();
      if (lru.done === true) break;
      const stream = lru.value;
      this.#streams.delete(stream.channel);
      if (stream.channel !== except && this.#droppable(stream, now)) {
        this.#bytes -= stream.bytes;
        // Positions of the dropped stream are never reused: a re-created stream gets a new epoch.
        const bucket = bucketOf(stream.channel);
        this.#generations[bucket] = (this.#generations[bucket] as number) + 1;
      } else {
        this.#streams.set(stream.channel, stream);
      }
    }
    return enough();
  }

  /** Neither subscribed nor holding unexpired history or keys (expired ones are released on the way). */
  #droppable(stream: Stream, now: number): boolean {
    this.#expire(stream, now);
    this.#pruneKeys(stream, now);
    return !this.#subscribed.has(stream.channel) && stream.head === stream.history.length && stream.keys.size === 0 && stream.serverKeys.size === 0;
  }

  #sweepStreams(limit: number, now: number): void {
    const n = Math.min(limit, this.#streams.size);
    for (let i = 0; i < n; i++) {
      let next = this.#sweepCursor?.next();
      if (next === undefined || next.done === true) {
        this.#sweepCursor = this.#streams.values();
        next = this.#sweepCursor.next();
        if (next.done === true) return;
      }
      this.#expire(next.value, now);
      this.#pruneKeys(next.value, now);
    }
  }

  #epochFor(channel: Channel): string {
    return deriveEpoch(this.#life, this.#generations[bucketOf(channel)] as number, channel);
  }

  /** Re-inserts to keep the map in least-recently-used order. */
  #touch(stream: Stream): void {
    this.#streams.delete(stream.channel);
    this.#streams.set(stream.channel, stream);
  }

  #count(stream: Stream, bytes: number): void {
    stream.bytes += bytes;
    this.#bytes += bytes;
  }

  #trim(stream: Stream, size: number, now: number): void {
    const { history } = stream;
    const end = history.length - size;
    if (end > stream.head) {
      for (let i = stream.head; i < end; i++) this.#release(stream, i);
      stream.head = end;
      stream.evicted = 'trimmed';
    }
    this.#expire(stream, now);
  }

  #expire(stream: Stream, now: number): void {
    const { history, expires, sizes } = stream;
    let { head } = stream;
    while (head < history.length && (expires[head] as number) <= now) {
      this.#release(stream, head);
      head += 1;
      stream.evicted = 'expired';
    }
    if (head === history.length) {
      history.length = 0;
      expires.length = 0;
      sizes.length = 0;
      head = 0;
    } else if (head > 64 && head * 2 >= history.length) {
      history.splice(0, head);
      expires.splice(0, head);
      sizes.splice(0, head);
      head = 0;
    }
    stream.head = head;
  }

  #release(stream: Stream, i: number): void {
    this.#count(stream, -(stream.sizes[i] as number));
    stream.history[i] = undefined;
  }

  #pruneKeys(stream: Stream, now: number): void {
    this.#pruneExpired(stream, stream.keys, now);
    this.#pruneExpired(stream, stream.serverKeys, now);
  }

  #pruneExpired(stream: Stream, keys: Map<string, Key>, now: number): void {
    if (keys.size === 0) return;
    for (const [key, v] of keys) {
      if (v.expires > now) return;
      keys.delete(key);
      this.#count(stream, -v.bytes);
    }
  }
}
