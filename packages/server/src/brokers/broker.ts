/**
 * The broker contract: where positions are assigned and publications fan out between nodes.
 * A broker moves opaque payloads (`data` is JSON text it never parses) and knows nothing of
 * sessions, transports or the hub. The in-memory broker is the reference every other broker is
 * tested against with the same suite (`test/brokers/broker-suite.ts`).
 *
 * **Streams.** A channel's state (epoch, seq, history, idempotency keys) is its stream, and only an
 * accepted `publish` creates one. `subscribe`, `unsubscribe` and `history` of a channel without a
 * stream create no per-channel durable state (a node's live subscription lasts until it
 * unsubscribes), so reading any number of fresh channel names costs nothing that lasts and can never
 * push another channel's history out.
 *
 * **Retention.** A broker may drop a stream only when no node subscribes to the channel and the stream
 * holds no unexpired history and no unexpired idempotency key (a key promises at-most-once within
 * its window). A dropped stream's positions are never reused: the channel continues in another epoch,
 * which resuming clients see as an explicit `epoch` gap. When a publish needs room that only dropping
 * protected state would give (a new stream past the broker's stream bound, or bytes past its storage
 * budget), it is refused with `TidingsError('storage_full')` and changes nothing. Trimming the
 * channel's own oldest publications to its `historySize`, and releasing expired ones, are not drops.
 *
 * **Epochs without state.** `history()` of a channel without a stream answers `top = { epoch, seq: 0 }`,
 * and the stream its next publish creates starts in exactly that epoch: a client that read or
 * subscribed at `{E, 0}` then receives `{E, 1}` with no gap, and resuming from `{E, 0}` recovers
 * seq 1 onwards. Since nothing may be stored per channel, the epoch is derived:
 *
 * - `life`: a random id of the broker's lifetime, shared by every node (for Redis: one key, set once
 *   with `SET NX`). A new life (restart of the memory broker, a wiped store) changes every epoch.
 * - `generation`: 1024 counters, all 0 in a new life, shared by every node.
 * - `bucket(c)`: FNV-1a 32-bit of the channel's UTF-8 bytes, modulo 1024.
 * - `epochFor(c)`: `sha256("<life>:<generation[bucket(c)] in decimal>:<c>")` (UTF-8); its first 6
 *   bytes as a big-endian integer, written in base 36, zero-padded, last 8 digits. So an epoch is
 *   always 8 characters of `[0-9a-z]`. `epochs.ts` implements both functions for every broker.
 *
 * A stream keeps the epoch it was created with; reading the generation and creating the stream are
 * atomic with the first publish. Dropping a stream increments its bucket's generation atomically
 * with the drop, so a re-created stream gets a new epoch and nobody holding the old one can mistake
 * new publications for old positions. A side effect: a channel without a stream that shares the
 * bucket moves to a new epoch too, so a client holding its `{E, 0}` gets an explicit `epoch` gap
 * (never a silent skip). Every node computes the same epoch from the shared life and generations;
 * nothing a node makes up on its own is needed by another.
 * @module
 */
import type { Channel, Position } from '@tidings/protocol';

/** A publication as a broker stores and delivers it. */
export interface Publication {
  readonly channel: Channel;
  readonly position: Position;
  readonly type: string | undefined;
  /** The payload as JSON text, encoded once by the publisher's node. */
  readonly data: string;
  /** Whether it skipped history (ephemeral namespace). */
  readonly ephemeral: boolean;
}

/** How long a namespace's channels keep their publications, set once when the broker starts. */
export interface Retention {
  /** Most publications kept per channel (0: none). */
  readonly historySize: number;
  /** How long a publication stays in history, in ms. */
  readonly historyTtl: number;
  /** Keep no history at all: positions are still assigned, but nothing is stored. */
  readonly ephemeral: boolean;
}

/** What a broker is told once, at start: per-namespace retention and the idempotency window. */
export interface BrokerSettings {
  /** Namespace ("" is the default one) to retention; a channel of any other namespace is refused (`unknown_namespace`). */
  readonly namespaces: Readonly<Record<string, Retention>>;
  /** How long an idempotency key is remembered, in ms. */
  readonly dedupWindow: number;
}

/** One publish. Retention comes from the channel's namespace, as set at start. */
export interface PublishCommand {
  readonly channel: Channel;
  /** The payload as JSON text. */
  readonly data: string;
  readonly type: string | undefined;
  /**
   * Scoped by who published (see {@link isServerKey}); applied at most once within the window
   * across every node.
   */
  readonly idempotencyKey: string | undefined;
}

/**
 * Whether a scoped idempotency key is the server side's: the server API's (`api:`) or the admin
 * dashboard's (`admin:`). A broker that bounds how many keys it remembers keeps the server's apart
 * from clients', so no client's keys push out the server's.
 */
export function isServerKey(key: string): boolean {
  return key.startsWith('api:') || key.startsWith('admin:');
}

/** Where a publish landed; `duplicate` when the key was seen within the window. */
export interface PublishOutcome {
  readonly position: Position;
  readonly duplicate: boolean;
}

/** Why the oldest publications are no longer in history. */
export type EvictionReason = 'trimmed' | 'expired';

/** A read of history after a position. */
export interface HistoryPage {
  /**
   * The channel's latest position (seq 0 when nothing was published in this epoch). For a channel
   * without a stream, the epoch its first publication will carry unless a drop intervenes.
   */
  readonly top: Position;
  /** Publications after `since` in seq order, at most `limit`; empty when the epoch differs. */
  readonly publications: readonly Publication[];
  /** Why older publications are gone, when any are. */
  readonly evicted: EvictionReason | undefined;
}

/**
 * The broker's connection, as the hub needs to know it:
 * - `up`: reachable, and the live feed of every subscribed channel flows;
 * - `down`: unreachable; publishes and reads fail with `unavailable` until it is back;
 * - `reset`: reachable again (or the feed was interrupted), and live publications may have been lost
 *   meanwhile: every joined channel must be repaired from history before anything live is delivered.
 */
export type BrokerStatus = 'up' | 'down' | 'reset';

/** One client present in a channel (namespaces with `presence: true`). */
export interface PresenceEntry {
  /** The client's session id, unique across the cluster. */
  readonly client: string;
  readonly user: string;
  /** Public data about the client, as JSON text the broker never parses; undefined when there is none. */
  readonly info: string | undefined;
  /** The node the client is connected to. */
  readonly node: string;
}

/** A client joined or left a channel (left includes: its entry expired because its node stopped refreshing it). */
export interface PresenceEvent {
  readonly kind: 'join' | 'leave';
  readonly channel: Channel;
  readonly entry: PresenceEntry;
}

/** What a broker reports to its node. */
export interface BrokerHandlers {
  /** Every publication of the channels this node subscribed to, in order per channel. */
  publication(pub: Publication): void;
  /** Joins and leaves of the channels this node subscribed to, from every node. */
  presence(event: PresenceEvent): void;
  status(status: BrokerStatus, reason: string): void;
}

/** What a broker can do, so one suite runs against every broker and states each difference with its reason. */
export interface BrokerCapabilities {
  /** Several gateway nodes share it: positions, history and idempotency keys live outside any node. */
  readonly shared: boolean;
  /** Refuses a new channel stream past a bound it enforces (`storage_full`), rather than relying on the store's own limits. */
  readonly boundedStreams: boolean;
  /** Can be made to lose its connection and come back within a test (status `down`, then `reset`). */
  readonly outages: boolean;
  /**
   * Its live feed cannot lose a publication (it runs in this process), so the periodic position
   * check, which repairs lost tails, is not run. Absent: false.
   */
  readonly lossless?: boolean;
}

/** A presence entry named by its channel and client (what a touch refreshes). */
export interface PresenceKey {
  readonly channel: Channel;
  readonly client: string;
}

/**
 * Presence across the cluster. Each node adds its own clients' entries and refreshes them (`touch`)
 * well within `ttl`; an entry that is not refreshed (its node died) expires within `ttl` plus the
 * broker's sweep period, and its leave is announced like any other. Joins and leaves reach every node
 * subscribed to the channel.
 */
export interface PresenceStore {
  /** Adds the entry, or extends it when the broker holds it; a join is announced only in the first case. */
  presenceAdd(channel: Channel, entry: PresenceEntry, ttl: number): Promise<void>;
  presenceRemove(channel: Channel, entry: PresenceEntry): Promise<void>;
  /**
   * Extends the life of these entries by `ttl` from now. Resolves with the items whose entry the
   * broker does not hold (never added, or expired and swept: its node looked dead, stalled or cut off
   * for longer than the ttl, and its leave was announced); touch adds nothing for them. An entry that
   * should be present is added again by its node (`presenceAdd`), which announces its join.
   */
  presenceTouch(items: readonly PresenceKey[], ttl: number): Promise<PresenceKey[]>;
  /** Who is present now (expired entries are never listed). */
  presence(channel: Channel): Promise<PresenceEntry[]>;
}

/** A message broker with history and presence. */
export interface Broker extends PresenceStore {
  readonly capabilities: BrokerCapabilities;
  /** Connects, applies `settings`, and begins delivering publications of subscribed channels and status changes. */
  start(handlers: BrokerHandlers, settings: BrokerSettings): Promise<void>;
  /**
   * Assigns the next position, appends to history (unless ephemeral), checks the idempotency key and
   * fans out, atomically. Rejects with `TidingsError('storage_full')`, changing nothing, when only
   * dropping protected state would make room, and with `unavailable` while the broker is down.
   */
  publish(cmd: PublishCommand): Promise<PublishOutcome>;
  /** This node wants live publications of `channel`. Creates no stream. Several calls in one tick may be batched. */
  subscribe(channel: Channel): Promise<void>;
  unsubscribe(channel: Channel): Promise<void>;
  /**
   * Publications after `since` (all retained when omitted), at most `limit`, plus the top position.
   * Creates no stream.
   */
  history(channel: Channel, since: Position | undefined, limit: number): Promise<HistoryPage>;
  /** The latest position of each channel, in one round trip (for the periodic position check). Creates no stream. */
  tops(channels: readonly Channel[]): Promise<Map<Channel, Position>>;
  close(): Promise<void>;
}

/** The little logging a networked broker does (pino's Logger fits). */
export interface BrokerLogger {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}
