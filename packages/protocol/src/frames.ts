/**
 * Wire frames, a discriminated union on `type`. A publication travels as the same {@link Message}
 * object on every transport: inside a `message` frame on WebSocket, as the `data:` of an SSE event,
 * and as an element of a long-poll response.
 * @module
 */
import type { Channel } from './channel.js';
import type { ErrorCode } from './codes.js';
import type { Position } from './position.js';

/** Protocol version announced in the `welcome` frame. */
export const PROTOCOL_VERSION = 1;

/** JSON values, as carried in `data`. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A request id chosen by the client; echoed in the reply. */
export type RequestId = number | string;

/** A publication as delivered to subscribers. `type` is omitted for the default type `message`. */
export interface Message {
  readonly channel: Channel;
  readonly position: Position;
  readonly type?: string;
  readonly data: Json;
  /**
   * Present (true) on publications of ephemeral namespaces: they keep no history, so a client
   * delivers them as they come and never waits for a missed seq.
   */
  readonly ephemeral?: true;
}

/** What a publisher sends: the HTTP publish API body and the WebSocket `publish` frame's `message`. */
export interface PublishRequest {
  readonly channel: Channel;
  readonly data: Json;
  readonly type?: string;
  readonly idempotencyKey?: string;
}

/** The reply to a publish: where it landed, and whether an earlier publish with the same key already did. */
export interface PublishResult {
  readonly channel: Channel;
  readonly position: Position;
  readonly duplicate: boolean;
}

/** Why a client lost messages it could not get back. */
export type GapReason = 'trimmed' | 'expired' | 'epoch';

/**
 * An explicit discontinuity: publications after `from` up to and including `to` are lost to the
 * client (`from` is the client's last position). Delivery continues after `to`.
 */
export interface Gap {
  readonly channel: Channel;
  readonly from: Position;
  readonly to: Position;
  readonly reason: GapReason;
}

/**
 * One client present in a channel (namespaces with `presence: true`), as every transport and the
 * presence endpoints show it. `info` is the public data the server's authentication hook gave the
 * client (omitted when there is none).
 */
export interface PresenceClient {
  /** The client's session id, unique across the cluster. */
  readonly client: string;
  readonly user: string;
  readonly info?: Json;
  /** The gateway node the client is connected to. */
  readonly node: string;
}

/** Who is present in a channel: the `presence` reply's result and the presence endpoints' body. */
export interface PresenceResult {
  readonly channel: Channel;
  readonly clients: PresenceClient[];
}

/** A client joined or left a channel: the `join` / `leave` frame without its type, and the data of the SSE `tidings:join` / `tidings:leave` events. */
export interface PresenceChange {
  readonly channel: Channel;
  readonly client: PresenceClient;
}

/** The wire shape of an error. */
export interface ErrorBody {
  readonly code: ErrorCode;
  readonly reason: string;
  /**
   * The channel a refusal is about: on SSE and long polling one refused channel refuses the whole
   * request, and this tells the client which subscription to end.
   */
  readonly channel?: string;
}

// Client -> server

export interface SubscribeFrame {
  readonly type: 'subscribe';
  readonly id?: RequestId;
  readonly channel: Channel;
  /** Resume: deliver what came after this position, or a gap. */
  readonly since?: Position;
}
export interface UnsubscribeFrame {
  readonly type: 'unsubscribe';
  readonly id?: RequestId;
  readonly channel: Channel;
}
export interface PublishFrame {
  readonly type: 'publish';
  readonly id?: RequestId;
  readonly message: PublishRequest;
}
export interface RpcFrame {
  readonly type: 'rpc';
  readonly id: RequestId;
  readonly method: string;
  readonly data?: Json;
}
export interface PingFrame {
  readonly type: 'ping';
  readonly id?: RequestId;
}
/** Who is present in a channel (allowed to clients that may subscribe to it); answered with a {@link PresenceResult}. */
export interface PresenceFrame {
  readonly type: 'presence';
  readonly id: RequestId;
  readonly channel: Channel;
}
/** A new token for this connection (token refresh); answered with `{ expiresAt }` (ms, or null). */
export interface RefreshFrame {
  readonly type: 'refresh';
  readonly id?: RequestId;
  readonly token: string;
}
export type ClientFrame = SubscribeFrame | UnsubscribeFrame | PublishFrame | RpcFrame | PingFrame | PresenceFrame | RefreshFrame;

// Server -> client

export interface WelcomeFrame {
  readonly type: 'welcome';
  readonly version: number;
  readonly session: string;
  /** Server ping interval in ms: a client that hears nothing for about twice this may reconnect. */
  readonly heartbeat: number;
}
export interface SubscribeResult {
  readonly channel: Channel;
  /** The channel's latest position when the subscription started. */
  readonly position: Position;
  /** True when `since` was given and every missed publication follows. */
  readonly recovered: boolean;
}
export interface ReplyFrame {
  readonly type: 'reply';
  readonly id: RequestId;
  readonly result: Json | SubscribeResult | PublishResult | PresenceResult;
}
export interface MessageFrame {
  readonly type: 'message';
  readonly message: Message;
}
export interface GapFrame {
  readonly type: 'gap';
  readonly gap: Gap;
}
export interface ErrorFrame {
  readonly type: 'error';
  readonly id?: RequestId;
  readonly error: ErrorBody;
}
export interface PongFrame {
  readonly type: 'pong';
  readonly id?: RequestId;
}
/** A client joined a channel this connection subscribes to (presence namespaces). */
export interface JoinFrame extends PresenceChange {
  readonly type: 'join';
}
/** A client left a channel this connection subscribes to (unsubscribed, disconnected, or its node stopped refreshing it). */
export interface LeaveFrame extends PresenceChange {
  readonly type: 'leave';
}
/** The connection's token expires at `expiresAt` (ms since the epoch): refresh it before, or the connection is closed (4403). */
export interface ExpiringFrame {
  readonly type: 'expiring';
  readonly expiresAt: number;
}
/** Sent every heartbeat interval: browsers cannot see WebSocket pings, so clients watch for this. */
export interface HeartbeatFrame {
  readonly type: 'heartbeat';
}
export type ServerFrame = WelcomeFrame | ReplyFrame | MessageFrame | GapFrame | ErrorFrame | PongFrame | HeartbeatFrame | JoinFrame | LeaveFrame | ExpiringFrame;

/** A long-poll response. `gaps` for a channel precede its `messages`. */
export interface PollResponse {
  readonly messages: Message[];
  readonly gaps: Gap[];
  readonly cursor: string;
}

/** SSE event names for control events; `:` never appears in a message type, so they cannot collide. */
export const SseEvent = {
  gap: 'tidings:gap',
  error: 'tidings:error',
  welcome: 'tidings:welcome',
  /** The stream's token expires soon; data is `{ expiresAt }`: refresh it with `POST /refresh`. */
  expiring: 'tidings:expiring',
  /** A client joined (presence namespaces); data is a {@link PresenceChange}; carries no `id:`. */
  join: 'tidings:join',
  /** A client left (presence namespaces); data is a {@link PresenceChange}; carries no `id:`. */
  leave: 'tidings:leave',
} as const;
