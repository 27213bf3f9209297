/**
 * The Redis broker: positions, history, idempotency keys and presence live in Redis, so any number
 * of gateway nodes share them and a client resumes on any node. It implements the contract of
 * `broker.ts` exactly as the memory broker does (streams only from publishes, derived epochs,
 * never reused positions); what differs is stated in {@link RedisBroker.capabilities}.
 *
 * **One atomic step per publish.** A Lua script (`redis-scripts.ts`) checks the idempotency key,
 * creates the stream when missing, assigns the next seq, appends to history (bounded by count and
 * age), stores the key and fans out (`SPUBLISH`, or `PUBLISH` before Redis 7), all at once, so every
 * node sees one order per channel. Scripts use the server's clock (`TIME`).
 *
 * **Keys.** Everything of a channel lives under the hash tag of its generation bucket
 * (`bucketOf(c)`, FNV-1a mod 1024, `epochs.ts`), so every script is single-slot in a Redis Cluster
 * and can reach the bucket's life and generation. With prefix `p` (option, default `tidings`) and
 * `B = p:{b<bucket>}:`:
 * - `B g`            hash {life, gen}: the bucket's random life (created with HSETNX when missing,
 *                    so FLUSHALL or a restart without persistence gives every bucket a new life and
 *                    every channel a new epoch) and its generation counter;
 * - `B m:<channel>`  hash {epoch, seq, ev (trimmed|expired), h (history was stored), k (latest
 *                    idempotency-key expiry, ms)}: the stream. No TTL (a meta that silently expired
 *                    would restart seq in the same epoch); the GC below bounds them;
 * - `B h:<channel>`  sorted set, score = seq, member = seq, expiry, type and data: the history.
 *                    Trimmed to historySize with ZREMRANGEBYRANK, expired oldest entries released
 *                    (at most `expiryBound` per call; reads skip any left), and PEXPIRE'd to its
 *                    newest entry's expiry, so an idle channel's history disappears by itself;
 * - `B i:<channel> <key>` string `epoch:seq`, PX dedupWindow: an idempotency key. One window for
 *                    every node (settings.dedupWindow), so a key raced by two nodes publishes once;
 * - `B a`            sorted set channel -> when the GC may look at it (last publish + gcAfter);
 * - `B p:<channel>`  the pub/sub channel carrying publications and presence events;
 * - `B r:<channel>`  hash client -> presence entry (JSON); `B rx` sorted set "<channel> <client>" ->
 *                    expiry, for every presence entry of the bucket;
 * - `p:lock:gc`, `p:lock:presence`, `p:presence`: sweep locks, and a flag that presence is in use.
 *
 * **Epochs.** Exactly the contract's formula (`deriveEpoch(life, generation, channel)`), with the
 * life of the channel's bucket. Scripts cannot compute SHA-256, so Node does: a publish to a
 * channel this node has not seen a stream of passes the epoch it derived from the life and
 * generation it last saw for the bucket (and a fresh life candidate, unique per call); the script
 * creates the stream with it only if those are still current, and otherwise changes nothing and
 * answers the current ones, and the publish is retried with them. A publish to a channel this node
 * already published to passes no epoch (no SHA-256 on the hot path); if the stream is gone after
 * all (GC, FLUSHALL), the script asks for one the same way. Reads of a channel without a stream return
 * the bucket's life and generation (creating the life when missing: at most 1024 small keys), and
 * Node derives the epoch; they create no stream. A per-bucket life (rather than one global key)
 * also means a cluster shard that loses its data changes the epochs of exactly its own channels.
 *
 * **GC.** Meta keys have no TTL, so a periodic sweep bounds them: every `gcInterval` one node (a
 * `SET NX PX` lock) runs one script per bucket that examines at most `sweepLimit` channels whose
 * time in `B a` has come, and drops the stream of each that holds nothing protected: no history,
 * no unexpired idempotency key (its `k`), and no subscriber (`PUBSUB SHARDNUMSUB`). Each drop
 * increments the bucket's generation in the same script, exactly like the memory broker's drop, so
 * a re-created stream gets a new epoch; a protected channel is rescheduled to when its protection
 * ends. `gcAfter` (default: the longest historyTtl plus the dedup window plus an hour) keeps idle
 * channels' epochs stable that long.
 *
 * **Eviction.** Redis must not evict Tidings' keys: use `maxmemory-policy noeviction` (publishes
 * are then refused with `storage_full` when Redis is full; scripts are checked for OOM before they
 * run, so nothing half-happens). `volatile-*` policies evict only keys with a TTL: history (reported
 * as `expired`) and idempotency keys (a retried publish may then publish twice). `allkeys-*` can
 * evict meta keys, which would reuse positions: `start()` warns through the injected logger
 * (`CONFIG GET`; errors ignored, as managed Redis may forbid CONFIG).
 *
 * **Connections and outages.** One connection for commands (auto-pipelined: everything issued in
 * one tick goes out as one write), and the live feed (`redis-feed.ts`): one subscriber connection,
 * or one per master of a Redis Cluster. Subscribes and unsubscribes are coalesced per tick into one
 * SSUBSCRIBE / SUNSUBSCRIBE per connection (and hash slot). Commands are never queued while disconnected and
 * never re-sent after a reconnect (a re-sent publish could publish twice). When either connection
 * closes the status is `down`; while the command connection is down, `publish`, `history`, `tops`
 * and presence calls reject with `TidingsError('unavailable')` (503), and while the subscriber's is,
 * `subscribe` does. When both are back and every wanted channel is subscribed again, the status is
 * `reset`, and the hub repairs every joined channel from history (the feed may have lost
 * publications meanwhile; so does a subscriber Redis disconnects for overrunning its pub/sub output
 * buffer). A publish in flight when the connection dropped rejects with `unavailable` even if it was
 * applied; its idempotency key makes a retry safe. A Redis that hangs without closing the connection
 * shows only as commands timing out (`commandTimeout`, `unavailable`), not as `down`.
 *
 * **Presence.** Entries live in `B r:<channel>` with their expiry in `B rx`; adds, removes and
 * expiries publish join/leave events on the channel's pub/sub channel, so every subscribed node
 * gets them. Every `presenceSweep` ms one node (lock) runs a sweep script on every bucket (only
 * while presence is in use: `p:presence` is set by adds and touches), so a dead node's entries
 * leave within their ttl plus about two sweep periods. A touch extends only the entries that exist
 * and reports the others: an entry swept while its node lived (stalled, or its calls timing out, for
 * longer than the ttl) is added again by that node, and its join announced.
 *
 * **Cluster.** The URL names one Redis; when it runs in cluster mode (`cluster_enabled:1`), the
 * broker uses it as the seed of a Cluster client (commands go to the master of their slot, and every
 * script is single-slot) and opens one sharded subscriber per master, subscribing each channel on
 * the master that owns its bucket's slot. Slots are re-read every 5 s and after a MOVED; when their
 * owners change (a failover, a resharding), every subscriber connection is replaced and the hub
 * repairs every joined channel (`reset`). A Cluster needs Redis 7 (sharded pub/sub); a master that
 * restarts without its data gives exactly its own buckets' channels new epochs.
 * @module
 */
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import { TidingsError, type Channel, type Position } from '@tidings/protocol';
import type {
  Broker,
  BrokerCapabilities,
  BrokerHandlers,
  BrokerLogger,
  BrokerSettings,
  HistoryPage,
  PresenceEntry,
  PresenceKey,
  Publication,
  PublishCommand,
  PublishOutcome,
  Retention,
} from './broker.js';
import { bucketOf, deriveEpoch, GENERATION_BUCKETS, newLife } from './epochs.js';
import { RedisFeed, type FeedRoute } from './redis-feed.js';
import { scriptSources, type ScriptSources } from './redis-scripts.js';

/** The little logging the broker does. */
export type RedisBrokerLogger = BrokerLogger;

/** Options of the Redis broker. */
export interface RedisBrokerOptions {
  /** `redis://[user:password@]host:port[/db]` or `rediss://...` (TLS). */
  readonly url: string;
  /** Prefix of every key and pub/sub channel (default `tidings`): letters, digits, `_ . : -`. */
  readonly prefix?: string;
  readonly logger?: RedisBrokerLogger;
  /** A command without an answer after this many ms fails with `unavailable` (default 5000). */
  readonly commandTimeout?: number;
  /** Connecting gives up after this many ms (default 5000); `start()` fails if the first connection does. */
  readonly connectTimeout?: number;
  /** Most ms between reconnect attempts (default 1000; attempts back off from 50 ms). */
  readonly maxReconnectDelay?: number;
  /** A stream idle this long (ms) and holding nothing protected is dropped (default: longest historyTtl + dedupWindow + 1 h). */
  readonly gcAfter?: number;
  /** Ms between GC passes over every bucket, one node at a time (default 60 000; 0: no GC). */
  readonly gcInterval?: number;
  /** Ms between presence sweeps, one node at a time (default 1000). */
  readonly presenceSweep?: number;
  /** Most GC candidates or presence entries examined per bucket and pass (default 100). */
  readonly sweepLimit?: number;
  /** Most expired history entries released per publish or read (default 100). */
  readonly expiryBound?: number;
  /** Use sharded pub/sub (default: when the server is Redis 7 or later). */
  readonly sharded?: boolean;
}

/** A namespace's retention with the idempotency window. */
interface Policy extends Retention {
  readonly dedupWindow: number;
}

interface Lifetime {
  readonly life: string;
  readonly gen: string;
}

type Reply = Array<string | number | null>;
type ScriptFn = (numkeys: number, ...args: Array<string | number>) => Promise<unknown>;
type ScriptName = keyof ScriptSources;
type Scripted = Record<ScriptName, ScriptFn>;

/** Extra time beyond history and keys before an idle stream is dropped, by default. */
const GC_MARGIN = 3_600_000;
/** How long a subscribed (or unreadable) GC candidate waits before it is looked at again. */
const GC_RECHECK = 60_000;
/** The feed's node name for the Redis the URL names. */
const SEED = 'seed';
/** Ms between reads of a Cluster's slots. */
const SLOTS_REFRESH = 5000;
/** Buckets whose sweep scripts are in flight at once. */
const SWEEP_CONCURRENCY = 128;
/** Presence members per touch script. */
const TOUCH_CHUNK = 500;
/** Channels remembered as having a stream (then forgotten all at once). */
const KNOWN_CHANNELS = 100_000;
const PREFIX = /^[A-Za-z0-9_.:-]{1,64}$/;
const ROUTE_SEED: FeedRoute = { node: SEED, group: SEED };

const isReplyError = (err: unknown): err is Error => err instanceof Error && err.name === 'ReplyError';
/** Reply errors that mean "not now" rather than a bug. */
const TRANSIENT = /^(LOADING|BUSY|MASTERDOWN|READONLY|CLUSTERDOWN|TRYAGAIN|NOREPLICAS|MISCONF|UNBLOCKED)\b/;

export class RedisBroker implements Broker {
  readonly capabilities: BrokerCapabilities = {
    shared: true,
    // Redis's memory is bounded by its own maxmemory (publishes get storage_full under noeviction),
    // and the number of streams by the GC; the broker enforces no stream count of its own.
    boundedStreams: false,
    outages: true,
  };

  readonly #url: string;
  readonly #where: string;
  readonly #prefix: string;
  readonly #log: RedisBrokerLogger | undefined;
  readonly #opts: RedisBrokerOptions;
  #cmd: Redis | Cluster | undefined;
  #feed: RedisFeed | undefined;
  /** On a Cluster: the master (`host:port`) owning each bucket's slot, and each bucket's slot. */
  #owners: string[] | undefined;
  #slots: number[] = [];
  #scripts: Scripted | undefined;
  #sharded = true;
  #handlers: BrokerHandlers | undefined;
  #policies = new Map<string, Policy>();
  #gcAfter = GC_MARGIN;
  readonly #lives: Array<Lifetime | undefined> = new Array<Lifetime | undefined>(GENERATION_BUCKETS);
  #started = false;
  #closed = false;
  /** What the hub was last told: `up` (or `reset`, then up) or `down`. */
  #status: 'up' | 'down' = 'down';
  #gcTimer: NodeJS.Timeout | undefined;
  #presenceTimer: NodeJS.Timeout | undefined;
  #gcRunning = false;
  #presenceRunning = false;
  /** A random id of this broker: sweep lock owner, and the prefix of its life candidates. */
  readonly #node = newLife();
  #candidates = 0;
  /** Channels this node created or published to (bounded): their stream most likely exists. */
  readonly #known = new Set<Channel>();

  constructor(options: RedisBrokerOptions) {
    if (!/^rediss?:\/\//.test(options.url)) throw new TidingsError('bad_request', 'the Redis broker needs a redis:// or rediss:// URL');
    const prefix = options.prefix ?? 'tidings';
    if (!PREFIX.test(prefix)) throw new TidingsError('bad_request', 'the Redis key prefix must be 1-64 letters, digits, _ . : or -');
    this.#url = options.url;
    this.#where = options.url.replace(/\/\/[^@/]*@/, '//***@');
    this.#prefix = prefix;
    this.#log = options.logger;
    this.#opts = options;
  }

  async start(handlers: BrokerHandlers, settings: BrokerSettings): Promise<void> {
    if (this.#started || this.#closed) throw new Error('a RedisBroker starts once');
    this.#handlers = handlers;
    this.#policies = new Map(Object.entries(settings.namespaces).map(([ns, r]) => [ns, { ...r, dedupWindow: settings.dedupWindow }]));
    const longest = Math.max(0, ...Object.values(settings.namespaces).map((r) => r.historyTtl));
    this.#gcAfter = this.#opts.gcAfter ?? longest + settings.dedupWindow + GC_MARGIN;

    const maxDelay = this.#opts.maxReconnectDelay ?? 1000;
    const common: RedisOptions = {
      lazyConnect: true,
      // Nothing waits for a connection and nothing is re-sent after one: a re-sent publish could publish twice.
      enableOfflineQueue: false,
      autoResendUnfulfilledCommands: false,
      maxRetriesPerRequest: 0,
      autoResubscribe: false,
      connectTimeout: this.#opts.connectTimeout ?? 5000,
      commandTimeout: this.#opts.commandTimeout ?? 5000,
      retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times - 1, 10), maxDelay),
    };
    let outageLogged = false;
    const onError = (err: Error): void => {
      // ioredis reports every failed reconnect; one line per outage is enough.
      if (outageLogged || !this.#started) return;
      outageLogged = true;
      this.#log?.warn({ err: err.message, redis: this.#where }, 'redis broker connection error');
    };
    const subscriber = (node: string): Redis => {
      const options: RedisOptions = { ...common, connectionName: `${this.#prefix}-subscriber` };
      const redis = node === SEED ? new Redis(this.#url, options) : new Redis({ ...options, ...nodeOptions(this.#url), ...hostPort(node) });
      redis.on('error', onError);
      return redis;
    };
    let cmd: Redis | Cluster = new Redis(this.#url, { ...common, enableAutoPipelining: true, connectionName: `${this.#prefix}-commands` });
    cmd.on('error', onError);
    this.#cmd = cmd;
    try {
      await cmd.connect();
      const info = await cmd.info();
      const version = /redis_version:(\d+)/.exec(info)?.[1];
      this.#sharded = this.#opts.sharded ?? Number(version ?? '0') >= 7;
      if (/cluster_enabled:1/.test(info)) {
        if (!this.#sharded) throw new Error('a Redis Cluster needs Redis 7 or later (sharded pub/sub)');
        cmd.disconnect();
        const { hostname, port } = new URL(this.#url);
        cmd = new Cluster([{ host: hostname.replace(/^\[(.*)\]$/, '$1'), port: Number(port || 6379) }], {
          lazyConnect: true,
          enableOfflineQueue: false,
          enableAutoPipelining: true,
          // ioredis cannot route auto-pipelined scripts on a Cluster (they would all go to one node);
          // they are sent one by one, still without waiting for each other's replies.
          autoPipeliningIgnoredCommands: Object.keys(scriptSources({ sharded: true })),
          slotsRefreshInterval: SLOTS_REFRESH,
          clusterRetryStrategy: (times) => Math.min(50 * 2 ** Math.min(times - 1, 10), maxDelay),
          redisOptions: { ...common, ...nodeOptions(this.#url), connectionName: `${this.#prefix}-commands` },
        });
        cmd.on('error', onError);
        this.#cmd = cmd;
        await cmd.connect();
        const cluster = cmd;
        this.#slots = await Promise.all(Array.from({ length: GENERATION_BUCKETS }, (_, b) => cluster.cluster('KEYSLOT', `{b${b}}`)));
        this.#owners = this.#layout(cluster);
        cluster.on('refresh', () => this.#relayout(cluster));
      }
      cmd.on('close', () => this.#markDown('the connection to Redis closed'));
      cmd.on('ready', () => {
        outageLogged = false;
        this.#maybeUp();
      });
      const sources = scriptSources({ sharded: this.#sharded });
      for (const [name, lua] of Object.entries(sources) as Array<[string, string]>) cmd.defineCommand(name, { lua });
      this.#scripts = cmd as unknown as Scripted;
      await this.#checkEviction(cmd);
      this.#feed = new RedisFeed({
        sharded: this.#sharded,
        connect: subscriber,
        route: (channel) => this.#route(channel),
        name: (channel) => `${this.#base(bucketOf(channel))}p:${channel}`,
        onMessage: (name, message) => this.#onMessage(name, message),
        onDown: (reason) => this.#markDown(reason),
        onLive: () => this.#maybeUp(),
        onMoved: () => {
          if (cmd instanceof Cluster) cmd.refreshSlotsCache();
        },
        unavailable: () => this.#unavailable(),
      });
      await this.#feed.start(this.#owners === undefined ? [SEED] : [...new Set(this.#owners)], 5000);
    } catch (err) {
      cmd.disconnect();
      await this.#feed?.close();
      this.#cmd = undefined;
      this.#feed = undefined;
      throw new TidingsError('unavailable', `cannot connect to the Redis broker at ${this.#where}: ${(err as Error).message}`);
    }
    this.#started = true;
    this.#status = 'up';
    const gcInterval = this.#opts.gcInterval ?? 60_000;
    if (gcInterval > 0) this.#gcTimer = setInterval(() => void this.#gcPass(gcInterval), gcInterval).unref();
    const presenceSweep = this.#opts.presenceSweep ?? 1000;
    if (presenceSweep > 0) this.#presenceTimer = setInterval(() => void this.#presencePass(presenceSweep), presenceSweep).unref();
    const mode = this.#owners === undefined ? (this.#sharded ? ' (sharded pub/sub)' : '') : ` (cluster of ${new Set(this.#owners).size} masters)`;
    handlers.status('up', `redis at ${this.#where}${mode}`);
  }

  async publish(cmd: PublishCommand): Promise<PublishOutcome> {
    const policy = this.#policyOf(cmd.channel);
    const scripts = this.#ready();
    const { channel, idempotencyKey: key } = cmd;
    const bucket = bucketOf(channel);
    const base = this.#base(bucket);
    const keys = [`${base}g`, `${base}m:${channel}`, `${base}h:${channel}`, `${base}a`];
    if (key !== undefined) keys.push(`${base}i:${channel} ${key}`);
    // A channel this node published to before most likely still has its stream: no epoch is derived
    // (SHA-256) for it, and the script asks for one in the rare case the stream is gone.
    let derive = !this.#known.has(channel);
    for (let attempt = 0; ; attempt++) {
      let expected: Lifetime | undefined;
      let life = '';
      let epoch = '';
      if (derive) {
        life = this.#lifeCandidate();
        expected = this.#lives[bucket] ?? { life, gen: '0' };
        epoch = deriveEpoch(expected.life, Number(expected.gen), channel);
      }
      const reply = (await this.#call(() =>
        scripts.publish(
          keys.length,
          ...keys,
          life,
          expected?.life ?? '',
          expected?.gen ?? '',
          epoch,
          policy.historySize,
          policy.historyTtl,
          policy.ephemeral ? '1' : '0',
          policy.dedupWindow,
          cmd.type ?? '',
          cmd.data,
          this.#gcAfter,
          `${base}p:${channel}`,
          this.#opts.expiryBound ?? 100,
          channel,
        ),
      )) as Reply;
      const kind = reply[0];
      if (kind === 'ok') {
        // The stream was created with the expected life and generation: they are current.
        if (reply[3] === 1 && expected !== undefined) this.#lives[bucket] = expected;
        this.#remember(channel);
        return { position: { epoch: String(reply[1]), seq: Number(reply[2]) }, duplicate: false };
      }
      if (kind === 'dup') {
        const text = String(reply[1]);
        const colon = text.lastIndexOf(':');
        return { position: { epoch: text.slice(0, colon), seq: Number(text.slice(colon + 1)) }, duplicate: true };
      }
      // 'retry': no stream, and no epoch was sent or the bucket's life or generation moved on.
      this.#known.delete(channel);
      derive = true;
      this.#lives[bucket] = reply[1] === '' ? undefined : { life: String(reply[1]), gen: String(reply[2]) };
      if (attempt >= 3) throw new TidingsError('unavailable', `the generation of ${channel}'s bucket keeps changing; try again`);
    }
  }

  subscribe(channel: Channel): Promise<void> {
    if (this.#feed === undefined || this.#closed) return Promise.reject(this.#unavailable());
    return this.#feed.subscribe(channel);
  }

  unsubscribe(channel: Channel): Promise<void> {
    return this.#feed?.unsubscribe(channel) ?? Promise.resolve();
  }

  async history(channel: Channel, since: Position | undefined, limit: number): Promise<HistoryPage> {
    const scripts = this.#ready();
    const bucket = bucketOf(channel);
    const base = this.#base(bucket);
    const reply = (await this.#call(() =>
      scripts.read(
        3,
        `${base}g`,
        `${base}m:${channel}`,
        `${base}h:${channel}`,
        this.#lifeCandidate(),
        since?.epoch ?? '',
        since?.seq ?? 0,
        Number.isFinite(limit) ? Math.max(0, Math.floor(limit)) : 2 ** 31,
        this.#opts.expiryBound ?? 100,
      ),
    )) as Reply;
    if (reply.length === 2) return { top: this.#derived(bucket, channel, reply), publications: [], evicted: undefined };
    const epoch = String(reply[2]);
    const ev = reply[4];
    const publications: Publication[] = [];
    for (let i = 5; i < reply.length; i++) publications.push(parseEntry(channel, epoch, String(reply[i])));
    return { top: { epoch, seq: Number(reply[3]) }, publications, evicted: ev === 'trimmed' || ev === 'expired' ? ev : undefined };
  }

  async tops(channels: readonly Channel[]): Promise<Map<Channel, Position>> {
    const scripts = this.#ready();
    // Issued in one tick: auto-pipelining sends them as one write, one round trip.
    const replies = await this.#call(() =>
      Promise.all(
        channels.map((channel) => {
          const base = this.#base(bucketOf(channel));
          return scripts.read(3, `${base}g`, `${base}m:${channel}`, `${base}h:${channel}`, this.#lifeCandidate(), '', 0, -1, 0) as Promise<Reply>;
        }),
      ),
    );
    const out = new Map<Channel, Position>();
    channels.forEach((channel, i) => {
      const reply = replies[i] as Reply;
      out.set(channel, reply.length === 2 ? this.#derived(bucketOf(channel), channel, reply) : { epoch: String(reply[2]), seq: Number(reply[3]) });
    });
    return out;
  }

  async presenceAdd(channel: Channel, entry: PresenceEntry, ttl: number): Promise<void> {
    const scripts = this.#ready();
    const base = this.#base(bucketOf(channel));
    const flag = this.#presenceFlag(ttl);
    const json = JSON.stringify({ c: entry.client, u: entry.user, i: entry.info, n: entry.node });
    await this.#call(() =>
      Promise.all([
        flag,
        scripts.presenceAdd(2, `${base}r:${channel}`, `${base}rx`, entry.client, json, Math.max(0, Math.round(ttl)), `${channel} ${entry.client}`, `${base}p:${channel}`),
      ]),
    );
  }

  async presenceRemove(channel: Channel, entry: PresenceEntry): Promise<void> {
    const scripts = this.#ready();
    const base = this.#base(bucketOf(channel));
    await this.#call(() => scripts.presenceRemove(2, `${base}r:${channel}`, `${base}rx`, entry.client, `${channel} ${entry.client}`, `${base}p:${channel}`));
  }

  async presenceTouch(items: readonly PresenceKey[], ttl: number): Promise<PresenceKey[]> {
    if (items.length === 0) return [];
    const scripts = this.#ready();
    const byBucket = new Map<number, PresenceKey[]>();
    for (const item of items) {
      const bucket = bucketOf(item.channel);
      let held = byBucket.get(bucket);
      if (held === undefined) byBucket.set(bucket, (held = []));
      held.push(item);
    }
    const ms = Math.max(0, Math.round(ttl));
    const gone: PresenceKey[] = [];
    const calls: Array<Promise<unknown>> = [this.#presenceFlag(ttl)];
    for (const [bucket, held] of byBucket) {
      for (let i = 0; i < held.length; i += TOUCH_CHUNK) {
        const chunk = held.slice(i, i + TOUCH_CHUNK);
        const members = chunk.map(({ channel, client }) => `${channel} ${client}`);
        calls.push(
          scripts.presenceTouch(1, `${this.#base(bucket)}rx`, ms, ...members).then((missing) => {
            for (const at of missing as number[]) gone.push(chunk[at] as PresenceKey);
          }),
        );
      }
    }
    await this.#call(() => Promise.all(calls));
    return gone;
  }

  async presence(channel: Channel): Promise<PresenceEntry[]> {
    const scripts = this.#ready();
    const base = this.#base(bucketOf(channel));
    const reply = (await this.#call(() => scripts.presenceList(2, `${base}r:${channel}`, `${base}rx`, channel, `${base}p:${channel}`))) as string[];
    return reply.map(parsePresence);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#started = false;
    this.#handlers = undefined;
    clearInterval(this.#gcTimer);
    clearInterval(this.#presenceTimer);
    const quit = async (client: Redis | Cluster | undefined): Promise<void> => {
      if (client === undefined) return;
      client.removeAllListeners('close');
      client.removeAllListeners('ready');
      if (client.status === 'ready') {
        await Promise.race([client.quit().catch(() => undefined), new Promise((r) => setTimeout(r, 1000))]);
      }
      client.disconnect();
    };
    await Promise.all([quit(this.#cmd), this.#feed?.close()]);
  }

  /** One GC pass now over every bucket (normally run by the timer on one node at a time); resolves with the streams dropped. */
  async collect(): Promise<number> {
    const scripts = this.#ready();
    const limit = this.#opts.sweepLimit ?? 100;
    let dropped = 0;
    await this.#eachBucket(async (bucket) => {
      const base = this.#base(bucket);
      for (;;) {
        const [n, examined] = (await scripts.gc(2, `${base}a`, `${base}g`, base, limit, GC_RECHECK)) as [number, number];
        dropped += n;
        if (examined < limit) return;
      }
    });
    return dropped;
  }

  /** One presence sweep now over every bucket: expired entries leave. Resolves with how many left. */
  async sweepPresence(): Promise<number> {
    const scripts = this.#ready();
    const limit = this.#opts.sweepLimit ?? 100;
    let expired = 0;
    await this.#eachBucket(async (bucket) => {
      const base = this.#base(bucket);
      for (;;) {
        const n = (await scripts.presenceSweep(1, `${base}rx`, base, limit)) as number;
        expired += n;
        if (n < limit) return;
      }
    });
    return expired;
  }

  /** The life and generation of `channel`'s bucket as stored now (for tests and introspection). */
  async lifetime(channel: Channel): Promise<{ life: string | undefined; generation: number }> {
    this.#ready();
    const cmd = this.#cmd as Redis;
    const [life, gen] = await this.#call(() => cmd.hmget(`${this.#base(bucketOf(channel))}g`, 'life', 'gen'));
    return { life: life ?? undefined, generation: Number(gen ?? 0) };
  }

  /** Whether the stream of `channel` exists (for tests and introspection). */
  async hasStream(channel: Channel): Promise<boolean> {
    this.#ready();
    const cmd = this.#cmd as Redis;
    return (await this.#call(() => cmd.exists(`${this.#base(bucketOf(channel))}m:${channel}`))) === 1;
  }

  /** Whether publications use sharded pub/sub (Redis 7+). */
  get sharded(): boolean {
    return this.#sharded;
  }

  /**
   * A life for a bucket that has none, unique to this call: the broker's random id and a counter (a
   * bucket that lost its data never gets a life it had before).
   */
  #lifeCandidate(): string {
    this.#candidates += 1;
    return `${this.#node}${this.#candidates.toString(36)}`;
  }

  #remember(channel: Channel): void {
    if (this.#known.size >= KNOWN_CHANNELS) this.#known.clear();
    this.#known.add(channel);
  }

  #base(bucket: number): string {
    return `${this.#prefix}:{b${bucket}}:`;
  }

  #derived(bucket: number, channel: Channel, reply: Reply): Position {
    const lifetime = { life: String(reply[0]), gen: String(reply[1]) };
    this.#lives[bucket] = lifetime;
    return { epoch: deriveEpoch(lifetime.life, Number(lifetime.gen), channel), seq: 0 };
  }

  #policyOf(channel: Channel): Policy {
    const policy = this.#policies.get(namespaceOf(channel));
    if (policy === undefined) throw new TidingsError('unknown_namespace', `the broker has no retention for the namespace of ${channel}`);
    return policy;
  }

  /** The scripts, when commands can be sent now; else `unavailable`. */
  #ready(): Scripted {
    if (!this.#started || this.#scripts === undefined || this.#cmd?.status !== 'ready') throw this.#unavailable();
    return this.#scripts;
  }

  #unavailable(): TidingsError {
    return new TidingsError('unavailable', this.#closed ? 'the Redis broker is closed' : `the Redis broker at ${this.#where} is unreachable; try again`);
  }

  /** Runs Redis calls, turning connection failures into `unavailable` and a full Redis into `storage_full`. */
  async #call<T>(run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      if (err instanceof TidingsError) throw err;
      if (isReplyError(err)) {
        if (err.message.startsWith('OOM')) throw new TidingsError('storage_full', `Redis is out of memory (maxmemory): ${err.message}`);
        if (TRANSIENT.test(err.message)) throw new TidingsError('unavailable', `Redis cannot serve now: ${err.message}`);
        throw err;
      }
      throw new TidingsError('unavailable', `the Redis broker at ${this.#where} failed: ${(err as Error).message}`);
    }
  }

  #markDown(reason: string): void {
    if (!this.#started || this.#status === 'down') return;
    this.#status = 'down';
    this.#handlers?.status('down', reason);
  }

  #maybeUp(): void {
    if (!this.#started || this.#status === 'up' || this.#feed?.live !== true || this.#cmd?.status !== 'ready') return;
    this.#status = 'up';
    this.#handlers?.status('reset', 'reconnected to Redis; live publications may have been missed meanwhile');
  }

  /** The feed route of `channel`: the seed Redis, or on a Cluster the master owning its bucket's slot (one command per slot). */
  #route(channel: Channel): FeedRoute {
    const owners = this.#owners;
    if (owners === undefined) return ROUTE_SEED;
    const bucket = bucketOf(channel);
    return { node: owners[bucket] ?? SEED, group: String(this.#slots[bucket]) };
  }

  /** The master owning each bucket's slot, as the Cluster client knows it now. */
  #layout(cluster: Cluster): string[] {
    return this.#slots.map((slot) => cluster.slots[slot]?.[0] ?? '');
  }

  /** After a slots refresh: when any bucket's master changed, the feed reconnects to the new layout. */
  #relayout(cluster: Cluster): void {
    if (this.#closed || this.#owners === undefined || this.#feed === undefined) return;
    const next = this.#layout(cluster);
    if (next.some((owner) => owner === '')) return;
    if (next.every((owner, b) => owner === this.#owners?.[b])) return;
    this.#owners = next;
    this.#log?.info({ redis: this.#where, masters: [...new Set(next)] }, 'redis cluster slots moved; resubscribing');
    this.#feed.relayout([...new Set(next)]);
  }

  #onMessage(name: string, message: string): void {
    const handlers = this.#handlers;
    if (handlers === undefined) return;
    const at = name.indexOf('}:p:');
    if (at === -1) return;
    const channel = name.slice(at + 4);
    // A message of a channel unsubscribed meanwhile is not delivered.
    if (this.#feed?.wants(channel) !== true) return;
    const kind = message.charCodeAt(0);
    if (kind === 0x50 /* P */) {
      handlers.publication(parsePublication(channel, message));
    } else if (kind === 0x4a /* J */ || kind === 0x4c /* L */) {
      handlers.presence({ kind: kind === 0x4a ? 'join' : 'leave', channel, entry: parsePresence(message.slice(1)) });
    }
  }

  #presenceFlag(ttl: number): Promise<unknown> {
    const cmd = this.#cmd as Redis;
    const keep = Math.round(ttl + 10 * (this.#opts.presenceSweep ?? 1000) + 60_000);
    return cmd.set(`${this.#prefix}:presence`, '1', 'PX', keep);
  }

  /** Runs `each` over every bucket, at most SWEEP_CONCURRENCY at a time (each batch pipelined). */
  async #eachBucket(each: (bucket: number) => Promise<void>): Promise<void> {
    for (let from = 0; from < GENERATION_BUCKETS; from += SWEEP_CONCURRENCY) {
      const batch: Array<Promise<void>> = [];
      for (let b = from; b < Math.min(GENERATION_BUCKETS, from + SWEEP_CONCURRENCY); b++) batch.push(each(b));
      await this.#call(() => Promise.all(batch));
    }
  }

  /** A timer's GC pass: run only by the node that takes the lock for this interval. */
  async #gcPass(interval: number): Promise<void> {
    if (this.#gcRunning || this.#status !== 'up') return;
    this.#gcRunning = true;
    try {
      if (await this.#lock('gc', interval)) {
        const dropped = await this.collect();
        if (dropped > 0) this.#log?.info({ dropped }, 'redis broker dropped idle streams');
      }
    } catch {
      // An outage: the next pass tries again.
    } finally {
      this.#gcRunning = false;
    }
  }

  async #presencePass(interval: number): Promise<void> {
    if (this.#presenceRunning || this.#status !== 'up') return;
    this.#presenceRunning = true;
    try {
      const cmd = this.#cmd as Redis;
      if ((await cmd.exists(`${this.#prefix}:presence`)) === 1 && (await this.#lock('presence', interval))) await this.sweepPresence();
    } catch {
      // An outage: the next pass tries again.
    } finally {
      this.#presenceRunning = false;
    }
  }

  /** Warns when Redis may evict keys without a TTL (meta keys): positions could then be reused. */
  async #checkEviction(cmd: Redis | Cluster): Promise<void> {
    try {
      const reply = (await cmd.config('GET', 'maxmemory-policy')) as unknown;
      const policy = Array.isArray(reply) ? String(reply[1]) : '';
      if (policy.startsWith('allkeys-')) {
        this.#log?.warn(
          { redis: this.#where, maxmemoryPolicy: policy },
          'Redis may evict any key (maxmemory-policy allkeys-*): an evicted stream would reuse positions; use noeviction',
        );
      }
    } catch {
      // Managed Redis often forbids CONFIG.
    }
  }

  /** Takes the cluster-wide lock for one sweep period (a little less, so the holder's next tick takes it again). */
  async #lock(name: string, interval: number): Promise<boolean> {
    const cmd = this.#cmd as Redis;
    return (await cmd.set(`${this.#prefix}:lock:${name}`, this.#node, 'PX', Math.max(1, Math.floor(interval * 0.9)), 'NX')) === 'OK';
  }
}

function namespaceOf(channel: Channel): string {
  const colon = channel.indexOf(':');
  return colon === -1 ? '' : channel.slice(0, colon);
}

/** `<seq>\n<expiresAt>\n<type>\n<data>` */
function parseEntry(channel: Channel, epoch: string, entry: string): Publication {
  const a = entry.indexOf('\n');
  const b = entry.indexOf('\n', a + 1);
  const c = entry.indexOf('\n', b + 1);
  const type = entry.slice(b + 1, c);
  return { channel, position: { epoch, seq: Number(entry.slice(0, a)) }, type: type === '' ? undefined : type, data: entry.slice(c + 1), ephemeral: false };
}

/** `P<epoch>\n<seq>\n<0|1><type>\n<data>` */
function parsePublication(channel: Channel, message: string): Publication {
  const a = message.indexOf('\n');
  const b = message.indexOf('\n', a + 1);
  const c = message.indexOf('\n', b + 2);
  const type = message.slice(b + 2, c);
  return {
    channel,
    position: { epoch: message.slice(1, a), seq: Number(message.slice(a + 1, b)) },
    type: type === '' ? undefined : type,
    data: message.slice(c + 1),
    ephemeral: message.charCodeAt(b + 1) === 0x31,
  };
}

function parsePresence(json: string): PresenceEntry {
  const e = JSON.parse(json) as { c: string; u: string; i?: string; n: string };
  return { client: e.c, user: e.u, info: e.i, node: e.n };
}

/** The credentials and TLS of a redis:// or rediss:// URL, for connections to other nodes of its Cluster. */
function nodeOptions(url: string): RedisOptions {
  const u = new URL(url);
  return {
    ...(u.username === '' ? {} : { username: decodeURIComponent(u.username) }),
    ...(u.password === '' ? {} : { password: decodeURIComponent(u.password) }),
    ...(u.protocol === 'rediss:' ? { tls: {} } : {}),
  };
}

/** `host:port` (as Cluster slots name nodes) as options. */
function hostPort(node: string): { host: string; port: number } {
  const colon = node.lastIndexOf(':');
  return { host: node.slice(0, colon), port: Number(node.slice(colon + 1)) };
}
