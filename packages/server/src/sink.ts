/**
 * The seam between the core and the transports, owned by neither: a transport turns HTTP into a
 * {@link Sink} and hands it to a {@link Connector}; the core (session, hub, resume) answers with an
 * {@link Attachment} and writes into the sink. Transports never see a session, the hub or a broker,
 * and a session never knows which transport carries it.
 * @module
 */
import type { Channel, ClientFrame, CloseName, Gap, Position, RequestId, ServerFrame, SubscribeResult } from '@tidings/protocol';
import type { Identity } from './auth.js';
import type { EncodedPresence, EncodedPublication } from './encoded.js';

/** Why a connection is shed for not reading. */
export const SLOW_CONSUMER = 'client is not reading fast enough; reconnect and resume';

/** What a transport offers a session. */
export interface Sink {
  /** A subscription starts at `result.position`; the messages and gaps that follow advance it. */
  subscribed(result: SubscribeResult, id: RequestId | undefined): void;
  /** Hot path: write the shared encoding. */
  message(enc: EncodedPublication): void;
  gap(gap: Gap): void;
  /**
   * A client joined or left a subscribed presence channel: write the shared encoding (the session
   * checked the bound). A sink without it cannot carry presence events (a long poll): its session
   * is not listed as present either.
   */
  presence?(enc: EncodedPresence): void;
  /** The connection's token expires at `expiresAt` (ms): tell the client to refresh it. Absent: the client cannot be told (a long poll). */
  expiring?(expiresAt: number): void;
  /** Bytes written but not yet taken by the kernel, as the connection's bound counts them. */
  readonly bufferedBytes: number;
  /**
   * Calls `listener` once, when the backlog has fallen to the low-water mark (nothing waits in the
   * connection's queue and the socket takes writes again): at once after that happens, or soon (never
   * synchronously) if it already has. A later call replaces a listener that has not run yet; a closed
   * sink never calls it. Absent: the sink never backs up (a long poll answers per request).
   */
  whenDrained?(listener: () => void): void;
  /** Ends the connection with a named close reason, telling the client why when it can. */
  close(name: CloseName, reason: string): void;
  /**
   * The session this sink carries. A sink that must end the connection on its own (its bound is
   * exceeded by a reply or heartbeat) closes the session, so it lets go of its channels at once.
   */
  owner?: Attachment;
}

/** A two-way connection's sink: it also carries replies, errors and pongs, and can stop reading. */
export interface DuplexSink extends Sink {
  frame(frame: ServerFrame): void;
  /** Stops reading inbound frames (TCP pushes back on the peer); frames already received may still arrive. */
  pause(): void;
  resume(): void;
}

/** A logical client as a transport sees it. */
export interface Attachment {
  readonly id: string;
  readonly closed: boolean;
  /**
   * Subscribes one channel, resuming after `since`: the start position, any gap and the missed
   * publications go to the sink, then live ones. Refused once the session is closed.
   */
  subscribe(channel: Channel, since: Position | undefined, id?: RequestId): Promise<void>;
  /** Ends the session and its connection with a named reason. */
  close(name: CloseName, reason: string): void;
  /** The connection is gone: release everything the session holds. Idempotent. */
  detach(): void;
}

/** A two-way connection's session: inbound frames go to `receive`. */
export interface DuplexAttachment extends Attachment {
  /** Handles one inbound text frame (requests, replies through the sink). */
  receive(text: string): void;
  /** A binary frame arrived: refused, and counted as a bad frame. */
  receiveBinary(): void;
  /** Carries out a request as if its frame had arrived (subscriptions named in the connect request). */
  request(frame: ClientFrame): void;
  /** Reports a refusal that belongs to no request. */
  refuse(err: unknown): void;
}

/** A held long poll, as its transport offers it to the core's poll groups. */
export interface Poller {
  /** Writes the answer (a whole JSON body); called at most once. */
  answer(body: Buffer): void;
  /**
   * Calls `watcher.gone()` once when the client goes away before the answer. A watcher, not a
   * listener: what holds the poll is told without a closure made for each poll.
   */
  watch(watcher: PollWatcher): void;
}

/** Whoever holds a {@link Poller}: told when its client goes away. */
export interface PollWatcher {
  gone(): void;
}

/** One long poll for one channel. */
export interface ParkRequest {
  readonly channel: Channel;
  readonly since: Position | undefined;
  readonly identity: Identity;
  /** The longest the poll may be held, in ms. */
  readonly hold: number;
  readonly poller: Poller;
  /**
   * The poll's connection slot: a catch-up answer the group has not encoded for this position yet
   * costs the poll its token of the connect rate (`charge` throws a coded refusal past it).
   */
  readonly slot?: { charge(): void } | undefined;
}

/**
 * Whether a poll answer holding `count` messages of `bytes` (message JSON) takes one more of `size`:
 * at most `maxMessages`, and no more than `maxBytes` unless it is the first. Both kinds of poll (a
 * group's answer and one with a session of its own) cut their answers by it.
 */
export function answerTakes(count: number, bytes: number, size: number, maxMessages: number, maxBytes: number): boolean {
  return count < maxMessages && (count === 0 || bytes + size <= maxBytes);
}

/** One long poll for several channels. */
export interface JointParkRequest {
  readonly channels: readonly Channel[];
  /** The positions the poll's cursor gives (a channel without one starts at its latest). */
  readonly cursor: ReadonlyMap<Channel, Position>;
  readonly identity: Identity;
  /** The longest the poll may be held, in ms. */
  readonly hold: number;
  readonly poller: Poller;
  /** The poll's connection slot: an answer made for this poll alone at once costs its token of the connect rate. */
  readonly slot?: { charge(): void } | undefined;
}

/** Parked (held at the channel's latest position), answered at once, or declined (take the ordinary path). */
export type ParkOutcome = 'parked' | 'answered' | 'declined';

/** Downstream-only transports, by name. */
export type StreamTransport = 'sse' | 'poll';

/** What the core offers transports: a session for a sink. */
export interface Connector {
  open(transport: StreamTransport, sink: Sink, identity: Identity): Attachment;
  openDuplex(sink: DuplexSink, identity: Identity): DuplexAttachment;
  /** The long-poll fast path: a poll for one channel, held or answered without a session of its own. */
  park?(req: ParkRequest): ParkOutcome;
  /** The same for a poll of several channels, held in every channel's group and answered by the first with news. */
  parkJoint?(req: JointParkRequest): ParkOutcome;
  /** A poll for this channel (alone or with others) was answered the ordinary way: the fast path may take the next ones. */
  polled?(channel: Channel): void;
  /** Whether new connections are refused (the gateway is draining). */
  readonly draining: boolean;
}
