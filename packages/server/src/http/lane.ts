/**
 * The fast lane: long polls, SSE streams and publishing served straight from the socket, without
 * Node's HTTP objects.
 *
 * A long poll is one request per answer, so at scale a delivery costs what a request costs; an SSE
 * stream or a held poll lives for a long time; a backend publishing over HTTP pays a request per
 * publication. Node's HTTP server gives each request a request stream, a response stream, their
 * listeners and header stores and the parser's state: about 5.7 KiB for every held poll or open
 * stream, and work on every request that a plain poll or publish does not need.
 *
 * The lane is the gateway server's `connection` listener, in front of Node's own. It reads a
 * connection's first bytes; a whole request head in the subset of `lane-head.ts`, for a route the
 * lane serves, it serves itself once its body (a POST's, sized and at most the body limit) is read
 * whole: admission and the route get a {@link LaneRequest} and a {@link LaneResponse}, and the
 * answer is one write (a stream's head is one, and the stream writes its own chunks). It goes on so
 * for the connection's next requests. A WebSocket handshake in the subset leaves the lane for the
 * gateway's upgrade, as Node's server hands its upgrades over. Anything else (another route, another
 * method, a header outside the subset) and the connection goes to Node's HTTP server, with the bytes
 * already read, for the rest of its life. The lane never refuses input itself: Node judges whatever
 * is not plain.
 *
 * Each connection the lane holds has one owner here: it leaves the set when it closes or is handed
 * over. Requests are answered in order: bytes that arrive while one is in flight wait (reading
 * paused) until it is answered.
 * @module
 */
import { channel } from 'node:diagnostics_channel';
import { STATUS_CODES, type IncomingHttpHeaders, type OutgoingHttpHeaders, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { headMayFollow, isToken, readLaneHead, type LaneHead, type LaneRoutes } from './lane-head.js';

/** The request a lane route sees: what admission and the routes read of Node's `IncomingMessage`. */
export interface LaneRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly socket: Socket;
  /** Always true: a lane request is read whole before it is served. */
  readonly complete: boolean;
  /** A POST's body, whole; undefined for a GET. */
  readonly body: Buffer | undefined;
}

/** Serves one request the lane read (admission first, then the route). */
export type LaneServe = (req: LaneRequest, res: LaneResponse) => void;

/**
 * Takes a WebSocket upgrade the lane read, as Node's server `upgrade` listeners take theirs: the
 * socket is no longer the lane's (nor Node's server's), and `head` holds the bytes read after the
 * request's head.
 */
export type LaneUpgrade = (req: LaneRequest, socket: Socket, head: Buffer) => void;

export interface LaneOptions {
  /** The paths whose GET or POST the lane serves. */
  readonly routes: LaneRoutes;
  /** The gateway's body limit: the lane reads bodies up to it, and at most {@link MAX_LANE_BODY}. */
  readonly maxBody: number;
  readonly serve: LaneServe;
  /** Where WebSocket upgrades at `routes.UPGRADE` go. */
  readonly upgrade: LaneUpgrade;
}

/**
 * Every request the lane serves is published here as `{ request, response }` (when anyone listens),
 * as Node publishes the requests its server parses on `http.server.request.start`.
 */
export const LANE_REQUESTS = 'tidings.lane.request';
const requests = channel(LANE_REQUESTS);

/**
 * The lane's connections by socket, for the listeners every connection shares. Not a property of the
 * socket: one added there stays on it (grown property storage) after the socket goes to Node.
 */
const lanes = new WeakMap<Socket, LaneConnection>();

/** Node's limit on a request head (its `--max-http-header-size` default). */
const MAX_HEAD = 16 * 1024;
/**
 * The largest body the lane reads. A body is read before its request is admitted (its credentials
 * checked), so a client that never authenticates makes the lane hold at most this much beside the
 * head, as Node holds a head. A larger body goes to Node's server, where admission comes first and
 * the body is streamed (a refusal is answered without reading it).
 */
export const MAX_LANE_BODY = 16 * 1024;
/** Node keeps an idle keep-alive connection this much longer than it announces. */
const KEEP_ALIVE_BUFFER = 1000;
/** What Node lets into a header value, but obs-text: the head is written as ASCII. */
const INVALID_VALUE = /[^\t\x20-\x7e]/;

/** `Date:` as Node writes it, made at most once a second. */
let dateSecond = -1;
let dateLine = '';
function dateHeader(): string {
  const now = Date.now();
  const second = Math.floor(now / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateLine = `date: ${new Date(now).toUTCString()}\r\n`;
  }
  return dateLine;
}

/** Node's answer to a connection that sent no whole request head in time. */
const REQUEST_TIMEOUT = 'HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n';

/** What a frozen header set was written as, with one status. */
interface Written {
  readonly status: number;
  readonly head: string;
  readonly sized: boolean;
  readonly close: boolean;
}
/**
 * Frozen header sets, and what each was last written as: the heads of answers to many parked polls,
 * and of every JSON answer (`sendJson`), are made once, not once per answer. Held weakly: a set
 * goes when its owner lets it go.
 */
const written = new WeakMap<OutgoingHttpHeaders, Written>();

/** One header line, checked as Node checks what `setHeader` is given. */
function headerLine(name: string, value: string | number | readonly string[]): string {
  if (!isToken(name)) throw new TypeError(`invalid header name ${JSON.stringify(name)}`);
  const text = Array.isArray(value) ? value.join(', ') : String(value);
  if (INVALID_VALUE.test(text)) throw new TypeError(`invalid character in header ${name}`);
  return `${name}: ${text}\r\n`;
}

// Listeners shared by every lane connection; each finds its connection through the socket.
function onData(this: Socket, chunk: Buffer): void {
  lanes.get(this)?.read(chunk);
}
function onEnd(this: Socket): void {
  lanes.get(this)?.ended();
}
function onClose(this: Socket): void {
  lanes.get(this)?.closed();
}
function onError(): void {
  // 'close' follows.
}

/** Takes the lane's listeners off a socket that leaves it. */
function unlisten(socket: Socket): void {
  socket.off('data', onData);
  socket.off('end', onEnd);
  socket.off('close', onClose);
  socket.off('error', onError);
}

/** The request a lane route (or the upgrade) sees of a head the lane read. */
function requestOf(head: LaneHead, socket: Socket, body: Buffer | undefined): LaneRequest {
  return { method: head.method, url: head.url, headers: head.headers, socket, complete: true, body };
}

type CloseListener = (this: LaneResponse) => void;

/**
 * A lane request's answer: the part of Node's `ServerResponse` that admission, the error replies and
 * the poll and SSE routes use. The head is kept until `end`, which writes head and body at once, or
 * until `flushHeaders` (a stream).
 */
export class LaneResponse {
  headersSent = false;
  writableEnded = false;
  #stored: Record<string, string | number> | undefined;
  #head = '';
  /** The head says how long the body is. */
  #sized = false;
  /** The head went out alone (`flushHeaders`): the body follows in HTTP/1.1 chunks, written by the route. */
  #streaming = false;
  /**
   * Close listeners: two in fields (a client connection's response has two: its slots', and its
   * stream's or held poll's), more in an array.
   */
  #onClose: CloseListener | undefined;
  #onClose2: CloseListener | undefined;
  #onCloseMore: CloseListener[] | undefined;
  #closed = false;
  /** What the response carries (an SSE stream, a held poll), for listeners shared by every response to find it, as on the gateway's `ServerResponse`. */
  stream: unknown = undefined;
  /** A client connection's slots (admission's `SlotCarrier`), as on the gateway's `ServerResponse`. */
  slots: unknown = undefined;

  constructor(private readonly conn: LaneConnection) {}

  get socket(): Socket {
    return this.conn.socket;
  }

  get destroyed(): boolean {
    return this.conn.socket.destroyed;
  }

  setHeader(name: string, value: string | number): this {
    if (this.headersSent) throw new Error('cannot set a header after the head was written');
    (this.#stored ??= Object.create(null) as Record<string, string | number>)[name.toLowerCase()] = value;
    return this;
  }

  writeHead(status: number, headers?: OutgoingHttpHeaders): this {
    if (this.headersSent) throw new Error('the head was already written');
    // A frozen header set cannot change: what it was written as is kept (answers to many parked polls share one).
    const kept = this.#stored === undefined && headers !== undefined ? written.get(headers) : undefined;
    if (kept?.status === status) {
      if (kept.close) this.conn.last = true;
      this.#sized = kept.sized;
      this.#head = kept.head;
      this.headersSent = true;
      return this;
    }
    let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}\r\n`;
    // Names in lower case: set ones first, then these (which win).
    const all: Record<string, string | number | readonly string[]> = Object.create(null) as Record<string, string | number>;
    if (this.#stored !== undefined) Object.assign(all, this.#stored);
    if (headers !== undefined) for (const name in headers) {
      const value = headers[name];
      if (value !== undefined) all[name.toLowerCase()] = value;
    }
    for (const name in all) {
      if (name === 'connection' || name === 'keep-alive' || name === 'date') continue;
      head += headerLine(name, all[name] as string);
    }
    const close = all.connection === 'close';
    if (close) this.conn.last = true;
    this.#sized = all['content-length'] !== undefined;
    this.#head = head;
    if (this.#stored === undefined && headers !== undefined && Object.isFrozen(headers)) written.set(headers, { status, head, sized: this.#sized, close });
    this.headersSent = true;
    return this;
  }

  /** Whether the body goes in chunks (after `flushHeaders`), as Node's `chunkedEncoding`. */
  get chunkedEncoding(): boolean {
    return this.#streaming;
  }

  /**
   * Sends the head now: the body follows in HTTP/1.1 chunks that the route writes to the socket
   * itself (an SSE stream), and `end` writes the last ones.
   */
  flushHeaders(): void {
    if (this.#streaming || this.writableEnded) return;
    if (!this.headersSent) this.writeHead(200);
    this.#streaming = true;
    this.conn.stream(this, this.#sized ? this.#head : `${this.#head}transfer-encoding: chunked\r\n`);
  }

  end(body?: string | Buffer): this {
    if (this.writableEnded) return this;
    if (!this.headersSent) this.writeHead(200);
    this.writableEnded = true;
    if (this.#streaming) {
      const size = body === undefined ? 0 : Buffer.byteLength(body);
      this.conn.finish(this, size === 0 ? LAST_CHUNK : `${size.toString(16)}\r\n${body as string}\r\n${LAST_CHUNK}`);
    } else {
      this.conn.answer(this, this.#sized ? this.#head : `${this.#head}content-length: ${body === undefined ? 0 : Buffer.byteLength(body)}\r\n`, body);
    }
    return this;
  }

  /** Only `close`: when the answer is out, or the connection went before it. Listeners are called on the response, as Node's are. */
  on(_event: 'close', listener: CloseListener): this {
    if (this.#onClose === undefined) this.#onClose = listener;
    else if (this.#onClose2 === undefined) this.#onClose2 = listener;
    else (this.#onCloseMore ??= []).push(listener);
    return this;
  }

  destroy(): this {
    this.conn.socket.destroy();
    return this;
  }

  /** The answer is out, or the connection is gone: tell the listeners, once. */
  closed(): void {
    if (this.#closed) return;
    this.#closed = true;
    const first = this.#onClose;
    const second = this.#onClose2;
    const more = this.#onCloseMore;
    this.#onClose = this.#onClose2 = this.#onCloseMore = undefined;
    first?.call(this);
    second?.call(this);
    if (more !== undefined) for (const listener of more) listener.call(this);
  }
}

const CLOSE_LINES = 'connection: close\r\n\r\n';
const EMPTY = Buffer.alloc(0);
const LAST_CHUNK = '0\r\n\r\n';

/** The last answer made whole: every poll parked at a position is answered with the same head and body. */
let frame: { head: string; date: string; tail: string; body: Buffer; bytes: Buffer } | undefined;

/** Head and body as one buffer, made once for the many connections answered with them. */
function frameOf(head: string, tail: string, body: Buffer): Buffer {
  const date = dateHeader();
  if (frame?.body !== body || frame.head !== head || frame.date !== date || frame.tail !== tail) {
    const text = head + date + tail;
    const bytes = Buffer.allocUnsafe(text.length + body.length);
    bytes.write(text, 0, 'latin1');
    body.copy(bytes, text.length);
    frame = { head, date, tail, body, bytes };
  }
  return frame.bytes;
}

/**
 * Responses written whose close listeners run next, in the order they were written: one `nextTick`
 * for those of one turn's writes (a poll group answers thousands at once), not one each.
 */
let closing: LaneResponse[] = [];

function emitClosed(): void {
  const list = closing;
  closing = [];
  for (let i = 0; i < list.length; i++) {
    try {
      (list[i] as LaneResponse).closed();
    } catch (err) {
      // A listener that throws (a bug) costs the others nothing: theirs run next tick, and the error
      // is thrown on as it was when each response had a tick of its own.
      closing = list.slice(i + 1).concat(closing);
      if (closing.length > 0) process.nextTick(emitClosed);
      throw err;
    }
  }
}

/** `res` is written: its close listeners run after this (as Node emits `close` after the answer). */
function closeSoon(res: LaneResponse): void {
  if (closing.push(res) === 1) process.nextTick(emitClosed);
}

function uncorkAtTurnEnd(conn: LaneConnection): void {
  conn.uncork();
}

/** One connection the lane serves. */
class LaneConnection {
  /** Until when the connection may wait for its next request (ms, `Date.now()`); 0 while a request is in flight (no limit). */
  waitUntil = 0;
  /**
   * Bytes read and not yet served: at most one read's worth while a request is in flight (reading is
   * paused), or a request whose body is still on its way (at most the body limit).
   */
  #pending: Buffer | undefined;
  /** While a request's body is on its way: the reads after `#pending`, and how many bytes the request needs in all. */
  #more: Buffer[] | undefined;
  #have = 0;
  #need = 0;
  /** A head is on its way (its time counts from its start): from the connection's start, and from a read that cut a head. */
  #headStarted = true;
  /** The answer in flight. */
  #current: LaneResponse | undefined;
  /** Close after the answer in flight: the request asked, the client ended, or the server is stopping. */
  last = false;
  /** A request was served on this connection. */
  #served = false;
  #ending = false;
  /** The socket is corked: pipelined requests' answers go out together, at the latest at the end of the turn. */
  #corked = false;
  /** {@link #next} is serving a request; `#again`: one answered meanwhile, so it serves the next one too. */
  #serving = false;
  #again = false;
  /** Reading waits for `drain`: the client is not reading its answers. */
  #awaitingDrain = false;

  constructor(
    readonly socket: Socket,
    private readonly lane: FastLane,
  ) {}

  read(chunk: Buffer): void {
    if (this.#need > 0) {
      // A body on its way: its reads are joined once, when it is whole.
      (this.#more ??= []).push(chunk);
      this.#have += chunk.length;
      if (this.#have < this.#need) return;
      this.#pending = Buffer.concat([this.#pending as Buffer, ...this.#more]);
      this.#more = undefined;
      this.#need = 0;
      this.#next();
      return;
    }
    this.#pending = this.#pending === undefined ? chunk : Buffer.concat([this.#pending, chunk]);
    if (this.#current !== undefined) this.socket.pause();
    else this.#next();
  }

  /**
   * Serves the pending requests. A route may answer within `serve` (a poll answered at once, a
   * refusal), and the answer goes on to the next request: that one is served by this loop, not by a
   * nested call, so pipelined requests answered at once never deepen the stack.
   */
  #next(): void {
    if (this.#serving) {
      this.#again = true;
      return;
    }
    this.#serving = true;
    try {
      do {
        this.#again = false;
        this.#serveNext();
      } while (this.#again);
    } finally {
      this.#serving = false;
    }
    // The pipelined requests are answered: their answers go now.
    if (this.#current === undefined && this.#pending === undefined) this.uncork();
    // Reading goes on unless the connection is ending (nothing after a request that asked to close is
    // served), a request is in flight with bytes waiting behind it (a connection handed over is
    // resumed by the hand-over), or the client is not reading its answers: as Node's server, the
    // lane reads no more requests while their answers would only pile up in memory.
    if (this.#ending) return;
    const { socket } = this;
    if (lanes.get(socket) !== this) return;
    if (socket.writableNeedDrain) this.#readAfterDrain();
    else if ((this.#current === undefined || this.#pending === undefined) && socket.isPaused()) socket.resume();
  }

  /**
   * Stops reading until the answers written so far are taken by the kernel; then goes on. The client
   * has as long to take them as it has to send a request (`requestTimeout`); then it is cut.
   */
  #readAfterDrain(): void {
    if (this.#awaitingDrain) return;
    this.#awaitingDrain = true;
    this.socket.pause();
    if (this.#current === undefined) this.lane.wait(this, this.lane.requestTimeout);
    this.socket.once('drain', () => {
      this.#awaitingDrain = false;
      if (this.#current === undefined) {
        // Waiting starts over: for the next request, or for the rest of a head the pause cut.
        this.lane.wait(this, this.lane.keepAlive);
        this.#headStarted = false;
      }
      this.#next();
    });
  }

  /**
   * Serves the next pending request, or hands the connection over when it is not the lane's. Never
   * while one is in flight: its answer comes first, and its end ({@link #done}) serves the next.
   */
  #serveNext(): void {
    const buf = this.#pending;
    if (buf === undefined || this.#current !== undefined) return;
    const head = readLaneHead(buf, this.lane.routes, MAX_HEAD, this.lane.maxBody);
    if (head === undefined) {
      if (!headMayFollow(buf, this.lane.routes, MAX_HEAD)) {
        this.#handOver();
        return;
      }
      // The rest of the head is on its way (a read cut it): for as long as Node waits for a head.
      if (!this.#headStarted) this.lane.wait(this, this.lane.headersTimeout);
      this.#headStarted = true;
      return;
    }
    this.#headStarted = false;
    if (head.upgrade) {
      this.#upgrade(head, buf);
      return;
    }
    const end = head.length + head.bodyLength;
    if (buf.length < end) {
      // The body is on its way: read on (for as long as Node gives a whole request).
      this.#have = buf.length;
      this.#need = end;
      this.lane.wait(this, this.lane.requestTimeout);
      return;
    }
    const body = head.bodyLength === 0 ? (head.method === 'POST' ? EMPTY : undefined) : buf.subarray(head.length, end);
    this.#pending = end < buf.length ? buf.subarray(end) : undefined;
    if (this.#pending !== undefined) {
      // Pipelined bytes wait for this answer; reading stops so that no more pile up. Their answers
      // are written together: one write for the read's requests, not one each.
      this.socket.pause();
      this.#cork();
    }
    if (head.close) this.last = true;
    const res = new LaneResponse(this);
    this.#current = res;
    this.#served = true;
    this.lane.busy(this);
    const req = requestOf(head, this.socket, body);
    if (requests.hasSubscribers) requests.publish({ request: req, response: res });
    this.lane.serve(req, res);
  }

  /** Writes the head of a response whose body the route streams; the response stays in flight until it ends. */
  stream(res: LaneResponse, head: string): void {
    if (res === this.#current && this.socket.writable) this.socket.write(head + dateHeader() + (this.last ? CLOSE_LINES : this.lane.keepAliveLines));
  }

  /** Writes an answer (head and body together) and goes on with the connection. */
  answer(res: LaneResponse, head: string, body: string | Buffer | undefined): void {
    if (res !== this.#current) return;
    const { socket } = this;
    const tail = this.last ? CLOSE_LINES : this.lane.keepAliveLines;
    if (socket.writable) {
      if (body === undefined || typeof body === 'string') socket.write(head + dateHeader() + tail + (body ?? ''));
      else socket.write(frameOf(head, tail, body));
    }
    this.#done(res);
  }

  /** Writes the last bytes of a streamed response and goes on with the connection. */
  finish(res: LaneResponse, last: string): void {
    if (res !== this.#current) return;
    if (this.socket.writable) this.socket.write(last);
    this.#done(res);
  }

  /** The response in flight is written: its close listeners run next, and the connection goes on (or ends). */
  #done(res: LaneResponse): void {
    this.#current = undefined;
    closeSoon(res);
    if (this.last) {
      this.#end();
      return;
    }
    this.lane.wait(this, this.lane.keepAlive);
    this.#next();
  }

  /** Holds writes until {@link uncork}, which comes at the end of this turn if nothing calls it sooner. */
  #cork(): void {
    if (this.#corked) return;
    this.#corked = true;
    this.socket.cork();
    setImmediate(uncorkAtTurnEnd, this);
  }

  /** Writes what was held. */
  uncork(): void {
    if (!this.#corked) return;
    this.#corked = false;
    this.socket.uncork();
  }

  /** No whole request in time: Node's 408 when none came yet or one is cut short, else (idle keep-alive) just the end. */
  timedOut(): void {
    this.lane.busy(this);
    if ((!this.#served || this.#pending !== undefined) && this.socket.writable) this.socket.end(REQUEST_TIMEOUT);
    this.socket.destroy();
  }

  /**
   * The client sent FIN: the connection ends now, as Node's server ends it (a client that gives up
   * on a held poll closes its connection; the poll is let go when the socket closes).
   */
  ended(): void {
    this.last = true;
    this.#end();
  }

  closed(): void {
    this.lane.release(this);
    const res = this.#current;
    this.#current = undefined;
    res?.closed();
  }

  /** Ends an idle connection now; one with an answer in flight after it. */
  close(): void {
    this.last = true;
    if (this.#current === undefined) this.#end();
  }

  /** FIN after what was written, then the connection goes (Node's `destroySoon`). */
  #end(): void {
    if (this.#ending) return;
    this.#ending = true;
    const { socket } = this;
    socket.end(() => socket.destroy());
  }

  /**
   * The connection leaves the lane for the gateway's WebSocket upgrade, which gets what came after
   * the head. As Node's server leaves an upgraded socket: no `data` listener and not flowing (the
   * next one to listen starts the flow, and bytes that come before it wait in the socket), nothing of
   * the server's on it, no error listener either: the upgrade puts its own on at once.
   */
  #upgrade(head: LaneHead, buf: Buffer): void {
    const { socket } = this;
    this.uncork();
    this.lane.release(this);
    this.#pending = undefined;
    unlisten(socket);
    // Node's setter (the type has none): what its server does at an upgrade.
    (socket as { readableFlowing: boolean | null }).readableFlowing = null;
    this.lane.upgrade(requestOf(head, socket, undefined), socket, head.length < buf.length ? buf.subarray(head.length) : EMPTY);
  }

  /** Node's HTTP server takes the connection, and the bytes read, from here on. */
  #handOver(): void {
    const { socket } = this;
    this.uncork();
    this.lane.release(this);
    const pending = this.#pending;
    this.#pending = undefined;
    this.lane.handOver(socket);
    // Node's `data` listener is on now, beside the lane's (which does nothing from here on).
    if (pending !== undefined) socket.unshift(pending);
    // The lane's listeners go after Node's came for the same events, so that no key of the socket's
    // listener table is deleted (which would turn it into a larger dictionary for the socket's life).
    unlisten(socket);
    // Paused here for pipelined bytes: Node reads on.
    if (socket.isPaused()) socket.resume();
  }
}

/** The lane in front of `server`: installed once, for the server's life. */
export class FastLane {
  readonly routes: LaneRoutes;
  readonly maxBody: number;
  readonly serve: LaneServe;
  readonly upgrade: LaneUpgrade;
  readonly #connections = new Set<LaneConnection>();
  #sweeper: NodeJS.Timeout | undefined;
  readonly #node: (socket: Socket) => void;
  readonly #server: Server;

  /**
   * Takes the place of Node's `connection` listener on `server`, which it calls for the connections
   * it hands over (Node's documented way to give an HTTP server a connection).
   */
  constructor(server: Server, options: LaneOptions) {
    const node = server.listeners('connection')[0];
    if (typeof node !== 'function') throw new Error('the HTTP server has no connection listener');
    this.#node = node as (socket: Socket) => void;
    this.#server = server;
    this.routes = options.routes;
    this.maxBody = Math.min(options.maxBody, MAX_LANE_BODY);
    this.serve = options.serve;
    this.upgrade = options.upgrade;
    server.off('connection', this.#node);
    server.prependListener('connection', (socket: Socket) => this.#accept(socket));
  }

  /** How long an idle connection is kept (as Node keeps its own). */
  get keepAlive(): number {
    return this.#server.keepAliveTimeout + KEEP_ALIVE_BUFFER;
  }

  /** How long a request's head may take to arrive, as Node's `headersTimeout`. */
  get headersTimeout(): number {
    return this.#server.headersTimeout;
  }

  /** How long a request's body may take to arrive, as Node's `requestTimeout` (its head's time is not counted). */
  get requestTimeout(): number {
    const { requestTimeout, headersTimeout } = this.#server;
    return requestTimeout > 0 ? requestTimeout : headersTimeout;
  }

  #keepAliveFor = -1;
  #keepAliveLines = '';

  /** The head's last lines for a connection kept open, as Node writes them. */
  get keepAliveLines(): string {
    const timeout = this.#server.keepAliveTimeout;
    if (timeout !== this.#keepAliveFor) {
      this.#keepAliveFor = timeout;
      this.#keepAliveLines = timeout > 0 ? `connection: keep-alive\r\nkeep-alive: timeout=${Math.floor(timeout / 1000)}\r\n\r\n` : 'connection: keep-alive\r\n\r\n';
    }
    return this.#keepAliveLines;
  }

  /** Connections the lane holds now. */
  get size(): number {
    return this.#connections.size;
  }

  #accept(socket: Socket): void {
    const conn = new LaneConnection(socket, this);
    lanes.set(socket, conn);
    this.#connections.add(conn);
    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.on('close', onClose);
    socket.on('error', onError);
    // A connection that sends nothing, or part of a head, gets Node's answer after Node's time.
    this.wait(conn, this.#server.headersTimeout);
    this.#sweeper ??= setInterval(() => this.#sweep(), Math.max(10, Math.min(1000, this.#server.headersTimeout))).unref();
  }

  /** `conn` waits for a request, at most `ms` (a field, not a set of waiting connections: a poll answered and asked again every few milliseconds would move in and out of one). */
  wait(conn: LaneConnection, ms: number): void {
    conn.waitUntil = Date.now() + ms;
  }

  /** `conn` has a request in flight: no time limit (a held poll ends at its hold, a stream lives on). */
  busy(conn: LaneConnection): void {
    conn.waitUntil = 0;
  }

  /**
   * Ends the connections that waited too long. One timer for all, as Node checks its own connections
   * (a socket timeout would leave a timer object and a bound function on every socket for its life,
   * after the socket went to Node too), running while the lane holds any connection.
   */
  #sweep(): void {
    const now = Date.now();
    let late: LaneConnection[] | undefined;
    for (const conn of this.#connections) if (conn.waitUntil !== 0 && conn.waitUntil <= now) (late ??= []).push(conn);
    // Judged after this turn's reads: a loop busy past a deadline runs its timers before it reads what
    // came in time, and the client is not to blame for the gateway's lag.
    if (late !== undefined) setImmediate(() => this.#cut(late, now));
    if (this.#connections.size === 0 && this.#sweeper !== undefined) {
      clearInterval(this.#sweeper);
      this.#sweeper = undefined;
    }
  }

  /** Ends the connections of `late` that still wait past `now`: nothing they sent since moved their deadline. */
  #cut(late: readonly LaneConnection[], now: number): void {
    for (const conn of late) if (this.#connections.has(conn) && conn.waitUntil !== 0 && conn.waitUntil <= now) conn.timedOut();
  }

  handOver(socket: Socket): void {
    this.#node.call(this.#server, socket);
  }

  release(conn: LaneConnection): void {
    this.#connections.delete(conn);
    lanes.delete(conn.socket);
  }

  /** Stopping: idle connections end now, busy ones after their answer. */
  closeIdle(): void {
    for (const conn of this.#connections) conn.close();
  }

  /** Cuts every connection the lane holds. */
  destroyAll(): void {
    for (const conn of this.#connections) conn.socket.destroy();
  }
}
