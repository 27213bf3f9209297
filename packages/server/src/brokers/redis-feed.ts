/**
 * The Redis broker's live feed: the subscriber connections that receive publications and presence
 * events, one per Redis that owns channels (one for a single Redis; one per master of a Redis
 * Cluster with sharded pub/sub, since a shard channel is delivered only by the shard that owns its
 * slot).
 *
 * Subscribes and unsubscribes of one tick are coalesced into one SSUBSCRIBE / SUNSUBSCRIBE per
 * connection and group (a group is what one command may name: everything on a single Redis, one
 * hash slot on a Cluster), net of each other. Nothing is re-sent by the client library: when a
 * connection closes, the feed reports `down` and forgets what that connection had subscribed; when
 * it is ready again, every wanted channel it owns is subscribed anew, and once every connection is
 * live the feed reports it, so the broker can signal a reset (publications may have been missed).
 * A new layout (slots moved, a failover) replaces every connection the same way.
 * @module
 */
import type { Redis } from 'ioredis';
import { TidingsError, type Channel } from '@tidings/protocol';

/** Where a channel's pub/sub lives: the connection (node) and the group one command may span. */
export interface FeedRoute {
  readonly node: string;
  readonly group: string;
}

export interface RedisFeedOptions {
  /** SSUBSCRIBE (Redis 7+) rather than SUBSCRIBE. */
  readonly sharded: boolean;
  /** A new, not yet connected (lazyConnect) subscriber connection to `node`. */
  connect(node: string): Redis;
  /** The current route of `channel`. */
  route(channel: Channel): FeedRoute;
  /** The pub/sub name of `channel`. */
  name(channel: Channel): string;
  onMessage(name: string, message: string): void;
  /** A connection closed: live publications may be missed until `onLive`. */
  onDown(reason: string): void;
  /** Every connection is ready and has every wanted channel it owns subscribed. */
  onLive(): void;
  /** A subscribe was answered MOVED: the layout is out of date. */
  onMoved(): void;
  unavailable(): TidingsError;
}

interface Waiter {
  /** The subscribe call's ticket; undefined for an unsubscribe. */
  readonly ticket: number | undefined;
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

interface Connection {
  readonly node: string;
  readonly redis: Redis;
  live: boolean;
  /** Incremented whenever the connection closes: resubscriptions of an older one are stale. */
  era: number;
}

/** Channels per SSUBSCRIBE / SUNSUBSCRIBE command. */
const SUBSCRIBE_CHUNK = 1000;

export class RedisFeed {
  readonly #o: RedisFeedOptions;
  #connections = new Map<string, Connection>();
  /** Channels this node wants, with the ticket of the subscribe call that wanted it. */
  readonly #wanted = new Map<Channel, number>();
  #ticket = 0;
  /** Channels subscribed (or being subscribed) on their current connection: settles when confirmed. */
  readonly #server = new Map<Channel, Promise<void>>();
  /** Subscribes and unsubscribes of this tick, per channel. */
  #queue = new Map<Channel, Waiter[]>();
  #flushScheduled = false;
  #closed = false;

  constructor(options: RedisFeedOptions) {
    this.#o = options;
  }

  /** Opens a connection to each of `nodes` and resolves once every one is live. */
  async start(nodes: readonly string[], timeout: number): Promise<void> {
    this.#open(nodes);
    await Promise.all([...this.#connections.values()].map((c) => c.redis.connect()));
    const deadline = Date.now() + timeout;
    while (!this.live) {
      if (Date.now() > deadline) throw new Error('the subscriber connections did not become ready');
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** Every connection is ready and resubscribed. */
  get live(): boolean {
    if (this.#closed || this.#connections.size === 0) return false;
    for (const c of this.#connections.values()) if (!c.live) return false;
    return true;
  }

  /** The nodes connected to (or being connected to). */
  get nodes(): string[] {
    return [...this.#connections.keys()];
  }

  wants(channel: Channel): boolean {
    return this.#wanted.has(channel);
  }

  subscribe(channel: Channel): Promise<void> {
    if (!this.live) return Promise.reject(this.#o.unavailable());
    const ticket = ++this.#ticket;
    this.#wanted.set(channel, ticket);
    return this.#enqueue(channel, ticket);
  }

  unsubscribe(channel: Channel): Promise<void> {
    this.#wanted.delete(channel);
    const connection = this.#connections.get(this.#o.route(channel).node);
    if (connection?.redis.status !== 'ready' || this.#closed) {
      // The server forgot every subscription with the connection; it is not asked again.
      this.#server.delete(channel);
      return Promise.resolve();
    }
    return this.#enqueue(channel, undefined);
  }

  /**
   * Replaces every connection with one per node of a new layout (slots moved, a failover): the
   * feed is down until each is ready and has every wanted channel it owns subscribed.
   */
  relayout(nodes: readonly string[]): void {
    if (this.#closed) return;
    const old = this.#connections;
    this.#connections = new Map();
    this.#server.clear();
    for (const c of old.values()) this.#drop(c);
    this.#o.onDown('the Redis Cluster layout changed');
    this.#open(nodes);
    for (const c of this.#connections.values()) c.redis.connect().catch(() => undefined);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const queued = this.#queue;
    this.#queue = new Map();
    for (const [channel, waiters] of queued) this.#settle(channel, waiters, Promise.reject(this.#o.unavailable()));
    this.#wanted.clear();
    this.#server.clear();
    const connections = [...this.#connections.values()];
    this.#connections.clear();
    await Promise.all(
      connections.map(async ({ redis }) => {
        redis.removeAllListeners('close');
        redis.removeAllListeners('ready');
        if (redis.status === 'ready') await Promise.race([redis.quit().catch(() => undefined), new Promise((r) => setTimeout(r, 1000))]);
        redis.disconnect();
      }),
    );
  }

  #open(nodes: readonly string[]): void {
    for (const node of nodes) {
      const redis = this.#o.connect(node);
      const c: Connection = { node, redis, live: false, era: 0 };
      this.#connections.set(node, c);
      redis.on('close', () => {
        if (this.#connections.get(node) !== c) return;
        c.live = false;
        c.era += 1;
        for (const channel of [...this.#server.keys()]) if (this.#o.route(channel).node === node) this.#server.delete(channel);
        this.#o.onDown('a subscriber connection to Redis closed');
      });
      redis.on('ready', () => this.#resubscribe(c));
      const onMessage = (name: string, message: string): void => this.#o.onMessage(name, message);
      redis.on('message', onMessage);
      redis.on('smessage', onMessage);
    }
  }

  #drop(c: Connection): void {
    c.redis.removeAllListeners('close');
    c.redis.removeAllListeners('ready');
    c.redis.removeAllListeners('message');
    c.redis.removeAllListeners('smessage');
    c.redis.disconnect();
  }

  /** A connection is (again) ready: subscribe every wanted channel it owns, then it is live. */
  #resubscribe(c: Connection): void {
    if (this.#closed || this.#connections.get(c.node) !== c) return;
    const era = c.era;
    const mine = [...this.#wanted.keys()].filter((channel) => this.#o.route(channel).node === c.node);
    const sent = this.#sendGrouped(c, 'subscribe', mine);
    Promise.all(sent).then(
      () => {
        if (era !== c.era || this.#closed || this.#connections.get(c.node) !== c) return;
        c.live = true;
        if (this.live) this.#o.onLive();
      },
      // The connection dropped again (its next `ready` tries again), or the layout moved on.
      () => undefined,
    );
  }

  /** Sends `op` for `channels` (all owned by `c`), one command per group and chunk; records subscribes in #server. */
  #sendGrouped(c: Connection, op: 'subscribe' | 'unsubscribe', channels: readonly Channel[]): Array<Promise<void>> {
    const groups = new Map<string, Channel[]>();
    for (const channel of channels) {
      const group = this.#o.route(channel).group;
      let list = groups.get(group);
      if (list === undefined) groups.set(group, (list = []));
      list.push(channel);
    }
    const sent: Array<Promise<void>> = [];
    for (const list of groups.values()) {
      for (let i = 0; i < list.length; i += SUBSCRIBE_CHUNK) {
        const chunk = list.slice(i, i + SUBSCRIBE_CHUNK);
        const p = this.#send(c.redis, op, chunk);
        if (op === 'subscribe') for (const channel of chunk) this.#server.set(channel, p);
        sent.push(p);
      }
    }
    return sent;
  }

  #send(redis: Redis, op: 'subscribe' | 'unsubscribe', channels: readonly Channel[]): Promise<void> {
    const names = channels.map((channel) => this.#o.name(channel));
    const sharded = this.#o.sharded;
    const sent = op === 'subscribe' ? (sharded ? redis.ssubscribe(...names) : redis.subscribe(...names)) : sharded ? redis.sunsubscribe(...names) : redis.unsubscribe(...names);
    const done = sent.then(
      () => undefined,
      (err: unknown) => {
        if (err instanceof Error && err.message.startsWith('MOVED')) this.#o.onMoved();
        throw err;
      },
    );
    done.catch(() => undefined);
    return done;
  }

  #enqueue(channel: Channel, ticket: number | undefined): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let waiters = this.#queue.get(channel);
      if (waiters === undefined) this.#queue.set(channel, (waiters = []));
      waiters.push({ ticket, resolve, reject });
      if (!this.#flushScheduled) {
        this.#flushScheduled = true;
        setImmediate(() => this.#flush());
      }
    });
  }

  /** Sends this tick's subscribes and unsubscribes, net of each other, as one command per connection and group. */
  #flush(): void {
    this.#flushScheduled = false;
    const batch = this.#queue;
    this.#queue = new Map();
    const add = new Map<Connection, Channel[]>();
    const remove = new Map<Connection, Channel[]>();
    const failed = new Set<Channel>();
    for (const channel of batch.keys()) {
      const c = this.#connections.get(this.#o.route(channel).node);
      // Not `live`: while the channels wanted are being subscribed again after a reconnect, an
      // unsubscribe must still reach the server.
      if (c === undefined || c.redis.status !== 'ready' || this.#closed) {
        if (!this.#wanted.has(channel)) this.#server.delete(channel);
        failed.add(channel);
        continue;
      }
      if (this.#wanted.has(channel)) {
        if (!this.#server.has(channel)) push(add, c, channel);
      } else if (this.#server.delete(channel)) {
        push(remove, c, channel);
      }
    }
    // Each send settles through #server (and its failure is handled there).
    for (const [c, channels] of add) void this.#sendGrouped(c, 'subscribe', channels);
    const removed = new Map<Channel, Promise<void>>();
    for (const [c, channels] of remove) {
      const all = Promise.all(this.#sendGrouped(c, 'unsubscribe', channels)).then(
        () => undefined,
        () => undefined,
      );
      for (const channel of channels) removed.set(channel, all);
    }
    for (const [channel, waiters] of batch) {
      const done = failed.has(channel)
        ? Promise.reject(this.#o.unavailable())
        : this.#wanted.has(channel)
          ? (this.#server.get(channel) ?? Promise.reject(this.#o.unavailable()))
          : (removed.get(channel) ?? Promise.resolve());
      this.#settle(channel, waiters, done);
    }
  }

  /** Settles a channel's waiters with `done`; a failed subscribe forgets the channel unless a later subscribe wants it. */
  #settle(channel: Channel, waiters: readonly Waiter[], done: Promise<void>): void {
    done.then(
      () => {
        for (const w of waiters) w.resolve();
      },
      (err: unknown) => {
        const failure = err instanceof TidingsError ? err : this.#o.unavailable();
        for (const w of waiters) {
          if (w.ticket === undefined) {
            w.resolve();
            continue;
          }
          if (this.#wanted.get(channel) === w.ticket) {
            this.#wanted.delete(channel);
            if (this.#server.get(channel) === done) this.#server.delete(channel);
          }
          w.reject(failure);
        }
      },
    );
  }
}

function push<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [value]);
  else list.push(value);
}
