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

/** One publish, with the channel's history policy. */
export interface PublishCommand {
  readonly channel: Channel;
  readonly data: string;
  readonly type: string | undefined;
  readonly idempotencyKey: string | undefined;
  readonly historySize: number;
  /** History time-to-live in ms. */
  readonly historyTtl: number;
  readonly ephemeral: boolean;
  /** Idempotency window in ms. */
  readonly dedupWindow: number;
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

/** Receives every publication of the channels this node subscribed to, in order per channel. */
export type PublicationHandler = (pub: Publication) => void;

/** A message broker with history. */
export interface Broker {
  /** Begins delivering publications of subscribed channels to `handler`. */
  start(handler: PublicationHandler): Promise<void>;
  /**
   * Assigns the next position, appends to history (unless ephemeral) and fans out, atomically.
   * Rejects with `TidingsError('storage_full')`, changing nothing, when only dropping protected state
   * would make room.
   */
  publish(cmd: PublishCommand): Promise<PublishOutcome>;
  /** This node wants live publications of `channel`. Creates no stream. */
  subscribe(channel: Channel): Promise<void>;
  unsubscribe(channel: Channel): Promise<void>;
  /**
   * Publications after `since` (all retained when omitted), at most `limit`, plus the top position.
   * Creates no stream.
   */
  history(channel: Channel, since: Position | undefined, limit: number): Promise<HistoryPage>;
  close(): Promise<void>;
}
