/**
 * WebSocket transport: completes admitted upgrades, turns each into a {@link DuplexSink} plus a
 * stream of inbound frames for the core, and sweeps liveness. Every outbound byte (publications,
 * replies, errors, gaps, presence, heartbeats) is framed here and goes through the connection's one bounded
 * {@link Outbox}; `ws` parses inbound frames and runs the close handshake and pings. Nothing here
 * knows about sessions, the hub or brokers.
 * @module
 */
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import {
  CloseCode,
  encodeSubscribeReply,
  encodeWelcome,
  jsonCodec,
  type CloseName,
  type Gap,
  type RequestId,
  type ServerFrame,
  type SubscribeResult,
  type TidingsError,
} from '@tidings/protocol';
import WebSocket, { WebSocketServer } from 'ws';
import type { Admitted, HttpRequest, Route } from '../admission.js';
import type { Identity } from '../auth.js';
import { Beats } from '../beats.js';
import type { EncodedPresence, EncodedPublication } from '../encoded.js';
import { closeReason, frameText } from '../framing.js';
import { lingerAndClose } from '../http/linger.js';
import { streamParams, type StreamParams } from '../http/params.js';
import type { Query } from '../http/target.js';
import { Outbox } from '../outbox.js';
import { RetryLater } from '../limits.js';
import { refusedHandshake } from '../http/ws-refusal.js';
import { SLOW_CONSUMER, type Connector, type DuplexAttachment, type DuplexSink } from '../sink.js';

export interface WebSocketOptions {
  readonly maxPayload: number;
  /** Bytes a connection may have waiting before it is shed as a slow consumer. */
  readonly maxBufferedBytes: number;
  /** Heartbeat interval, announced in `welcome`. */
  readonly pingInterval: number;
  /** How long a closing connection may take to finish the close handshake before it is cut. */
  readonly closeGrace: number;
}

/**
 * A heartbeat: a protocol ping (the peer's pong proves it alive) and a `heartbeat` frame (the liveness
 * signal a browser can see, as browsers hide pings), framed once for every connection and written as
 * one buffer.
 */
const HEARTBEAT = Buffer.concat([Buffer.from([0x89, 0x00]), frameText('{"type":"heartbeat"}')]);

function destroySocket(this: Duplex): void {
  this.destroy();
}

const ignore = (): void => undefined;

/**
 * An upgrade request as `ws` takes it. It reads the method, the headers and the socket (and the URL
 * for a server with a path, which this one is not), which a request the fast lane read has as
 * Node's has.
 */
const forWs = (req: HttpRequest): IncomingMessage => req as IncomingMessage;

/**
 * The `ws` socket of a gateway connection. It holds its connection, so the listeners every
 * connection shares (module-level functions that take the socket as `this`) find what they need:
 * listeners made per connection would cost each one a function and a scope for as long as it lives.
 */
class GatewaySocket extends WebSocket {
  conn: WebSocketConnection | undefined = undefined;
}

/** A pong (or any inbound frame) proves the peer alive. */
function onPong(this: WebSocket): void {
  const conn = (this as GatewaySocket).conn;
  if (conn !== undefined) conn.alive = true;
}

function onMessage(this: WebSocket, data: Buffer, isBinary: boolean): void {
  const conn = (this as GatewaySocket).conn;
  const session = conn?.owner;
  if (conn === undefined || session === undefined) return;
  conn.alive = true;
  if (isBinary) session.receiveBinary();
  else session.receive(data.toString('utf8'));
}

export class WebSocketConnection implements DuplexSink {
  /** Set by a pong or any inbound frame; cleared by each heartbeat sweep. */
  alive = true;
  readonly #out: Outbox;
  #cut: NodeJS.Timeout | undefined;

  constructor(
    readonly ws: WebSocket,
    socket: Socket,
    private readonly opts: WebSocketOptions,
  ) {
    this.#out = new Outbox(socket, true);
  }

  get open(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  get bufferedBytes(): number {
    return this.#out.backlog;
  }

  whenDrained(listener: () => void): void {
    if (this.open) this.#out.whenDrained(listener);
  }

  /** The session this connection carries (set once it is open). */
  owner: DuplexAttachment | undefined;

  /** Over the bound outside the publication path: the session closes, leaving its channels at once. */
  #shed(): void {
    if (this.owner !== undefined) this.owner.close('slow_consumer', SLOW_CONSUMER);
    else this.close('slow_consumer', SLOW_CONSUMER);
  }

  /** Any frame other than a publication: counts against the bound like everything else. */
  frame(frame: ServerFrame): void {
    this.#write(frameText(jsonCodec.encodeServer(frame)));
  }

  subscribed(result: SubscribeResult, id: RequestId | undefined): void {
    if (id !== undefined) this.#write(frameText(encodeSubscribeReply(id, result)));
  }

  /** The connection's first frame: its session id and the heartbeat interval. */
  welcome(session: string): void {
    this.#write(frameText(encodeWelcome(session, this.opts.pingInterval)));
  }

  /** Hot path: the session checked the bound (and applied the namespace's backpressure policy). */
  message(enc: EncodedPublication): void {
    if (this.ws.readyState === WebSocket.OPEN) this.#out.write(enc.wsFrame);
  }

  gap(gap: Gap): void {
    this.frame({ type: 'gap', gap });
  }

  expiring(expiresAt: number): void {
    this.frame({ type: 'expiring', expiresAt });
  }

  /** A `join` / `leave` frame, shared bytes (the session checked the bound; it sheds these first). */
  presence(enc: EncodedPresence): void {
    if (this.ws.readyState === WebSocket.OPEN) this.#out.write(enc.wsFrame);
  }

  /**
   * Heartbeat sweep: terminates a peer that missed the last ping; pings the rest and sends them a
   * heartbeat frame, the liveness signal a browser client can see.
   */
  heartbeat(): void {
    // While this side stops reading (requests in flight at their bound), the peer's pongs wait unread:
    // their absence says nothing of the peer, which is judged again from a full interval once reading resumes.
    if (!this.alive && !this.ws.isPaused) {
      this.close('heartbeat_timeout', 'no pong within the heartbeat interval');
      return;
    }
    this.alive = false;
    if (this.open) this.#write(HEARTBEAT);
  }

  /**
   * Closes with a named code. What waits in the outbox is dropped first, so the close frame follows
   * only what the socket already holds and a slow reader still learns why; a peer that does not
   * finish the handshake within the grace period is cut.
   */
  close(name: CloseName, reason: string): void {
    if (name === 'heartbeat_timeout') {
      this.terminate();
      return;
    }
    this.#out.close();
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) {
      this.ws.close(CloseCode[name].code, closeReason(reason));
      this.#cut ??= setTimeout(() => this.ws.terminate(), this.opts.closeGrace).unref();
    }
  }

  pause(): void {
    if (this.open) this.ws.pause();
  }

  resume(): void {
    this.alive = true;
    if (this.open) this.ws.resume();
  }

  /** Cuts the connection now (shutdown deadline, a dead peer): nothing more is written to it. */
  terminate(): void {
    this.#out.discard();
    this.ws.terminate();
  }

  /** @internal The socket is gone. */
  released(): void {
    clearTimeout(this.#cut);
    this.#out.close();
  }

  #write(bytes: Buffer): void {
    if (!this.open) return;
    if (this.#out.backlog > this.opts.maxBufferedBytes) {
      this.#shed();
      return;
    }
    this.#out.write(bytes);
  }
}

/** The id of the reply (or error) to a subscription named in the connect request. */
export const connectSubscribeId = (channel: string): string => `subscribe:${channel}`;

/**
 * Subscriptions named in the connect request (`/ws?channel=news&channel=chat:1&cursor=...`, as on
 * SSE and long polling), saving a round trip: each is carried out as a `subscribe` request whose
 * reply or error has the id `subscribe:<channel>`. Malformed parameters are one `error` frame.
 */
function subscribeAtConnect(query: Query, session: DuplexAttachment): void {
  if (!query.has('channel')) return;
  let params: StreamParams;
  try {
    params = streamParams(query, query.get('cursor') ?? undefined);
  } catch (err) {
    session.refuse(err);
    return;
  }
  for (const channel of params.channels) session.request({ type: 'subscribe', id: connectSubscribeId(channel), channel, since: params.cursor.get(channel) });
}

const heartbeat = (conn: WebSocketConnection): void => conn.heartbeat();

export class WebSocketTransport {
  readonly #wss: WebSocketServer;
  /** Open connections, each with its heartbeat one `pingInterval` after the last. */
  readonly #conns: Beats<WebSocketConnection>;
  readonly #closedWaiters: Array<() => void> = [];

  constructor(
    private readonly opts: WebSocketOptions,
    private readonly connector: Connector,
    private readonly onError: (err: unknown) => void,
  ) {
    this.#conns = new Beats(opts.pingInterval, heartbeat);
    this.#wss = new WebSocketServer({
      noServer: true,
      maxPayload: opts.maxPayload,
      perMessageDeflate: false,
      clientTracking: false,
      WebSocket: GatewaySocket,
    });
    // One close listener for every connection of this transport.
    const closed = (conn: WebSocketConnection): void => this.#closed(conn);
    this.#onClose = function (this: WebSocket): void {
      const conn = (this as GatewaySocket).conn;
      if (conn !== undefined) closed(conn);
    };
  }

  readonly #onClose: (this: WebSocket) => void;

  #closed(conn: WebSocketConnection): void {
    this.#conns.delete(conn);
    conn.released();
    conn.owner?.detach();
    if (this.#conns.size === 0) for (const w of this.#closedWaiters.splice(0)) w();
  }

  /** Open connections. */
  get size(): number {
    return this.#conns.size;
  }

  /** The `/ws` route's upgrade handlers. */
  readonly route: NonNullable<Route['upgrade']> = {
    accept: (req, socket, head, admitted) => this.#accept(req, socket, head, admitted),
    // Browsers cannot read a refused upgrade's status, so complete the handshake and close with a
    // code that tells the client what to do: not retry with the same credentials, wait, or come back at once.
    refused: (req, socket, head, err: TidingsError) => {
      socket.on('error', destroySocket);
      // Overloaded: come back after the delay the reason names (the client adds jitter). Unavailable:
      // come back at once, to another node, when this one is draining; else with backoff (a broker or
      // an authentication hook that failed for now).
      const [code, reason] =
        err instanceof RetryLater
          ? [CloseCode.overloaded.code, `${err.message.slice(0, 80)}; retry after ${err.retryAfter} ms`]
          : err.code === 'unavailable'
            ? [this.connector.draining ? CloseCode.restart.code : CloseCode.unavailable.code, err.message]
            : [err.code === 'token_expired' ? CloseCode.token_expired.code : CloseCode.unauthorized.code, err.message];
      const answer = refusedHandshake(req, code, reason);
      if (answer !== undefined) {
        lingerAndClose(socket, answer);
        return;
      }
      // Not a handshake answered here: `ws` refuses it (400), or completes what it accepts.
      this.#wss.handleUpgrade(forWs(req), socket, head, (ws: WebSocket) => {
        ws.on('error', ignore);
        ws.close(code, closeReason(reason));
      });
    },
  };

  /** How often {@link heartbeat} must be called, in ms. */
  get heartbeatTick(): number {
    return this.#conns.tickMs;
  }

  /** Liveness: a heartbeat for every connection whose turn has come (call every {@link heartbeatTick}). */
  heartbeat(): void {
    this.#conns.tick();
  }

  /** Resolves once every connection has closed. */
  allClosed(): Promise<void> {
    if (this.#conns.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#closedWaiters.push(resolve));
  }

  /** Cuts every connection now. */
  terminateAll(): void {
    for (const conn of this.#conns) conn.terminate();
  }

  #accept(req: HttpRequest, socket: Duplex, head: Buffer, admitted: Admitted): void {
    // A module-level listener: a closure here would keep this request and its head alive for the
    // whole life of the connection.
    socket.on('error', destroySocket);
    // Corked until the connection's outbox first writes out: the handshake's answer, the welcome and
    // the replies to the subscriptions in the connect request leave in one write. (A handshake `ws`
    // refuses ends the socket, which uncorks it.)
    socket.cork();
    this.#wss.handleUpgrade(forWs(req), socket, head, (ws: WebSocket) => {
      const session = this.#open(ws as GatewaySocket, socket as Socket, admitted.identity);
      if (session !== undefined) subscribeAtConnect(admitted.target, session);
    });
  }

  /** The connection's life: its listeners are shared by every connection and find it through the socket. */
  #open(ws: GatewaySocket, socket: Socket, identity: Identity): DuplexAttachment | undefined {
    const conn = new WebSocketConnection(ws, socket, this.opts);
    let session: DuplexAttachment;
    try {
      session = this.connector.openDuplex(conn, identity);
      conn.owner = session;
    } catch (err) {
      this.onError(err);
      ws.terminate();
      return undefined;
    }
    ws.conn = conn;
    this.#conns.add(conn);
    ws.on('message', onMessage);
    ws.on('pong', onPong);
    ws.on('error', ignore);
    ws.on('close', this.#onClose);
    conn.welcome(session.id);
    return session;
  }
}
