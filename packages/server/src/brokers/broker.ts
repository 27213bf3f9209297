/**
 * The broker contract: where positions are assigned and publications fan out between nodes.
 * A broker moves opaque payloads (`data` is JSON text it never parses) and knows nothing of
 * sessions, transports or the hub. The in-memory broker is the reference every other broker is
 * tested against with the same suite.
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
  /** The channel's latest position (seq 0 when nothing was published in this epoch). */
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
  /** Assigns the next position, appends to history (unless ephemeral) and fans out, atomically. */
  publish(cmd: PublishCommand): Promise<PublishOutcome>;
  /** This node wants live publications of `channel`. */
  subscribe(channel: Channel): Promise<void>;
  unsubscribe(channel: Channel): Promise<void>;
  /** Publications after `since` (all retained when omitted), at most `limit`, plus the top position. */
  history(channel: Channel, since: Position | undefined, limit: number): Promise<HistoryPage>;
  close(): Promise<void>;
}
