/**
 * The one gate every request and connection passes, whatever the transport: it parses the request
 * target without trusting it, finds the route, checks the method, refuses new streams while
 * draining, checks declared body sizes before reading a byte, authenticates (a client's credentials,
 * or the server API key), applies CORS, and answers every refusal with a coded error. Handlers run
 * only for admitted requests and get what admission learned.
 * @module
 */
import { STATUS_CODES, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { SseEvent, TidingsError } from '@tidings/protocol';
import type { Authenticator, ConnectInfo, Identity, TransportName } from './auth.js';
import { addressKey } from './http/address-key.js';
import { checkApiKey, hasApiKey } from './http/api-key.js';
import { errorBody, NO_HEADERS, sendError } from './http/respond.js';
import { lingerWhenClosed } from './http/linger.js';
import { Target } from './http/target.js';
import { RetryLater, type ConnectionGate, type GateSlot, type Slot } from './limits.js';
import type { OriginPolicy } from './origin.js';
import type { UserConnections } from './user-connections.js';

/** Who may call a route: anyone, connected clients (the authentication hook decides), or the server API (API key). */
export type Access = 'public' | 'client' | 'api';

/** What admission learned about a request. */
export interface Admitted {
  /** The request target: its path, its query, and as a `URL` when asked. */
  readonly target: Target;
  readonly identity: Identity;
  /**
   * The CORS headers of a stream route's answer, for its handler to send with its own head: set
   * with `setHeader` they would stay in the response's header store for the life of the stream.
   * Other routes get them set on the response before the handler runs.
   */
  readonly cors: Readonly<Record<string, string>>;
  /**
   * A client connection's slot on this node. On a route that leaves the connect rate to its handler
   * (`connection.charged: 'handler'`), the handler charges it before it starts a session's work.
   */
  readonly slot?: GateSlot | undefined;
}

/** What admission reads of a request: Node's `IncomingMessage` has it, and so has a fast-lane request. */
export interface HttpRequest {
  readonly method?: string | undefined;
  readonly url?: string | undefined;
  readonly headers: IncomingHttpHeaders;
  readonly socket: Socket;
  readonly complete: boolean;
  /** The whole body, when it was read before the request was admitted (a fast-lane POST); Node's requests stream theirs. */
  readonly body?: Buffer | undefined;
}

/** What admission, the error replies and the poll and SSE routes do with a response: Node's `ServerResponse`, or a fast-lane one. */
export interface HttpResponse {
  readonly headersSent: boolean;
  readonly destroyed: boolean;
  readonly writableEnded: boolean;
  readonly socket: Socket | null;
  setHeader(name: string, value: string | number): unknown;
  writeHead(status: number, headers?: OutgoingHttpHeaders): this;
  end(body?: string | Buffer): this;
  /** Sends the head now; the body follows (a stream). */
  flushHeaders(): void;
  /** Listeners are called on the response. */
  on(event: 'close', listener: (this: HttpResponse) => void): this;
  destroy(): this;
}

/**
 * A response that carries what it serves (an SSE stream, a held poll): the gateway's `ServerResponse`
 * and a fast-lane one both do, so that a close listener shared by every response finds it there.
 */
export type Carrier = HttpResponse & { stream: unknown };

type Handler<Q, S> = (req: Q, res: S, admitted: Admitted) => void | Promise<void>;
export type HttpHandler = Handler<IncomingMessage, ServerResponse>;
/** A route's GET or POST when the fast lane may serve it too: it sees only what both kinds of request have. */
export type LaneHandler = Handler<HttpRequest, HttpResponse>;
/** A WebSocket upgrade's handler: the request is Node's, or one the fast lane read. */
export type UpgradeHandler = (req: HttpRequest, socket: Duplex, head: Buffer, admitted: Admitted) => void;

export interface Route {
  readonly access: Access;
  /** How the authentication hook sees requests here. */
  readonly transport: TransportName;
  readonly GET?: HttpHandler;
  readonly POST?: HttpHandler;
  /** The GET and POST served on the fast lane too (plain requests straight from the socket, see `http/lane.ts`). */
  readonly lane?: { readonly GET?: LaneHandler; readonly POST?: LaneHandler };
  /**
   * A client connection (WebSocket, SSE, long poll): it takes a connection slot (per node, per IP, and
   * per user when `perUser`), and a token of the connect rate on admission, or (`charged: 'handler'`)
   * when its handler says it starts a session's work.
   */
  readonly connection?: { readonly perUser: boolean; readonly charged?: 'handler' };
  /** A GET that opens a stream (SSE, a held poll): HEAD answers its headers without opening one, and it is refused while draining. */
  readonly stream?: { readonly contentType: string };
  /** WebSocket upgrades; `refused` answers an upgrade whose credentials were refused. */
  readonly upgrade?: { readonly accept: UpgradeHandler; readonly refused: (req: HttpRequest, socket: Duplex, head: Buffer, err: TidingsError) => void };
}

/** Path to route. */
export type RouteTable = ReadonlyMap<string, Route>;

export interface AdmissionOptions {
  readonly auth: Authenticator;
  readonly apiKey: string;
  readonly maxBody: number;
  /** Which browser origins may connect with credentials (CORS, WebSocket upgrades). */
  readonly origins: OriginPolicy;
  /** Connection caps and the connect rate of this node. */
  readonly gate: ConnectionGate;
  /** Connections per user across the cluster. */
  readonly users: UserConnections;
  /** Take the client's address from `X-Forwarded-For` (a proxy we run sets it). */
  readonly trustProxy: boolean;
  /** True while the gateway drains: new streams and upgrades are refused with 503. */
  readonly draining: () => boolean;
  /** A coded refusal (bad input, auth, limits): logged at a low level with its code. */
  readonly refused?: (code: string, context: Record<string, unknown>) => void;
  /** An error that is not a coded refusal: a bug. Log it with its context and count it. */
  readonly unexpected: (err: unknown, context: Record<string, unknown>) => void;
}

const API: Identity = Object.freeze({ user: '', anonymous: false });
/** A WebSocket opened with the API key: a backend's persistent connection. */
const SERVER: Identity = Object.freeze({ user: '', anonymous: false, server: true });
const PUBLIC: Identity = Object.freeze({ user: '', anonymous: true });

/**
 * The slots a client connection holds: the node's and its address's, and its user's. Two fields, not
 * an array, which grows to room for 17 on its first push and would stay that size for as long as the
 * connection lives.
 */
class HeldSlots {
  gate: GateSlot | undefined = undefined;
  user: Slot | undefined = undefined;
  /** The connection closed: a slot taken from now on is released at once. */
  closed = false;

  /** The connection closed: its slots go (again, nothing). */
  release(): void {
    this.closed = true;
    this.gate?.release();
    this.user?.release();
  }

  /**
   * Holds the user's slot, taken after the authentication hook answered: a client may have left while
   * it was being asked, and then the slot goes at once (its close came before there was one to release).
   */
  holdUser(slot: Slot): void {
    if (this.closed) slot.release();
    else this.user = slot;
  }
}

/**
 * A response that carries its connection's slots, for the close listener every such response shares:
 * the gateway's `ServerResponse` and a fast-lane one both do. A closure for each would cost a function
 * and its scope for as long as the stream or the held poll lives.
 */
export type SlotCarrier = HttpResponse & { slots: unknown };

/** The close listener of every client connection's response: its slots go. */
function releaseCarried(this: HttpResponse): void {
  const slots = (this as SlotCarrier).slots;
  if (slots instanceof HeldSlots) slots.release();
}

/** Slots for a client connection's response, released when it closes, however it ends. */
function carrySlots(res: HttpResponse): HeldSlots {
  const slots = new HeldSlots();
  (res as SlotCarrier).slots = slots;
  res.on('close', releaseCarried);
  return slots;
}

/**
 * Releases `slots` when an upgrade's socket closes (a socket carries nothing of ours: a property added
 * to it would grow its storage for its life). Built here, not where the upgrade is admitted: a closure
 * there would share that scope, and keep the request, its URL and its upgrade head alive as long as
 * the connection lives.
 */
function releaseOnClose(socket: Duplex, slots: HeldSlots): void {
  // `on`, not `once`, which wraps the listener in two more objects: 'close' comes once anyway, and
  // releasing is idempotent.
  socket.on('close', () => slots.release());
}

/** An error on a socket: its 'close' follows, and whoever owns the socket cleans up there. */
function closeFollows(): void {
  // Nothing to do.
}

/**
 * What the authentication hook sees. A class, with the URL and the address behind getters on its
 * prototype: an object literal with a getter costs about as much to make as the rest of a poll's
 * admission. Each is made or looked up only if the hook asks: the URL is parsed then, and Node keeps
 * a socket's looked-up address (an object and a string) for as long as the connection lives.
 * `toJSON` gives all four, for a hook that logs it.
 */
class ConnectRequest implements ConnectInfo {
  readonly #target: Target;
  readonly #socket: Socket;

  constructor(
    readonly transport: ConnectInfo['transport'],
    readonly headers: IncomingHttpHeaders,
    target: Target,
    socket: Socket,
  ) {
    this.#target = target;
    this.#socket = socket;
  }

  get url(): URL {
    return this.#target.url;
  }

  get remoteAddress(): string | undefined {
    return this.#socket.remoteAddress;
  }

  toJSON(): ConnectInfo {
    return { transport: this.transport, headers: this.headers, url: this.url, remoteAddress: this.remoteAddress };
  }
}

/** An HTTP response written straight to a socket (for upgrades that are refused before any HTTP response object exists). */
export function refuseOnSocket(socket: Duplex, err: TidingsError): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const body = JSON.stringify({ error: errorBody(err) });
  const retry = err.status === 503 || err.status === 429 ? `retry-after: ${retryAfterSeconds(err)}\r\n` : '';
  socket.end(
    `HTTP/1.1 ${err.status} ${STATUS_CODES[err.status] ?? 'Error'}\r\ncontent-type: application/json; charset=utf-8\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\n${retry}connection: close\r\n\r\n${body}`,
  );
}

/** Whether an identity is still to come (an authenticator may answer at once, or later). */
function isPromise(identity: Identity | Promise<Identity>): identity is Promise<Identity> {
  return typeof (identity as { then?: unknown }).then === 'function';
}

function setHeaders(res: HttpResponse, headers: Readonly<Record<string, string>>): void {
  for (const name in headers) res.setHeader(name, headers[name] as string);
}

const isEventStream = (contentType: string): boolean => contentType.startsWith('text/event-stream');

/** Whole seconds for a `Retry-After` header: the refusal's own hint, else 1. */
export function retryAfterSeconds(err: TidingsError): number {
  return err instanceof RetryLater ? Math.max(1, Math.ceil(err.retryAfter / 1000)) : 1;
}

/**
 * The client's address as per-address limits count it ({@link addressKey}: an IPv6 client by its
 * /64): the socket's, or behind a trusted proxy the last `X-Forwarded-For` entry.
 */
export function clientAddress(req: HttpRequest, trustProxy: boolean): string {
  if (trustProxy) {
    const header = req.headers['x-forwarded-for'];
    const list = (Array.isArray(header) ? header.join(',') : (header ?? '')).split(',');
    const last = list[list.length - 1]?.trim();
    if (last !== undefined && last !== '') return addressKey(last.slice(0, 64));
  }
  return addressKey(req.socket.remoteAddress ?? '');
}

/**
 * Whether part of the request's body may still be on its way: not all of it was read, and it has
 * one (a request without a length or chunked encoding has none, whether or not Node has marked it
 * complete yet when it is refused).
 */
function bodyPending(req: HttpRequest): boolean {
  if (req.complete) return false;
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/** The handler of a request Node's server parsed. */
const nodeHandler = (route: Route, method: string | undefined): HttpHandler | undefined => (method === 'GET' ? route.GET : method === 'POST' ? route.POST : undefined);
/** The handler of a request the fast lane read (a GET or a POST). */
const laneHandler = (route: Route, method: string | undefined): LaneHandler | undefined => (method === 'GET' ? route.lane?.GET : method === 'POST' ? route.lane?.POST : undefined);

export class Admission {
  constructor(
    private readonly routes: RouteTable,
    private readonly opts: AdmissionOptions,
  ) {}

  /** Admits a plain HTTP request and runs its handler; every refusal is a coded JSON error. */
  request(req: IncomingMessage, res: ServerResponse): Promise<void> | undefined {
    return this.#request(req, res, nodeHandler);
  }

  /** Admits a request the fast lane read, for a route with a lane handler, as {@link request} does. */
  lane(req: HttpRequest, res: HttpResponse): Promise<void> | undefined {
    return this.#request(req, res, laneHandler);
  }

  /**
   * Synchronous as far as it can be: a request whose identity is known at once (public and API
   * routes, anonymous clients) and whose handler answers at once (a parked poll) costs no promise.
   * Resolves (never rejects) once the handler is done, when anything was left to wait for.
   */
  #request<Q extends HttpRequest, S extends HttpResponse>(req: Q, res: S, handlerOf: (route: Route, method: string | undefined) => Handler<Q, S> | undefined): Promise<void> | undefined {
    let route: Route | undefined;
    let path = '?';
    let cors = NO_HEADERS;
    try {
      const target = Target.of(req.url);
      path = target.pathname;
      route = this.routes.get(path);
      if (route === undefined) throw new TidingsError('not_found', `no route ${path.slice(0, 100)}`);
      if (route.access === 'client') {
        if (req.method === 'OPTIONS') {
          res.writeHead(204, this.opts.origins.preflight(req.headers)).end();
          return;
        }
        cors = this.opts.origins.cors(req.headers);
        if (route.stream === undefined) setHeaders(res, cors);
      }
      const method = req.method === 'HEAD' ? 'GET' : req.method;
      const handler = handlerOf(route, method);
      if (handler === undefined) {
        const allow = [route.GET && 'GET, HEAD', route.POST && 'POST', route.upgrade && 'GET (WebSocket upgrade)'].filter(Boolean).join(', ');
        if (route.upgrade !== undefined && method === 'GET') {
          throw new TidingsError('bad_request', 'this endpoint needs a WebSocket upgrade');
        }
        res.setHeader('allow', allow);
        throw new TidingsError('method_not_allowed', `${(req.method ?? '?').slice(0, 16)} is not allowed here; use ${allow}`);
      }
      if (route.stream !== undefined) {
        if (this.opts.draining()) throw new TidingsError('unavailable', 'server shutting down');
        if (req.method === 'HEAD') {
          res.writeHead(200, { ...cors, 'content-type': route.stream.contentType, 'cache-control': 'no-store' }).end();
          return;
        }
      }
      const declared = Number(req.headers['content-length'] ?? 0);
      if (declared > this.opts.maxBody) throw new TidingsError('too_large', `the body is larger than ${this.opts.maxBody} bytes`);
      let slots: HeldSlots | undefined;
      if (route.connection !== undefined && method === 'GET') {
        slots = carrySlots(res);
        slots.gate = this.#admit(req, route.connection.charged !== 'handler');
      }
      const identity = this.#identify(route, req, target);
      const perUser = slots !== undefined && route.connection?.perUser === true ? slots : undefined;
      if (isPromise(identity) || perUser !== undefined) return this.#requestLater(req, res, handler, identity, slots, perUser !== undefined, target, route, cors, path);
      if (res.destroyed) return;
      const done = handler(req, res, { target, identity, cors, slot: slots?.gate });
      if (done !== undefined) return done.then(undefined, (err: unknown) => this.#failed(req, res, err, route, cors, path));
    } catch (err) {
      this.#failed(req, res, err, route, cors, path);
    }
    return undefined;
  }

  /** The rest of {@link #request} once the identity (and the user's connection slot) must be waited for. */
  async #requestLater<Q extends HttpRequest, S extends HttpResponse>(
    req: Q,
    res: S,
    handler: Handler<Q, S>,
    pending: Identity | Promise<Identity>,
    slots: HeldSlots | undefined,
    perUser: boolean,
    target: Target,
    route: Route,
    cors: Readonly<Record<string, string>>,
    path: string,
  ): Promise<void> {
    try {
      const identity = await pending;
      if (perUser && slots !== undefined) slots.holdUser(await this.opts.users.acquire(identity.user, identity.anonymous));
      if (res.destroyed) return;
      await handler(req, res, { target, identity, cors, slot: slots?.gate });
    } catch (err) {
      this.#failed(req, res, err, route, cors, path);
    }
  }

  /** Refuses a request that failed (before its answer, or as a stream's error event). */
  #failed(req: HttpRequest, res: HttpResponse, err: unknown, route: Route | undefined, cors: Readonly<Record<string, string>>, path: string): void {
    if (route?.stream !== undefined && !res.headersSent) setHeaders(res, cors);
    if (route?.stream !== undefined && isEventStream(route.stream.contentType) && this.#refuseAsStream(req, res, err)) {
      this.opts.refused?.((err as TidingsError).code, { method: req.method, path: path.slice(0, 100) });
      return;
    }
    this.#refuse(req, res, err, path);
  }

  /** A connection slot; the client's address is looked up only when limits apply per address. */
  #admit(req: HttpRequest, charged = true): GateSlot {
    const { gate, trustProxy } = this.opts;
    return gate.admit(gate.countsAddresses ? clientAddress(req, trustProxy) : undefined, charged);
  }

  /**
   * A plain EventSource gives up for good on an HTTP error, but reconnects after an event stream ends.
   * So a refusal of an SSE stream that only says "not now" (draining, the connect rate, a connection
   * cap, anything `unavailable`: a broker or history read that failed, an authorization hook that
   * failed or took too long) is a stream that says why (`tidings:error`) and when to come back
   * (`retry:`). Returns false for other refusals, which stay HTTP errors.
   */
  #refuseAsStream(req: HttpRequest, res: HttpResponse, err: unknown): boolean {
    const draining = this.opts.draining();
    if (!(err instanceof TidingsError) || !(draining || err instanceof RetryLater || err.code === 'unavailable') || res.headersSent || req.method !== 'GET') return false;
    // Draining: come back at once (another node will answer); otherwise when the refusal says, or
    // (unavailable) in one to two seconds, spread so that the streams a failure refused do not all
    // come back at once.
    const retry = draining ? 100 + Math.floor(Math.random() * 400) : err instanceof RetryLater ? err.retryAfter : 1000 + Math.floor(Math.random() * 1000);
    const code = draining ? 'restart' : err.code;
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache, no-transform', 'retry-after': String(retryAfterSeconds(err)) });
    res.end(`retry: ${retry}\n\nevent: ${SseEvent.error}\ndata: ${JSON.stringify({ code, reason: err.message })}\n\n`);
    return true;
  }

  /** Admits a WebSocket upgrade; refusals are HTTP responses on the socket, or (bad credentials) a close after the handshake. */
  upgrade(req: HttpRequest, socket: Duplex, head: Buffer): void {
    // Nothing else listens to the socket's errors until the upgrade is accepted, after the
    // authentication hook: a client that resets meanwhile must not raise an uncaught error.
    socket.on('error', closeFollows);
    let target: Target;
    let route: Route | undefined;
    try {
      target = Target.of(req.url);
      route = this.routes.get(target.pathname);
      if (route?.upgrade === undefined) throw new TidingsError('not_found', `no WebSocket endpoint at ${target.pathname.slice(0, 100)}`);
      if (this.opts.draining()) {
        // Told as open connections are (close 4000: come back at once), not with a 503 a browser
        // cannot read: a client would take that for a blocked WebSocket and fall back to SSE.
        this.#refuseUpgrade(route.upgrade, req, socket, head, new TidingsError('unavailable', 'server shutting down; reconnect'));
        return;
      }
      if (this.opts.origins.restricted && !this.opts.origins.allows(req.headers)) {
        throw new TidingsError('forbidden', `origin ${String(req.headers.origin).slice(0, 100)} is not allowed`);
      }
    } catch (err) {
      this.#refuseSocket(socket, err, req);
      return;
    }
    const { upgrade } = route;
    const slots = new HeldSlots();
    releaseOnClose(socket, slots);
    const admitted = async (): Promise<Identity> => {
      if (route.connection !== undefined) slots.gate = this.#admit(req);
      const identity = await this.#identify(route, req, target);
      if (route.connection?.perUser === true && identity.server !== true) slots.holdUser(await this.opts.users.acquire(identity.user, identity.anonymous));
      return identity;
    };
    admitted().then(
      (identity) => {
        if (socket.destroyed) return;
        upgrade.accept(req, socket, head, { target, identity, cors: NO_HEADERS });
      },
      (err: unknown) => {
        // Browsers cannot read a refused upgrade's status: these are told with a close code instead
        // (a client that cannot tell "not now" from a blocked WebSocket would fall back to SSE for good).
        const told = err instanceof RetryLater || (err instanceof TidingsError && (err.code === 'unauthorized' || err.code === 'token_expired' || err.code === 'unavailable'));
        if (told) this.#refuseUpgrade(upgrade, req, socket, head, err);
        else this.#refuseSocket(socket, err, req);
      },
    );
  }

  #identify(route: Route, req: HttpRequest, target: Target): Identity | Promise<Identity> {
    switch (route.access) {
      case 'public':
        return PUBLIC;
      case 'api':
        checkApiKey(req, this.opts.apiKey);
        return API;
      case 'client':
        // A backend's WebSocket may carry the API key instead of client credentials.
        if (route.upgrade !== undefined && hasApiKey(req, this.opts.apiKey)) return SERVER;
        return this.opts.auth.connect(new ConnectRequest(route.transport, req.headers, target, req.socket));
    }
  }

  #refuse(req: HttpRequest, res: HttpResponse, err: unknown, path: string): void {
    if (!(err instanceof TidingsError)) this.opts.unexpected(err, { method: req.method, path });
    else this.opts.refused?.(err.code, { method: req.method, path: path.slice(0, 100) });
    // A body left unread is not worth reading: the connection ends after the answer, which says so
    // (`Connection: close`, so no client sends its next request on it), with a lingering close.
    // (A request whose body was being read when refused may have let go of its socket; the response has it.)
    const socket = res.socket ?? req.socket;
    if (bodyPending(req) && socket !== null && !res.headersSent) {
      res.setHeader('connection', 'close');
      lingerWhenClosed(socket);
    }
    sendError(res, err);
  }

  /** Refuses an upgrade with a close a browser can read (after the handshake), counted as every refusal is. */
  #refuseUpgrade(upgrade: NonNullable<Route['upgrade']>, req: HttpRequest, socket: Duplex, head: Buffer, err: TidingsError): void {
    this.opts.refused?.(err.code, { method: req.method, upgrade: true });
    upgrade.refused(req, socket, head, err);
  }

  #refuseSocket(socket: Duplex, err: unknown, req: HttpRequest): void {
    if (!(err instanceof TidingsError)) this.opts.unexpected(err, { method: req.method, upgrade: true });
    else this.opts.refused?.(err.code, { method: req.method, upgrade: true });
    refuseOnSocket(socket, err instanceof TidingsError ? err : new TidingsError('internal', 'internal error'));
  }
}
