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
export type GapReason = 'trimmed' | 'expired' | 'epoch' | 'ephemeral';

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
export type ClientFrame = SubscribeFrame | UnsubscribeFrame | PublishFrame | RpcFrame | PingFrame;

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
  readonly result: Json | SubscribeResult | PublishResult;
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
/** Sent every heartbeat interval: browsers cannot see WebSocket pings, so clients watch for this. */
export interface HeartbeatFrame {
  readonly type: 'heartbeat';
}
export type ServerFrame = WelcomeFrame | ReplyFrame | MessageFrame | GapFrame | ErrorFrame | PongFrame | HeartbeatFrame;

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
} as const;
