/**
 * The NATS JetStream broker: positions, history, idempotency keys and presence live in a NATS server
 * (2.9 or later) with JetStream, so any number of gateway nodes share them and a client resumes on
 * any node. It implements the contract of `broker.ts` as the memory broker does (streams only from
 * publishes, derived epochs, never reused positions); what differs is stated in
 * {@link NatsBroker.capabilities}. Subjects and records are in `nats-codec.ts`, presence in
 * `nats-presence.ts`.
 *
 * **Streams.** One history stream per namespace (`p_H`, `p_H_<ns>`), whose limits are the
 * namespace's retention: `max_msgs_per_subject` = historySize (1 for ephemeral namespaces and
 * historySize 0: the channel's latest publication is still kept, for its position), `max_age` =
 * the longest of historyTtl, dedupWindow and `minRetention` (default 60 s; a publication older
 * than historyTtl but still on the server is reported as expired and never returned, so history is
 * exact to the ms while the server keeps it a little longer; JetStream also refuses a duplicate
 * window longer than max_age), `duplicate_window` = dedupWindow. One tail stream (`p_T`, one message
 * per channel, no age limit); presence entries (`p_P`) and node leases (`p_N`). Every node applies
 * the settings it was started with to the streams (so all nodes must share them); `maxChannels`
 * (the tail stream's `max_msgs`) and `maxBytes` (each history stream's `max_bytes`) refuse what
 * exceeds them with `storage_full`, and when they are not set, limits an operator set are left alone.
 *
 * **Positions.** A publication is stored at `p.h.<ns>.<name>` with its epoch and seq in headers,
 * published with `Nats-Expected-Last-Subject-Sequence` = the stream sequence of the channel's
 * latest publication: the stream accepts exactly one publication after each one, so several nodes
 * publishing at once get seqs that grow by exactly 1, stored in seq order (the loser reads the new
 * latest and retries). A channel's latest publication gives the next position (one direct get; a
 * node that published last on a channel remembers it, so its next publish needs no read).
 *
 * **Tails.** History expires (`max_age`), and a seq derived from history alone would restart at 1
 * in the same epoch once every publication of an idle channel expired. So before storing seq `n`
 * the publisher makes sure the channel's tail (`p.t.<ns>.<name>`, written with expected-last-subject
 * -sequence as a compare-and-set) holds a reservation `{epoch, base, seq >= n}` (base: the seq
 * stored when it was made); a node publishing a burst reserves the whole burst at once. While the
 * channel holds a publication, positions come from it; when it holds none, from the tail: its `seq`
 * once the reservation is older than `reserveGrace` (default 10 s, measured on the server's clock),
 * else its `base` (the reserved publications are still in flight: none of them can have expired, as
 * history lives at least `minRetention`). Failure modes of the two writes:
 * - a node dies (or the server goes away) after reserving and before storing: history holds the
 *   previous publication and the next publisher continues right after it, reusing nothing; only if
 *   the channel then expires whole does the next seq jump past the reservation, which readers see as
 *   an explicit gap (history reports it `expired`), never as a reused position;
 * - the publish reaches the server but its ack is lost: the caller gets `unavailable`; an
 *   idempotency key makes its retry safe (below), as with any broker;
 * - a burst's reservation covers publishes that then fail or turn out duplicates: the tail is ahead
 *   of history, which again only shows (as a gap) if the whole channel expires.
 *
 * **Epochs.** A channel that never published (no tail, nothing held) has the contract's derived epoch
 * `deriveEpoch(life, 0, channel)`, where the namespace's `life` is derived from when its history
 * stream and the tail stream were created. Nothing is stored per channel until its first publish,
 * which records that epoch in the tail. A tail written in another life is ignored, so a history or
 * tail stream deleted and created again (data lost) moves every channel of it to a new epoch: an
 * explicit `epoch` gap, never reused positions. Streams are never dropped by the broker, so the
 * generation is always 0 (tails are small, and bounded by `maxChannels` when set).
 *
 * **Idempotency.** A keyed publish carries `Nats-Msg-Id` = sha256(channel, key), so JetStream
 * deduplicates it within the stream's duplicate window across every node (checked before the
 * expected sequence, so two nodes racing one key store it once). On a duplicate, the original's
 * position is read from the original (by the stream sequence JetStream answers) or, when it was
 * trimmed meanwhile, from a receipt `p.k.<ns>.<name>.<key id>` written right after the original
 * was stored. If the node died between the two and the original was trimmed within the window, the
 * position cannot be known: the duplicate is refused (`internal`) rather than published twice. The
 * server's table of ids is rebuilt at a restart from the messages it holds, so a keyed publish reads
 * its key's receipt first: one written within the window answers it as a duplicate (a direct get per
 * keyed publish, none for the others).
 *
 * **Live fan-out.** The history stream republishes every stored publication, in stream order, to
 * `p.l.<ns>.<name>`; a node subscribes (core NATS) to the live subject of each channel it wants, so a
 * node receives only its channels' traffic, and a refused or deduplicated publish is never
 * delivered. Subscribes made in one tick share one round trip (`flush`); the client batches the
 * protocol lines per tick.
 *
 * **Outages.** While the connection is down, publish, history, tops, presence and subscribe reject
 * with `TidingsError('unavailable')` at once, and the status is `down`. On reconnect the broker
 * checks its streams (creating missing ones, recomputing lives), re-reads the server's clock,
 * confirms its subscriptions, forgets what it remembered of channels, and reports `reset`.
 *
 * **Lost streams.** A stream deleted (its JetStream advisory, or a request no stream answers) is
 * data loss: the broker goes `down` at once and re-creates the streams only after `recreateDelay`
 * (default 2 s plus jitter), because NATS 2.9 corrupts a stream created again while its deletion is
 * still running (creation errors, and `Nats-Expected-Last-Subject-Sequence` no longer checked: two
 * publications at one position). Then it reports `reset` with new lives, so the hub repairs every
 * joined channel and clients meet the new epochs. Nodes creating a stream at once can be answered
 * different creation times by 2.9, so lives are read again once creations have settled.
 * @module
 */
import { connect, headers as natsHeaders, nanos, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import {
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
  type StoredMsg,
  type StreamConfig,
  type StreamInfo,
} from '@nats-io/jetstream';
import { TidingsError, type Channel, type Position } from '@tidings/protocol';
import type {
  Broker,
  BrokerCapabilities,
  BrokerHandlers,
  BrokerLogger,
  BrokerSettings,
  EvictionReason,
  HistoryPage,
  PresenceEntry,
  PresenceKey,
  Publication,
  PublishCommand,
  PublishOutcome,
  Retention,
} from './broker.js';
import { deriveEpoch, newLife } from './epochs.js';
import {
  decodeTail,
  encodeTail,
  H_EPOCH,
  H_PREV,
  H_PRESENCE,
  H_SEQ,
  H_TYPE,
  keyId,
  lifeOf,
  Names,
  positionOf,
  splitChannel,
  type TailRecord,
} from './nats-codec.js';
import { NatsPresence } from './nats-presence.js';
import { readAll, type Delivered } from './nats-read.js';

/** The little logging the broker does. */
export type NatsBrokerLogger = BrokerLogger;

/** Points where tests make the broker fail the way a dying node would. */
export interface NatsBrokerFaults {
  /** Runs after the tail reservation and before the publication is stored; a throw fails the publish there. */
  readonly afterReserve?: (channel: Channel) => void | Promise<void>;
  /** Runs after a keyed publication is stored and before its receipt is written. */
  readonly afterStore?: (channel: Channel) => void | Promise<void>;
}

/** Options of the NATS broker. */
export interface NatsBrokerOptions {
  /** `nats://[user:password@]host:port`; several servers separated by commas. */
  readonly url: string;
  /** Prefix of every stream (`<prefix>_...`) and subject (`<prefix>.`...), default `tidings`: letters, digits, `_` or `-`. */
  readonly prefix?: string;
  readonly logger?: NatsBrokerLogger;
  /** A request without an answer after this many ms fails with `unavailable` (default 3000). */
  readonly requestTimeout?: number;
  /** Connecting gives up after this many ms (default 5000); `start()` fails if the first connection does. */
  readonly connectTimeout?: number;
  /** Ms between reconnect attempts (default 250, plus up to 100 of jitter). */
  readonly reconnectWait?: number;
  /** JetStream storage of the streams the broker creates (default `file`). */
  readonly storage?: 'file' | 'memory';
  /** Replicas of the streams the broker creates (default 1; a JetStream cluster allows 3 or 5). */
  readonly replicas?: number;
  /** Shortest time the server keeps a publication, in ms (default 60 000): bounds how old a tail reservation in flight can be. */
  readonly minRetention?: number;
  /** Age (ms, server clock) after which a tail reservation is taken as settled (default 10 000); at most a third of minRetention. */
  readonly reserveGrace?: number;
  /** Ms between presence sweeps (default 1000). */
  readonly presenceSweep?: number;
  /**
   * Ms to wait before re-creating a stream that was deleted (default 2000, plus up to half of it at
   * random): NATS 2.9 corrupts a stream created again while the deletion is still running.
   */
  readonly recreateDelay?: number;
  /** Most channels with a tail (streams); a new channel past it is refused with `storage_full` (default: no bound). */
  readonly maxChannels?: number;
  /** Most bytes of each namespace's history stream; a publish past it is refused with `storage_full` (default: no bound). */
  readonly maxBytes?: number;
  /** For tests: fail at chosen points. */
  readonly faults?: NatsBrokerFaults;
}

/** A namespace's retention with the idempotency window. */
interface Policy extends Retention {
  readonly ns: string;
  readonly dedupWindow: number;
  /** Whether publications are kept in history at all. */
  readonly stores: boolean;
}

/** What a node knows of a channel's position for publishing (verified by the expected sequence). */
interface ChannelState {
  epoch: string;
  /** The latest stored seq, or when nothing is held, the seq to continue after. */
  seq: number;
  /** Stream sequence of the latest held publication (0: none held). */
  last: number;
  /** Stream sequence of the tail record (0: none). */
  tailRev: number;
  /** The tail, when written in the current life. */
  tail: TailRecord | undefined;
}

interface Pending {
  readonly cmd: PublishCommand;
  readonly resolve: (outcome: PublishOutcome) => void;
  readonly reject: (err: unknown) => void;
}

/** A publication read from history, with what reading needs. */
interface Held {
  readonly pub: Publication;
  /** Server timestamp, ms. */
  readonly time: number;
  /** Stream sequence of the channel's previous publication (0: none). */
  readonly prev: number;
}

/** Publications walked back one direct get at a time when at most this many are wanted; more are read through a consumer. */
const CHAIN_MAX = 8;
/** Attempts of one publish against concurrent publishers before giving up with `unavailable`. */
const MAX_ATTEMPTS = 64;
/** Publishes of one channel taken (and reserved) together. */
const BURST = 64;
/** Channels whose position this node remembers. */
const STATE_CACHE = 10_000;
/** Ms to let concurrent creations of a stream settle before reading its creation time. */
const CREATE_SETTLE = 250;
/** Direct gets of one `tops` call in flight at once. */
const TOPS_CONCURRENCY = 256;
const PREFIX = /^[A-Za-z0-9_-]{1,32}$/;
const TD = new TextDecoder();

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const apiCode = (err: unknown): number | undefined => (err instanceof JetStreamApiError ? err.code : undefined);
const isWrongLast = (err: unknown): boolean => apiCode(err) === JetStreamApiCodes.StreamWrongLastSequence;
/** No stream answered: it was deleted (or JetStream is not up yet). */
const isStreamMissing = (err: unknown): boolean => {
  if (apiCode(err) === JetStreamApiCodes.StreamNotFound) return true;
  if (!(err instanceof Error)) return false;
  const request = err as Error & { isNoResponders?: () => boolean };
  return err.name === 'JetStreamNotEnabled' || err.name === 'NoResponders' || (typeof request.isNoResponders === 'function' && request.isNoResponders());
};
const isStorage = (err: unknown): boolean =>
  err instanceof Error && /maximum (messages|bytes|messages per subject) exceeded|insufficient resources|resource limits exceeded/i.test(err.message);
const header = (h: MsgHdrs | undefined): ((name: string) => string) => (name) => h?.get(name) ?? '';

export class NatsBroker implements Broker {
  readonly capabilities: BrokerCapabilities = {
    shared: true,
    // Storage is bounded by the server's own limits (stream max_age, max_msgs_per_subject, and the
    // optional maxChannels / maxBytes, which refuse with storage_full); the broker never drops a
    // channel's stream to make room for another, so it enforces no stream bound of its own.
    boundedStreams: false,
    outages: true,
  };

  readonly #opts: NatsBrokerOptions;
  readonly #names: Names;
  readonly #where: string;
  readonly #log: NatsBrokerLogger | undefined;
  readonly #timeout: number;
  readonly #minRetention: number;
  readonly #grace: number;
  /** This broker instance's id (presence entries and leases). */
  readonly #node = newLife();
  #nc: NatsConnection | undefined;
  #js: JetStreamClient | undefined;
  #jsm: JetStreamManager | undefined;
  #handlers: BrokerHandlers | undefined;
  #policies = new Map<string, Policy>();
  /** Namespace to its life; the tail stream's and each history stream's creation time. */
  readonly #lives = new Map<string, string>();
  #started = false;
  #closed = false;
  #up = false;
  /** Incremented on every disconnect: a recovery of an older connection is stale. */
  #era = 0;
  /** Server clock minus local clock, ms. */
  #clockOffset = 0;
  readonly #subs = new Map<Channel, Subscription>();
  #flushing: Promise<void> | undefined;
  readonly #writers = new Map<Channel, Pending[]>();
  /** Least recently used first. */
  readonly #states = new Map<Channel, ChannelState>();
  #presence: NatsPresence | undefined;
  #sweepTimer: NodeJS.Timeout | undefined;
  #sweeping = false;
  #refreshing: Promise<void> | undefined;
  /** A lost stream's re-creation is scheduled. */
  #losing = false;
  /** A stream was created during the current refresh. */
  #createdNow = false;

  constructor(options: NatsBrokerOptions) {
    if (!/^(nats|tls):\/\/[^,\s]+(,\s*(nats|tls):\/\/[^,\s]+)*$/.test(options.url)) throw new TidingsError('bad_request', 'the NATS broker needs nats://host:port URLs');
    const prefix = options.prefix ?? 'tidings';
    if (!PREFIX.test(prefix)) throw new TidingsError('bad_request', 'the NATS prefix must be 1-32 letters, digits, _ or -');
    this.#opts = options;
    this.#names = new Names(prefix);
    this.#where = options.url.replace(/\/\/[^@/]*@/g, '//***@');
    this.#log = options.logger;
    this.#timeout = options.requestTimeout ?? 3000;
    this.#minRetention = options.minRetention ?? 60_000;
    this.#grace = Math.min(options.reserveGrace ?? 10_000, Math.floor(this.#minRetention / 3));
  }

  async start(handlers: BrokerHandlers, settings: BrokerSettings): Promise<void> {
    if (this.#started || this.#closed) throw new Error('a NatsBroker starts once');
    this.#started = true;
    this.#handlers = handlers;
    this.#policies = new Map(
      Object.entries(settings.namespaces).map(([ns, r]) => [
        ns,
        { ...r, ns, dedupWindow: settings.dedupWindow, stores: !r.ephemeral && r.historySize > 0 },
      ]),
    );
    let nc: NatsConnection;
    try {
      nc = await connect({
        ...serversOf(this.#opts.url),
        name: `tidings ${this.#node}`,
        timeout: this.#opts.connectTimeout ?? 5000,
        maxReconnectAttempts: -1,
        reconnectTimeWait: this.#opts.reconnectWait ?? 250,
        reconnectJitter: 100,
        pingInterval: 10_000,
      });
    } catch (err) {
      throw new TidingsError('unavailable', `cannot connect to NATS at ${this.#where}: ${(err as Error).message}`);
    }
    this.#nc = nc;
    try {
      this.#jsm = await jetstreamManager(nc, { timeout: this.#timeout });
      this.#js = jetstream(nc, { timeout: this.#timeout });
      await this.#refreshLives(true);
      await this.#calibrate();
    } catch (err) {
      await nc.close().catch(() => undefined);
      throw err instanceof TidingsError ? err : new TidingsError('unavailable', `NATS at ${this.#where} has no usable JetStream: ${(err as Error).message}`);
    }
    this.#presence = new NatsPresence({
      names: this.#names,
      node: this.#node,
      timeout: this.#timeout,
      now: () => this.#serverNow(),
      conn: () => this.#conn(),
    });
    this.#watchAdvisories(nc);
    void this.#watchStatus(nc);
    const sweep = this.#opts.presenceSweep ?? 1000;
    if (sweep > 0) this.#sweepTimer = setInterval(() => void this.#sweep(), sweep).unref();
    this.#up = true;
    handlers.status('up', `connected to NATS at ${this.#where}`);
  }

  publish(cmd: PublishCommand): Promise<PublishOutcome> {
    return new Promise<PublishOutcome>((resolve, reject) => {
      this.#ready();
      this.#policyOf(cmd.channel);
      const queue = this.#writers.get(cmd.channel);
      if (queue !== undefined) {
        queue.push({ cmd, resolve, reject });
        return;
      }
      const started: Pending[] = [{ cmd, resolve, reject }];
      this.#writers.set(cmd.channel, started);
      void this.#drain(cmd.channel, started);
    });
  }

  async subscribe(channel: Channel): Promise<void> {
    this.#ready();
    const nc = this.#nc as NatsConnection;
    let sub = this.#subs.get(channel);
    if (sub === undefined) {
      const created: Subscription = nc.subscribe(this.#names.live(channel), { callback: (err, msg) => this.#onLive(channel, created, err, msg) });
      sub = created;
      this.#subs.set(channel, sub);
    }
    try {
      await this.#flushed();
    } catch (err) {
      if (this.#subs.get(channel) === sub) {
        this.#subs.delete(channel);
        sub.unsubscribe();
      }
      throw this.#fail(err, `subscribing to ${channel}`);
    }
  }

  unsubscribe(channel: Channel): Promise<void> {
    const sub = this.#subs.get(channel);
    if (sub !== undefined) {
      this.#subs.delete(channel);
      if (!sub.isClosed()) sub.unsubscribe();
    }
    return Promise.resolve();
  }

  async history(channel: Channel, since: Position | undefined, limit: number): Promise<HistoryPage> {
    this.#ready();
    const policy = this.#policyOf(channel);
    try {
      return await this.#history(channel, policy, since, limit);
    } catch (err) {
      throw this.#fail(err, `reading the history of ${channel}`);
    }
  }

  async tops(channels: readonly Channel[]): Promise<Map<Channel, Position>> {
    this.#ready();
    const out = new Map<Channel, Position>();
    try {
      for (let i = 0; i < channels.length; i += TOPS_CONCURRENCY) {
        const chunk = channels.slice(i, i + TOPS_CONCURRENCY);
        const tops = await Promise.all(chunk.map((c) => this.#top(c, this.#policyOf(c))));
        chunk.forEach((c, j) => out.set(c, tops[j] as Position));
      }
    } catch (err) {
      throw this.#fail(err, 'reading the latest positions');
    }
    return out;
  }

  async presenceAdd(channel: Channel, entry: PresenceEntry, ttl: number): Promise<void> {
    this.#ready();
    this.#policyOf(channel);
    await this.#presenceCall(`adding presence in ${channel}`, (p) => p.add(channel, entry, ttl));
  }

  async presenceRemove(channel: Channel, entry: PresenceEntry): Promise<void> {
    this.#ready();
    await this.#presenceCall(`removing presence in ${channel}`, (p) => p.remove(channel, entry));
  }

  async presenceTouch(items: readonly PresenceKey[], ttl: number): Promise<PresenceKey[]> {
    if (items.length === 0) return [];
    this.#ready();
    return this.#presenceCall('refreshing presence', (p) => p.touch(items, ttl));
  }

  async presence(channel: Channel): Promise<PresenceEntry[]> {
    this.#ready();
    this.#policyOf(channel);
    return this.#presenceCall(`reading presence in ${channel}`, (p) => p.list(channel));
  }

  /** Closes the connection; presence entries of this node are left to expire (as a node that died would). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#up = false;
    clearInterval(this.#sweepTimer);
    this.#presence?.clear();
    for (const [, queue] of this.#writers) for (const p of queue.splice(0)) p.reject(new TidingsError('unavailable', 'the broker is closing'));
    this.#subs.clear();
    this.#states.clear();
    this.#handlers = undefined;
    await this.#nc?.close().catch(() => undefined);
  }

  /** This broker's node id (random per instance), as presence leases name it. */
  get node(): string {
    return this.#node;
  }

  /** Runs one presence sweep now (tests; the periodic one runs every `presenceSweep` ms). */
  async sweep(): Promise<void> {
    await this.#sweep();
  }

  // ---- publishing ------------------------------------------------------------------------------

  /** Publishes a channel's queue, a burst at a time; one writer per channel per node. */
  async #drain(channel: Channel, queue: Pending[]): Promise<void> {
    while (queue.length > 0) {
      const burst = queue.splice(0, BURST);
      let state: ChannelState | undefined = this.#takeState(channel);
      for (let i = 0; i < burst.length; i++) {
        const item = burst[i] as Pending;
        try {
          this.#ready();
          const { outcome, state: after } = await this.#publishOne(item.cmd, state, burst.length - i);
          state = after;
          item.resolve(outcome);
        } catch (err) {
          state = undefined;
          item.reject(this.#fail(err, `publishing to ${channel}`));
        }
      }
      if (state !== undefined) this.#keepState(channel, state);
    }
    if (this.#writers.get(channel) === queue) this.#writers.delete(channel);
  }

  async #publishOne(cmd: PublishCommand, known: ChannelState | undefined, burst: number): Promise<{ outcome: PublishOutcome; state: ChannelState | undefined }> {
    const { channel } = cmd;
    const policy = this.#policyOf(channel);
    const js = this.#js as JetStreamClient;
    const stream = this.#names.historyStream(policy.ns);
    const subject = this.#names.history(channel);
    const id = cmd.idempotencyKey !== undefined && policy.dedupWindow > 0 ? keyId(channel, cmd.idempotencyKey) : undefined;
    if (id !== undefined) {
      // JetStream keeps the ids it deduplicates in the server's memory, rebuilt at a restart from the
      // messages it still holds: an original trimmed out of history is forgotten there within the
      // window. Its receipt is not: a key that landed within the window is a duplicate, whatever the
      // server remembers.
      const landed = await this.#receipt(channel, stream, id, policy.dedupWindow);
      if (landed !== undefined) return { outcome: { position: landed, duplicate: true }, state: known };
    }
    let state = known;
    let suspect = false;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      if (attempt > 2) await sleep(Math.random() * Math.min(50, 2 ** attempt));
      state ??= await this.#load(channel, policy, suspect);
      await this.#reserve(channel, state, state.seq + burst);
      await this.#opts.faults?.afterReserve?.(channel);
      const seq = state.seq + 1;
      const h = natsHeaders();
      h.set(H_EPOCH, state.epoch);
      h.set(H_SEQ, String(seq));
      h.set(H_PREV, String(state.last));
      if (cmd.type !== undefined) h.set(H_TYPE, cmd.type);
      let ack;
      try {
        ack = await js.publish(subject, cmd.data, { expect: { lastSubjectSequence: state.last }, headers: h, ...(id === undefined ? {} : { msgID: id }) });
      } catch (err) {
        if (isWrongLast(err)) {
          // Another node published first (or history changed under us): read the channel again.
          suspect = state.last > 0;
          state = undefined;
          continue;
        }
        throw err;
      }
      if (ack.duplicate) return { outcome: { position: await this.#original(channel, stream, ack.seq, id as string), duplicate: true }, state };
      const position: Position = { epoch: state.epoch, seq };
      state.seq = seq;
      state.last = ack.seq;
      if (id !== undefined) {
        await this.#opts.faults?.afterStore?.(channel);
        const r = natsHeaders();
        r.set(H_EPOCH, position.epoch);
        r.set(H_SEQ, String(seq));
        await js.publish(this.#names.receipt(channel, id), undefined, { headers: r }).catch((err: unknown) => {
          this.#log?.warn({ err, channel }, 'NATS broker: could not write an idempotency receipt');
        });
      }
      return { outcome: { position, duplicate: false }, state };
    }
    throw new TidingsError('unavailable', `publishing to ${channel} lost ${MAX_ATTEMPTS} races with other publishers; try again`);
  }

  /** Where a channel stands for publishing: its latest held publication, else its tail, else a new stream. */
  async #load(channel: Channel, policy: Policy, suspect: boolean): Promise<ChannelState> {
    const [held, tailMsg] = await Promise.all([
      this.#last(this.#names.historyStream(policy.ns), this.#names.history(channel)),
      this.#last(this.#names.tailStream, this.#names.tail(channel)),
    ]);
    if (held === null && suspect) {
      // History we just saw is gone: expiry, or a lost stream; make sure the life is current first.
      await this.#refreshLives();
      return this.#load(channel, policy, false);
    }
    const tailRev = tailMsg?.seq ?? 0;
    const tail = this.#tailOf(tailMsg, policy.ns);
    if (held !== null) {
      const at = positionOf(header(held.header));
      if (at === undefined) throw new TidingsError('internal', `the latest publication of ${channel} in NATS has no position`);
      return { epoch: at.epoch, seq: at.seq, last: held.seq, tailRev, tail: tail?.record };
    }
    if (tail === undefined) return { epoch: this.#epochFor(channel, policy.ns), seq: 0, last: 0, tailRev, tail: undefined };
    return { epoch: tail.record.epoch, seq: tail.settled ? tail.record.seq : tail.record.base, last: 0, tailRev, tail: tail.record };
  }

  /** Makes sure the channel's tail reserves every seq up to `upto` in the state's epoch (compare-and-set). */
  async #reserve(channel: Channel, state: ChannelState, upto: number): Promise<void> {
    const js = this.#js as JetStreamClient;
    const policy = this.#policyOf(channel);
    const subject = this.#names.tail(channel);
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const life = this.#life(policy.ns);
      const t = state.tail;
      if (t !== undefined && t.life === life && t.epoch === state.epoch && t.seq >= upto) return;
      const record: TailRecord = { life, epoch: state.epoch, base: state.seq, seq: upto };
      try {
        const ack = await js.publish(subject, encodeTail(record), { expect: { lastSubjectSequence: state.tailRev } });
        state.tailRev = ack.seq;
        state.tail = record;
        return;
      } catch (err) {
        if (!isWrongLast(err)) throw err;
      }
      // Another node moved the tail: take what it holds now (a reservation at or past ours is enough).
      const now = await this.#last(this.#names.tailStream, subject);
      state.tailRev = now?.seq ?? 0;
      state.tail = this.#tailOf(now, policy.ns)?.record;
    }
    throw new TidingsError('unavailable', `reserving positions of ${channel} lost ${MAX_ATTEMPTS} races with other publishers; try again`);
  }

  /** Where a keyed publish landed, from its receipt written within the last `window` ms; undefined without one. */
  async #receipt(channel: Channel, stream: string, id: string, window = Infinity): Promise<Position | undefined> {
    const receipt = await this.#last(stream, this.#names.receipt(channel, id));
    if (receipt === null || this.#serverNow() - receipt.time.getTime() >= window) return undefined;
    return positionOf(header(receipt.header));
  }

  /** The position of the publication a duplicate key points at. */
  async #original(channel: Channel, stream: string, seq: number, id: string): Promise<Position> {
    const jsm = this.#jsm as JetStreamManager;
    const original = await jsm.direct.getMessage(stream, { seq });
    const at = original !== null && original.subject === this.#names.history(channel) ? positionOf(header(original.header)) : undefined;
    if (at !== undefined) return at;
    const fromReceipt = await this.#receipt(channel, stream, id);
    if (fromReceipt !== undefined) return fromReceipt;
    throw new TidingsError('internal', `a publish with this idempotency key was accepted on ${channel} within the window, but where it landed is no longer known`);
  }

  #takeState(channel: Channel): ChannelState | undefined {
    const state = this.#states.get(channel);
    if (state !== undefined) this.#states.delete(channel);
    return state;
  }

  #keepState(channel: Channel, state: ChannelState): void {
    this.#states.delete(channel);
    this.#states.set(channel, state);
    if (this.#states.size > STATE_CACHE) {
      const oldest = this.#states.keys().next();
      if (oldest.done !== true) this.#states.delete(oldest.value);
    }
  }

  // ---- reading ---------------------------------------------------------------------------------

  async #history(channel: Channel, policy: Policy, since: Position | undefined, limit: number): Promise<HistoryPage> {
    const stream = this.#names.historyStream(policy.ns);
    const latest = await this.#last(stream, this.#names.history(channel));
    if (latest === null) return this.#tailPage(channel, policy);
    const last = this.#held(channel, policy, latest.time.getTime(), latest.header, latest.data);
    if (last === undefined) throw new TidingsError('internal', `the latest publication of ${channel} in NATS has no position`);
    const top = last.pub.position;
    const now = this.#serverNow();
    if (!policy.stores) return { top, publications: [], evicted: undefined };
    const lastExpired = now - last.time >= policy.historyTtl;
    if (limit <= 0 || (since !== undefined && (since.epoch !== top.epoch || since.seq >= top.seq))) {
      return { top, publications: [], evicted: lastExpired ? 'expired' : undefined };
    }
    const after = since?.seq ?? 0;
    const { held, missing } = top.seq - after <= CHAIN_MAX ? await this.#walkBack(channel, policy, last, after) : await this.#scan(channel, policy, stream);
    let evicted: EvictionReason | undefined;
    const publications: Publication[] = [];
    for (const h of held) {
      if (h.pub.position.epoch !== top.epoch) continue;
      if (now - h.time >= policy.historyTtl) {
        evicted = 'expired';
        continue;
      }
      if (h.pub.position.seq > after && publications.length < limit) publications.push(h.pub);
    }
    if (evicted === undefined && missing !== undefined) evicted = top.seq - missing >= policy.historySize ? 'trimmed' : 'expired';
    return { top, publications, evicted };
  }

  /**
   * The channel's publications after `after`, walking back from the latest by each one's
   * `Tidings-Prev`; `missing` is the seq of a publication no longer held, if the walk met one.
   */
  async #walkBack(channel: Channel, policy: Policy, last: Held, after: number): Promise<{ held: Held[]; missing: number | undefined }> {
    const jsm = this.#jsm as JetStreamManager;
    const stream = this.#names.historyStream(policy.ns);
    const subject = this.#names.history(channel);
    const out = [last];
    let at = last;
    while (at.pub.position.seq > after + 1 && at.prev > 0) {
      const m = await jsm.direct.getMessage(stream, { seq: at.prev });
      const h = m === null || m.subject !== subject ? undefined : this.#held(channel, policy, m.time.getTime(), m.header, m.data);
      if (h === undefined) return { held: out.reverse(), missing: at.pub.position.seq - 1 };
      out.push(h);
      at = h;
    }
    return { held: out.reverse(), missing: at.pub.position.seq > after + 1 ? at.pub.position.seq - 1 : undefined };
  }

  /** Every publication of the channel the server holds, oldest first. */
  async #scan(channel: Channel, policy: Policy, stream: string): Promise<{ held: Held[]; missing: number | undefined }> {
    const all = await readAll(this.#nc as NatsConnection, this.#jsm as JetStreamManager, stream, this.#names.history(channel), policy.historySize + 1, this.#timeout);
    const held = all.map((m: Delivered) => this.#held(channel, policy, m.time, m.headers, m.data)).filter((h): h is Held => h !== undefined);
    const first = held[0];
    return { held, missing: first !== undefined && first.pub.position.seq > 1 ? first.pub.position.seq - 1 : undefined };
  }

  /** A channel's top when history holds none of it: from its tail, or its derived epoch. */
  async #tailPage(channel: Channel, policy: Policy): Promise<HistoryPage> {
    const tail = this.#tailOf(await this.#last(this.#names.tailStream, this.#names.tail(channel)), policy.ns);
    if (tail === undefined) return { top: { epoch: this.#epochFor(channel, policy.ns), seq: 0 }, publications: [], evicted: undefined };
    const seq = tail.settled ? tail.record.seq : tail.record.base;
    return { top: { epoch: tail.record.epoch, seq }, publications: [], evicted: seq > 0 && policy.stores ? 'expired' : undefined };
  }

  async #top(channel: Channel, policy: Policy): Promise<Position> {
    const latest = await this.#last(this.#names.historyStream(policy.ns), this.#names.history(channel));
    if (latest === null) return (await this.#tailPage(channel, policy)).top;
    const at = positionOf(header(latest.header));
    if (at === undefined) throw new TidingsError('internal', `the latest publication of ${channel} in NATS has no position`);
    return at;
  }

  #held(channel: Channel, policy: Policy, time: number, h: MsgHdrs | undefined, data: Uint8Array): Held | undefined {
    const get = header(h);
    const position = positionOf(get);
    if (position === undefined) return undefined;
    const type = get(H_TYPE);
    const prev = Number(get(H_PREV));
    return {
      pub: { channel, position, type: type === '' ? undefined : type, data: TD.decode(data), ephemeral: policy.ephemeral },
      time,
      prev: Number.isSafeInteger(prev) ? prev : 0,
    };
  }

  /** A tail record of the current life, and whether its reservation is settled (old enough that nothing of it is still in flight). */
  #tailOf(msg: StoredMsg | null, ns: string): { record: TailRecord; settled: boolean } | undefined {
    if (msg === null) return undefined;
    const record = decodeTail(TD.decode(msg.data));
    if (record === undefined || record.life !== this.#life(ns)) return undefined;
    const settled = record.seq === record.base || this.#serverNow() - msg.time.getTime() >= this.#grace;
    return { record, settled };
  }

  #last(stream: string, subject: string): Promise<StoredMsg | null> {
    return (this.#jsm as JetStreamManager).direct.getMessage(stream, { last_by_subj: subject });
  }

  // ---- live feed -------------------------------------------------------------------------------

  #onLive(channel: Channel, sub: Subscription, err: Error | null, msg: Msg): void {
    if (err !== null || this.#subs.get(channel) !== sub) return;
    const handlers = this.#handlers;
    if (handlers === undefined) return;
    const get = header(msg.headers);
    const kind = get(H_PRESENCE);
    if (kind !== '') {
      const event = NatsPresence.event(kind, channel, msg.data);
      if (event !== undefined) handlers.presence(event);
      return;
    }
    const position = positionOf(get);
    const policy = this.#policies.get(splitChannel(channel).ns);
    if (position === undefined || policy === undefined) return;
    const type = get(H_TYPE);
    handlers.publication({ channel, position, type: type === '' ? undefined : type, data: TD.decode(msg.data), ephemeral: policy.ephemeral });
  }

  /** One round trip for every subscribe of this tick. */
  #flushed(): Promise<void> {
    this.#flushing ??= new Promise<void>((resolve) => setImmediate(resolve)).then(() => {
      this.#flushing = undefined;
      return this.#withTimeout((this.#nc as NatsConnection).flush(), 'confirming subscriptions');
    });
    return this.#flushing;
  }

  // ---- streams, lives, connection ----------------------------------------------------------------

  /**
   * Checks every stream against the settings' limits and recomputes every namespace's life. Only
   * `create` (at start, and when recovering) creates missing streams: anywhere else a missing stream
   * is a lost one, re-created later (see {@link NatsBroker.#onStreamLost}).
   */
  async #refreshLives(create = false): Promise<void> {
    while (this.#refreshing !== undefined) await this.#refreshing.catch(() => undefined);
    const refresh = this.#doRefreshLives(create).finally(() => {
      if (this.#refreshing === refresh) this.#refreshing = undefined;
    });
    this.#refreshing = refresh;
    return refresh;
  }

  async #doRefreshLives(create: boolean): Promise<void> {
    const names = this.#names;
    const common: Partial<StreamConfig> = {
      retention: RetentionPolicy.Limits,
      storage: this.#opts.storage === 'memory' ? StorageType.Memory : StorageType.File,
      num_replicas: this.#opts.replicas ?? 1,
      allow_direct: true,
    };
    const maxChannels = this.#opts.maxChannels;
    const tail = await this.#ensure(create, {
      ...common,
      name: names.tailStream,
      subjects: [`${names.prefix}.t.>`],
      max_msgs_per_subject: 1,
      // Without a bound, whatever an operator set is left alone.
      ...(maxChannels === undefined ? {} : { max_msgs: maxChannels, discard: DiscardPolicy.New }),
    });
    await this.#ensure(create, { ...common, name: names.presenceStream, subjects: [`${names.prefix}.p.>`], max_msgs_per_subject: 1 });
    await this.#ensure(create, { ...common, name: names.leaseStream, subjects: [`${names.prefix}.n.>`], max_msgs_per_subject: 1 });
    const histories = new Map<string, StreamInfo>();
    for (const policy of this.#policies.values()) {
      const maxAge = Math.max(policy.historyTtl, policy.dedupWindow, this.#minRetention);
      const maxBytes = this.#opts.maxBytes;
      const info = await this.#ensure(create, {
        ...common,
        name: names.historyStream(policy.ns),
        subjects: names.historySubjects(policy.ns),
        max_msgs_per_subject: policy.stores ? policy.historySize : 1,
        max_age: nanos(maxAge),
        duplicate_window: nanos(policy.dedupWindow > 0 ? policy.dedupWindow : Math.min(maxAge, 120_000)),
        ...(maxBytes === undefined ? {} : { max_bytes: maxBytes, discard: DiscardPolicy.New }),
        republish: names.republish(policy.ns),
      });
      histories.set(policy.ns, info);
    }
    let tailCreated = tail.created;
    if (this.#createdNow) {
      // Nodes creating a stream at once can each be answered another creation time (NATS 2.9): once
      // settled, every node reads the same one, and so derives the same lives.
      this.#createdNow = false;
      await sleep(CREATE_SETTLE);
      const jsm = this.#jsm as JetStreamManager;
      tailCreated = (await jsm.streams.info(names.tailStream)).created;
      for (const ns of histories.keys()) histories.set(ns, await jsm.streams.info(names.historyStream(ns)));
    }
    const lives = new Map<string, string>();
    for (const [ns, info] of histories) lives.set(ns, lifeOf(tailCreated, info.created));
    let changed = false;
    for (const [ns, life] of lives) {
      if (this.#lives.get(ns) !== life) changed = true;
      this.#lives.set(ns, life);
    }
    // Positions remembered from another life are worthless.
    if (changed) this.#states.clear();
  }

  /** The stream with this configuration: created, or updated where its limits differ. */
  async #ensure(create: boolean, config: Partial<StreamConfig> & { name: string }): Promise<StreamInfo> {
    const jsm = this.#jsm as JetStreamManager;
    for (let attempt = 0; ; attempt++) {
      let info: StreamInfo | undefined;
      try {
        info = await jsm.streams.info(config.name);
      } catch (err) {
        if (apiCode(err) !== JetStreamApiCodes.StreamNotFound || !create) throw err;
      }
      if (info === undefined) {
        try {
          this.#createdNow = true;
          return await jsm.streams.add(config);
        } catch (err) {
          // Another node created it first.
          if (attempt < 2 && apiCode(err) === 10058) continue;
          throw err;
        }
      }
      if (!differs(info.config, config)) return info;
      const { name, retention, storage, num_replicas, ...limits } = config;
      void retention;
      void storage;
      void num_replicas;
      const updated = await jsm.streams.update(name, { ...info.config, ...limits });
      this.#log?.info({ stream: name }, 'NATS broker: stream limits updated to the settings');
      return updated;
    }
  }

  /**
   * Measures the server's clock against ours (tail reservations are aged, and presence entries
   * expire, by the server's clock): a probe stored in the lease stream under a subject no node uses,
   * read back and deleted. A failure keeps the last measurement.
   */
  async #calibrate(): Promise<void> {
    const js = this.#js as JetStreamClient;
    const jsm = this.#jsm as JetStreamManager;
    const stream = this.#names.leaseStream;
    try {
      const before = Date.now();
      const ack = await js.publish(`${this.#names.prefix}.n.~clock~${this.#node}`, undefined);
      const after = Date.now();
      const stored = await jsm.direct.getMessage(stream, { seq: ack.seq });
      if (stored !== null) this.#clockOffset = stored.time.getTime() - (before + after) / 2;
      await jsm.streams.deleteMessage(stream, ack.seq, false).catch(() => false);
    } catch (err) {
      this.#log?.warn({ err }, "NATS broker: could not measure the server's clock");
    }
  }

  #serverNow(): number {
    return Date.now() + this.#clockOffset;
  }

  #watchAdvisories(nc: NatsConnection): void {
    const ours = new Set([this.#names.tailStream, ...[...this.#policies.keys()].map((ns) => this.#names.historyStream(ns))]);
    for (const stream of ours) {
      nc.subscribe(`$JS.EVENT.ADVISORY.STREAM.*.${stream}`, {
        callback: (err, msg) => {
          if (err !== null || this.#closed) return;
          if (msg.subject.includes('.DELETED.')) this.#onStreamLost(`the stream ${stream} was deleted: its data is lost`);
          else if (msg.subject.includes('.CREATED.') && this.#up) {
            this.#refreshLives().catch((e: unknown) => {
              if (isStreamMissing(e)) this.#onStreamLost(`a stream of the broker is missing`);
              else this.#log?.warn({ err: e, stream }, 'NATS broker: could not re-check streams after an advisory');
            });
          }
        },
      });
    }
  }

  async #watchStatus(nc: NatsConnection): Promise<void> {
    try {
      await this.#followStatus(nc);
    } catch (err) {
      this.#log?.warn({ err }, 'NATS broker: lost track of the connection status');
    }
  }

  async #followStatus(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (this.#closed) return;
      switch (s.type) {
        case 'disconnect':
          this.#era += 1;
          this.#down(`disconnected from NATS at ${this.#where}`);
          break;
        case 'reconnect':
          if (!this.#losing) void this.#recover(this.#era);
          break;
        case 'close':
          this.#down('the NATS connection closed');
          return;
        default:
          break;
      }
    }
  }

  #down(reason: string): void {
    this.#states.clear();
    if (!this.#up) return;
    this.#up = false;
    this.#handlers?.status('down', reason);
  }

  /**
   * A stream is gone (deleted, so its data is lost): down at once, and after `recreateDelay` (the
   * server must finish deleting it first) the streams are created again with new lives, and the
   * status is `reset`, so every joined channel is repaired and meets its new epoch.
   */
  #onStreamLost(reason: string): void {
    if (this.#closed || this.#losing) return;
    this.#losing = true;
    // Any recovery in progress is for an older state of things.
    this.#era += 1;
    this.#down(reason);
    this.#log?.warn({ reason }, 'NATS broker: a stream is missing; re-creating it shortly');
    const delay = this.#opts.recreateDelay ?? 2000;
    setTimeout(() => {
      this.#losing = false;
      void this.#recover(this.#era);
    }, delay + Math.random() * (delay / 2)).unref();
  }

  /** After a reconnect or a lost stream: streams and lives checked, clock measured, subscriptions confirmed, then `reset`. */
  async #recover(era: number): Promise<void> {
    for (let attempt = 0; era === this.#era && !this.#closed; attempt++) {
      try {
        await this.#refreshLives(true);
        await this.#calibrate();
        await this.#withTimeout((this.#nc as NatsConnection).flush(), 'confirming subscriptions');
        if (era !== this.#era || this.#closed) return;
        this.#states.clear();
        this.#up = true;
        this.#handlers?.status('reset', `reconnected to NATS at ${this.#where}`);
        return;
      } catch (err) {
        if (attempt === 0) this.#log?.warn({ err }, 'NATS broker: reconnected, waiting for JetStream');
        await sleep(Math.min(1000, 100 * 2 ** Math.min(attempt, 4)));
      }
    }
  }

  async #sweep(): Promise<void> {
    if (this.#sweeping || !this.#up || this.#presence === undefined) return;
    this.#sweeping = true;
    try {
      await this.#presence.sweep();
    } catch (err) {
      if (this.#up) this.#log?.warn({ err }, 'NATS broker: presence sweep failed');
    } finally {
      this.#sweeping = false;
    }
  }

  // ---- helpers ---------------------------------------------------------------------------------

  #conn(): { nc: NatsConnection; js: JetStreamClient; jsm: JetStreamManager } {
    return { nc: this.#nc as NatsConnection, js: this.#js as JetStreamClient, jsm: this.#jsm as JetStreamManager };
  }

  async #presenceCall<T>(what: string, call: (p: NatsPresence) => Promise<T>): Promise<T> {
    try {
      return await call(this.#presence as NatsPresence);
    } catch (err) {
      throw this.#fail(err, what);
    }
  }

  #ready(): void {
    if (this.#closed) throw new TidingsError('unavailable', 'the NATS broker is closed');
    if (!this.#started || this.#nc === undefined) throw new TidingsError('unavailable', 'the NATS broker is not started');
    if (!this.#up) throw new TidingsError('unavailable', `NATS at ${this.#where} is unreachable`);
  }

  #policyOf(channel: Channel): Policy {
    const policy = this.#policies.get(splitChannel(channel).ns);
    if (policy === undefined) throw new TidingsError('unknown_namespace', `the broker has no retention for the namespace of ${channel}`);
    return policy;
  }

  #life(ns: string): string {
    const life = this.#lives.get(ns);
    if (life === undefined) throw new TidingsError('unavailable', `the NATS broker has not seen the streams of namespace "${ns}" yet`);
    return life;
  }

  #epochFor(channel: Channel, ns: string): string {
    return deriveEpoch(this.#life(ns), 0, channel);
  }

  /** Any failure as a coded error: NATS being unreachable or slow is `unavailable`, full storage `storage_full`. */
  #fail(err: unknown, what: string): TidingsError {
    if (err instanceof TidingsError) return err;
    if (isStreamMissing(err)) this.#onStreamLost(`${what}: a stream of the broker is missing`);
    if (isStorage(err)) return new TidingsError('storage_full', `${what}: NATS refused it: ${(err as Error).message}`);
    const message = err instanceof Error ? err.message : String(err);
    return new TidingsError('unavailable', `${what} failed: NATS at ${this.#where}: ${message}`);
  }

  #withTimeout<T>(promise: Promise<T>, what: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${what}: no answer within ${this.#timeout} ms`)), this.#timeout);
      promise.then(
        (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        (e: unknown) => {
          clearTimeout(timer);
          reject(e instanceof Error ? e : new Error(String(e)));
        },
      );
    });
  }
}

/**
 * The servers of a broker URL (`nats://[user:password@]host:port`, several separated by commas),
 * with credentials taken out of the URLs into the client's options (a user alone is a token).
 */
export function serversOf(url: string): { servers: string[]; user?: string; pass?: string; token?: string } {
  const out: { servers: string[]; user?: string; pass?: string; token?: string } = { servers: [] };
  for (const part of url.split(',')) {
    const u = new URL(part.trim());
    if (u.username !== '') {
      if (u.password !== '') {
        out.user = decodeURIComponent(u.username);
        out.pass = decodeURIComponent(u.password);
      } else {
        out.token = decodeURIComponent(u.username);
      }
    }
    out.servers.push(`${u.protocol}//${u.host}`);
  }
  return out;
}

/** Whether a stream's configuration differs from the wanted one in anything the broker sets. */
function differs(have: StreamConfig, want: Partial<StreamConfig>): boolean {
  const keys = ['max_msgs_per_subject', 'max_age', 'duplicate_window', 'max_msgs', 'max_bytes', 'discard', 'allow_direct'] as const;
  for (const k of keys) if (want[k] !== undefined && have[k] !== want[k]) return true;
  if (want.subjects !== undefined && [...(have.subjects ?? [])].sort().join() !== [...want.subjects].sort().join()) return true;
  if (want.republish !== undefined && (have.republish?.src !== want.republish.src || have.republish?.dest !== want.republish.dest)) return true;
  return false;
}
