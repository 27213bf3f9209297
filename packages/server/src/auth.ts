/**
 * The authentication hook. The gateway asks it who a connecting client is and whether that client
 * may subscribe to or publish in a channel. The default lets anyone connect and subscribe; client
 * publishing is still gated by each namespace's `clientPublish`. Token checks plug in here.
 * @module
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Channel, Json } from '@tidings/protocol';

/** How a client reached the gateway. */
export type TransportName = 'websocket' | 'sse' | 'poll' | 'http';

/** What a token allows: channel matchers for subscribing and publishing. */
export interface Grants {
  readonly subscribe: (channel: Channel) => boolean;
  readonly publish: (channel: Channel) => boolean;
}

/** Who a client is. */
export interface Identity {
  readonly user: string;
  readonly anonymous: boolean;
  /**
   * Public data about the client (a display name, an avatar), shown to everyone who may see the
   * presence of a channel it subscribes to. Never put secrets here.
   */
  readonly info?: Json;
  /** What the client's token grants (JWT authentication). */
  readonly grants?: Grants;
  /** When the client's credentials expire (ms since the epoch): the connection must refresh them before. */
  readonly expiresAt?: number;
  /**
   * A server connection: a WebSocket opened with the API key (`Authorization: Bearer <api key>`). It
   * publishes as the server API does (any configured namespace, no client rate limits) and may
   * subscribe to any channel.
   */
  readonly server?: true;
}

/** What the hook sees of a connection attempt. */
export interface ConnectInfo {
  readonly transport: TransportName;
  readonly headers: IncomingHttpHeaders;
  readonly url: URL;
  /**
   * The socket's peer address (not `X-Forwarded-For`). Looked up when read: a getter, so a copy made
   * by spreading (`{ ...info }`) leaves it out; `JSON.stringify(info)` (a logger) includes it.
   */
  readonly remoteAddress: string | undefined;
}

/** Decides identity and per-channel permissions. Throw a `TidingsError('unauthorized', ...)` to refuse. */
export interface Authenticator {
  /** The identity of a connection attempt: at once when it needs nothing to wait for (no promise then costs the request anything), or later. */
  connect(info: ConnectInfo): Identity | Promise<Identity>;
  /** Checks a new token for a connected client (token refresh); absent: refresh is refused. */
  refresh?(identity: Identity, token: string): Promise<Identity>;
  canSubscribe(identity: Identity, channel: Channel): boolean;
  canPublish(identity: Identity, channel: Channel): boolean;
}

const ANONYMOUS: Identity = Object.freeze({ user: '', anonymous: true });

/** Everyone is anonymous and allowed; namespaces still decide who may publish. */
export const openAuth: Authenticator = {
  connect: () => ANONYMOUS,
  canSubscribe: () => true,
  canPublish: () => true,
};
