/**
 * The client transport contract. A transport carries one connection attempt: it opens, keeps the
 * server's view of the subscriptions in step with `sync`, reports what arrives, and ends exactly
 * once through `handlers.close` with how the client should retry.
 * @module
 */
import type {
  Channel,
  ErrorBody,
  ErrorCode,
  Gap,
  Json,
  Message,
  Position,
  PresenceChange,
  PresenceResult,
  PublishRequest,
  PublishResult,
  SubscribeResult,
} from '@tidings/protocol';
import { CloseCode, TidingsError, type CloseName } from '@tidings/protocol';
import type { RetryKind, TransportName } from '../state.js';

/** Errors made for a connection that went away, as opposed to the server's own coded answers. */
const LOST = new WeakSet<TidingsError>();

/**
 * `unavailable` because the connection is gone (closed, not open, a network failure, no answer a
 * server of ours would give): the client reconnects and sends again. A server's own `unavailable`
 * answer is not one: the connection works, and what was refused is asked again on it later.
 */
export function connectionLost(reason: string): TidingsError {
  const err = new TidingsError('unavailable', reason);
  LOST.add(err);
  return err;
}

/** Whether `err` says the connection went away (see {@link connectionLost}). */
export const isConnectionLost = (err: TidingsError): boolean => LOST.has(err);

const CLOSE_BY_NUMBER = new Map<number, (typeof CloseCode)[CloseName]>(Object.values(CloseCode).map((c) => [c.code, c]));

/**
 * How to come back after the server ended a connection with a close code: a WebSocket close code
 * (4401) or the name an SSE stream's `tidings:error` carries (`unauthorized`). One table for both
 * (`CloseCode`), so a final code is final on every transport: `never` for credentials refused or the
 * protocol rejected, `now` for a restart or an expired token, `backoff` for the rest and for codes
 * it does not know. A normal close (1000) is not a reason to stay away: backoff.
 */
export function retryAfterClose(code: number | string): RetryKind | 'never' {
  const known = typeof code === 'number' ? CLOSE_BY_NUMBER.get(code) : Object.hasOwn(CloseCode, code) ? CloseCode[code as CloseName] : undefined;
  if (known === undefined || known === CloseCode.normal) return 'backoff';
  return !known.reconnect ? 'never' : known.immediate ? 'now' : 'backoff';
}

/** Whether the server named a close code this client knows (a WebSocket close code, or an SSE error's name). */
export function isKnownClose(code: number): boolean {
  return CLOSE_BY_NUMBER.has(code);
}

/** How a connection ended. */
export interface CloseInfo {
  /** `never`: credentials were refused or the peer rejected the protocol; do not reconnect. */
  readonly retry: RetryKind | 'never';
  readonly reason: string;
  /** The transport never worked here (blocked, stripped or buffered by a proxy): try the next one. */
  readonly fallback: boolean;
  /**
   * It failed before proving itself, in a way that cannot tell a blocked transport from a server
   * that is down (a WebSocket closed before its welcome is close 1006 either way). The client then
   * falls back only if the server answers plain HTTP; otherwise it is an outage, retried with backoff.
   */
  readonly unproven?: boolean;
  /** It ended because no answer came in time (not refused, reset or closed). */
  readonly timedOut?: boolean;
  /** With `never`: the code the server refused with, when it is not `unauthorized` (a malformed request, a forbidden origin). */
  readonly code?: ErrorCode;
  /** A retry delay the server suggested, in ms (SSE `retry:`, HTTP `Retry-After`). */
  readonly retryAfter?: number | undefined;
}

export interface TransportHandlers {
  open(): void;
  subscribed(result: SubscribeResult): void;
  message(message: Message): void;
  gap(gap: Gap): void;
  /** A client joined or left a subscribed channel of a presence namespace (WebSocket and SSE; long polling carries none). */
  presence(kind: 'join' | 'leave', change: PresenceChange): void;
  /** The connection's token expires at `expiresAt` (ms since the epoch): refresh it before then. */
  expiring(expiresAt: number): void;
  /** A subscription failed on the server (bad channel, forbidden, ...). */
  subscriptionError(channel: Channel, error: ErrorBody): void;
  close(info: CloseInfo): void;
}

/** Platform pieces, injected so the client runs in browsers and Node alike. */
export interface Platform {
  readonly WebSocket: WebSocketConstructor | undefined;
  readonly fetch: typeof fetch;
  readonly setTimeout: (fn: () => void, ms: number) => unknown;
  readonly clearTimeout: (handle: unknown) => void;
}

/** The subset of the WHATWG WebSocket this client uses (the `ws` package provides it too). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** What a transport needs to start. */
export interface TransportContext {
  /** `http(s)://host[:port]` without a trailing slash. */
  readonly baseUrl: string;
  /** The current token; a refresh replaces it, and every later HTTP request carries the new one. */
  token: string | undefined;
  /** Channel to the position to resume from (undefined: from now). */
  readonly subscriptions: ReadonlyMap<Channel, Position | undefined>;
  readonly platform: Platform;
  readonly handlers: TransportHandlers;
  /** How long to wait for the connection to prove itself before falling back. */
  readonly openTimeout: number;
  /** Extra silence tolerated beyond twice the server's heartbeat before the connection counts as dead. */
  readonly heartbeatSlack: number;
  /** How long a long poll may be held by the server, in ms. */
  readonly pollTimeout: number;
}

export interface ClientTransport {
  readonly name: TransportName;
  /** The wanted subscriptions changed; positions are where to resume from. */
  sync(subscriptions: ReadonlyMap<Channel, Position | undefined>): void;
  /** `signal`: the client let go of it (closed): the transport forgets it (aborts its request). */
  publish(req: PublishRequest, signal?: AbortSignal): Promise<PublishResult>;
  /** `signal`: the caller gave up (its timeout): the transport forgets the request. */
  request(method: string, data: Json | undefined, signal?: AbortSignal): Promise<Json>;
  /** Who is present in `channel` (a `presence` frame, or `GET /presence`). */
  presence(channel: Channel, signal?: AbortSignal): Promise<PresenceResult>;
  /**
   * Hands the connection a new token without reconnecting (a `refresh` frame, `POST /refresh` for an
   * SSE stream; long polls simply carry it from now on). Rejects if the server refused it.
   */
  refresh(token: string): Promise<void>;
  /** Ends the connection without calling `handlers.close`. */
  close(): void;
  /** Requests sent that wait for their reply (for leak checks); absent when it keeps none. */
  readonly awaiting?: number;
}

export type TransportFactory = (ctx: TransportContext) => ClientTransport;
