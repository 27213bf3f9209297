/**
 * The composition root: the only module that knows the concrete transports and broker. It wires
 * HTTP routes, WebSocket upgrades, SSE streams and long polls to sessions, runs the heartbeat
 * sweeps, and drains everything on close.
 * @module
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { CloseCode, PROTOCOL_VERSION, TidingsError, toClientFrame, type CloseName, type Json } from '@tidings/protocol';
import { WebSocketServer, type WebSocket } from 'ws';
import { openAuth, type Authenticator, type TransportName } from './auth.js';
import type { Broker } from './brokers/broker.js';
import { MemoryBroker } from './brokers/memory.js';
import { callRpc, CommandHandler, type RpcHandlers } from './commands.js';
import { demoPage } from './http/demo.js';
import { streamParams, sseCursorText } from './http/params.js';
import { checkApiKey, handlePublish } from './http/publish.js';
import { methodNotAllowed, readJson, sendError, sendJson } from './http/respond.js';
import { Hub } from './hub.js';
import { createLogger, type Logger } from './log.js';
import { CounterMetrics, type Metrics } from './metrics.js';
import { resolveOptions, type GatewayConfig, type GatewayOptions } from './options.js';
import { Publisher } from './publisher.js';
import { Session, type SessionContext, type Sink } from './session.js';
import { PollConnection } from './transports/long-polling.js';
import { SseConnection } from './transports/sse.js';
import { WebSocketConnection } from './transports/websocket.js';

/** Pieces a host application may supply; the defaults run one node in memory. */
export interface GatewayParts {
  readonly broker?: Broker;
  readonly auth?: Authenticator;
  readonly metrics?: Metrics;
  readonly rpc?: RpcHandlers;
  readonly logger?: Logger;
}

/** Where the gateway listens. */
export interface ListenInfo {
  readonly host: string;
  readonly port: number;
  readonly url: string;
}

const CORS = {
  'access-control-allow-origin': '*',
  'access-control-allow-methods': 'GET, POST, OPTIONS',
  'access-control-allow-headers': 'authorization, content-type, last-event-id',
  'access-control-max-age': '600',
};

function destroySocket(this: Socket): void {
  this.destroy();
}

/** Endpoints browsers call from other origins. */
const CLIENT_PATHS = new Set(['/sse', '/poll', '/send', '/rpc']);

export class Gateway {
  readonly options: GatewayOptions;
  readonly apiKey: string;
  /** True when no API key was configured and one was generated. */
  readonly apiKeyGenerated: boolean;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly server: Server;
  readonly #broker: Broker;
  /** Whether this gateway created the broker and so must close it (a supplied one outlives it). */
  readonly #ownsBroker: boolean;
  readonly #auth: Authenticator;
  readonly #rpc: RpcHandlers;
  readonly #hub: Hub;
  readonly #publisher: Publisher;
  readonly #ctx: SessionContext;
  readonly #wss: WebSocketServer;
  readonly #ws = new Set<WebSocketConnection>();
  readonly #sse = new Set<SseConnection>();
  /** Every live session with its transport, so close() and disconnectAll() reach them all. */
  readonly #sessions = new Map<Session, TransportName>();
  #timers: NodeJS.Timeout[] = [];
  #started = false;
  #closing = false;

  constructor(config: GatewayConfig = {}, parts: GatewayParts = {}) {
    this.options = resolveOptions(config);
    this.apiKeyGenerated = this.options.apiKey === undefined;
    this.apiKey = this.options.apiKey ?? randomBytes(24).toString('base64url');
    this.log = parts.logger ?? createLogger(this.options.logLevel);
    this.metrics = parts.metrics ?? new CounterMetrics();
    this.#ownsBroker = parts.broker === undefined;
    this.#broker = parts.broker ?? new MemoryBroker({ maxChannels: this.options.maxChannels, dedupMaxKeys: this.options.dedupMaxKeys });
    this.#auth = parts.auth ?? openAuth;
    this.#rpc = parts.rpc ?? {};
    this.#hub = new Hub(this.#broker, Math.max(1000, ...Object.values(this.options.namespaces).map((n) => n.historySize)), (err, channel) =>
      this.log.error({ err, channel }, 'hub error'),
    );
    this.#publisher = new Publisher(this.#broker, this.options, this.#auth, this.metrics);
    this.#ctx = { hub: this.#hub, broker: this.#broker, options: this.options, auth: this.#auth, metrics: this.metrics };
    this.#wss = new WebSocketServer({ noServer: true, maxPayload: this.options.maxPayload, perMessageDeflate: false, clientTracking: false });
    this.server = createServer((req, res) => this.#route(req, res));
    this.server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => this.#upgrade(req, socket, head));
    this.server.on('clientError', (_err, socket: Socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
    });
  }

  /** Starts the broker and listens; resolves with the bound address. */
  async listen(port = this.options.port, host = this.options.host): Promise<ListenInfo> {
    if (!this.#started) {
      await this.#broker.start(this.#hub.onPublication);
      this.#started = true;
      this.#timers.push(setInterval(() => this.#pingSweep(), this.options.pingInterval).unref());
      this.#timers.push(setInterval(() => this.#sseHeartbeat(), this.options.sseHeartbeat).unref());
      this.#timers.push(setInterval(() => this.#checkPositions(), this.options.positionCheck).unref());
    }
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const addr = this.server.address() as AddressInfo;
    const shown = host === '0.0.0.0' || host === '::' ? 'localhost' : host;
    return { host: addr.address, port: addr.port, url: `http://${shown.includes(':') ? `[${shown}]` : shown}:${addr.port}` };
  }

  /** Connected sessions per transport. */
  connections(): Record<TransportName, number> {
    const counts: Record<TransportName, number> = { websocket: 0, sse: 0, poll: 0, http: 0 };
    for (const t of this.#sessions.values()) counts[t] += 1;
    return counts;
  }

  /** Closes every client connection with `name` (default: restart, "come back now"). */
  disconnectAll(name: CloseName = 'restart', reason = 'server restarting'): void {
    for (const session of [...this.#sessions.keys()]) session.close(name, reason);
  }

  /** Graceful stop: refuse new work, tell clients to reconnect elsewhere, close the broker. */
  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    for (const t of this.#timers) clearInterval(t);
    this.#timers = [];
    this.disconnectAll('restart', 'server shutting down');
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    // Give close frames a moment to leave, then cut what remains.
    const cut = setTimeout(() => this.server.closeAllConnections(), 1000);
    await closed;
    clearTimeout(cut);
    if (this.#ownsBroker) await this.#broker.close();
  }

  #track(session: Session, transport: TransportName): void {
    this.#sessions.set(session, transport);
    this.metrics.connectionOpened(transport);
  }

  #untrack(session: Session): void {
    const transport = this.#sessions.get(session);
    if (transport === undefined) return;
    this.#sessions.delete(session);
    session.dispose();
    this.metrics.connectionClosed(transport);
  }

  #route(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://gateway');
    const handle = async (): Promise<void> => {
      if (req.method === 'OPTIONS') {
        res.writeHead(204, CORS).end();
        return;
      }
      const path = url.pathname;
      const need = (method: 'GET' | 'POST'): boolean => {
        if (req.method === method || (method === 'GET' && req.method === 'HEAD')) return true;
        methodNotAllowed(res, req.method, method);
        return false;
      };
      switch (path) {
        case '/':
        case '/index.html':
          if (need('GET')) demoPage(res);
          return;
        case '/sse':
          if (need('GET')) await this.#openSse(req, res, url);
          return;
        case '/poll':
          if (need('GET')) await this.#poll(req, res, url);
          return;
        case '/send':
          if (need('POST')) {
            const identity = await this.#auth.connect(this.#connectInfo('http', req, url));
            res.setHeader('access-control-allow-origin', '*');
            await handlePublish(req, res, this.#publisher, { kind: 'client', identity }, this.#limits());
          }
          return;
        case '/rpc':
          if (need('POST')) {
            const identity = await this.#auth.connect(this.#connectInfo('http', req, url));
            res.setHeader('access-control-allow-origin', '*');
            const { method, data } = rpcBody(await readJson(req, this.options.maxBody));
            sendJson(res, 200, { result: await callRpc(this.#rpc, method, data, identity) });
          }
          return;
        case '/api/publish':
          if (need('POST')) {
            checkApiKey(req, this.apiKey);
            await handlePublish(req, res, this.#publisher, { kind: 'api' }, this.#limits());
          }
          return;
        case '/ws':
          sendError(res, new TidingsError('bad_request', 'this endpoint needs a WebSocket upgrade'), { upgrade: 'websocket' });
          return;
        case '/healthz':
          if (need('GET')) sendJson(res, 200, { status: 'ok', connections: this.connections(), channels: this.#hub.channelCount });
          return;
        case '/readyz':
          if (need('GET')) sendJson(res, this.#closing ? 503 : 200, { ready: !this.#closing });
          return;
        default:
          sendError(res, new TidingsError('not_found', `no route ${path.slice(0, 100)}`));
      }
    };
    handle().catch((err: unknown) => {
      if (!(err instanceof TidingsError)) this.log.error({ err, path: url.pathname }, 'request failed');
      sendError(res, err, CLIENT_PATHS.has(url.pathname) ? { 'access-control-allow-origin': '*' } : {});
    });
  }

  #limits(): { maxBody: number; maxBatch: number } {
    return { maxBody: this.options.maxBody, maxBatch: this.options.maxBatch };
  }

  #connectInfo(transport: TransportName, req: IncomingMessage, url: URL): Parameters<Authenticator['connect']>[0] {
    return { transport, headers: req.headers, url, remoteAddress: req.socket.remoteAddress };
  }

  /** Subscribes a non-WebSocket session to every requested channel; on failure disposes it and rethrows. */
  async #subscribeAll(session: Session, params: ReturnType<typeof streamParams>): Promise<void> {
    try {
      for (const channel of params.channels) await session.subscribe(channel, params.cursor.get(channel));
    } catch (err) {
      this.#untrack(session);
      throw err;
    }
  }

  async #openSse(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    if (this.#closing) throw new TidingsError('unavailable', 'server shutting down');
    const params = streamParams(url, sseCursorText(req, url));
    const identity = await this.#auth.connect(this.#connectInfo('sse', req, url));
    res.setHeader('access-control-allow-origin', '*');
    const conn = new SseConnection(res, params.channels);
    const session = new Session(this.#ctx, conn, identity);
    this.#track(session, 'sse');
    res.on('close', () => {
      this.#sse.delete(conn);
      this.#untrack(session);
    });
    await this.#subscribeAll(session, params);
    if (conn.ended) return;
    const { sseRetry } = this.options;
    conn.open(sseRetry + Math.floor(Math.random() * (sseRetry / 2 + 1)), this.options.sseHeartbeat);
    this.#sse.add(conn);
  }

  async #poll(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    if (this.#closing) throw new TidingsError('unavailable', 'server shutting down');
    const params = streamParams(url, url.searchParams.get('cursor') ?? undefined);
    const timeoutText = url.searchParams.get('timeout');
    let hold = this.options.pollTimeout;
    if (timeoutText !== null) {
      const t = Number(timeoutText);
      if (!Number.isInteger(t) || t < 0) throw new TidingsError('bad_request', 'timeout must be a non-negative integer (ms)');
      hold = Math.min(t, hold);
    }
    const identity = await this.#auth.connect(this.#connectInfo('poll', req, url));
    res.setHeader('access-control-allow-origin', '*');
    const owner: { session?: Session } = {};
    const conn = new PollConnection(res, params.channels, this.options.maxPollMessages, () => {
      if (owner.session !== undefined) this.#untrack(owner.session);
    });
    const session = (owner.session = new Session(this.#ctx, conn, identity));
    this.#track(session, 'poll');
    await this.#subscribeAll(session, params);
    conn.arm(hold);
  }

  #upgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const url = new URL(req.url ?? '/', 'http://gateway');
    const refuse = (status: number, text: string): void => {
      socket.end(`HTTP/1.1 ${status} ${text}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    };
    if (url.pathname !== '/ws') return refuse(404, 'Not Found');
    if (this.#closing) return refuse(503, 'Service Unavailable');
    // A module-level listener: a closure here would keep this request and its head alive for the
    // whole life of the connection.
    socket.on('error', destroySocket);
    this.#auth.connect(this.#connectInfo('websocket', req, url)).then(
      (identity) => {
        this.#wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
          const conn = new WebSocketConnection(ws, socket);
          const session = new Session(this.#ctx, conn, identity);
          this.#accept(conn, session);
        });
      },
      (err: unknown) => {
        if (!(err instanceof TidingsError)) this.log.error({ err }, 'auth failed');
        // Browsers cannot read an upgrade refusal's status, so complete the handshake and close
        // with a code that tells the client not to retry with the same credentials.
        this.#wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
          const reason = err instanceof TidingsError ? err.message : 'authentication failed';
          ws.close(CloseCode.unauthorized.code, reason.slice(0, 120));
        });
      },
    );
  }

  #accept(conn: WebSocketConnection, session: Session): void {
    const { ws } = conn;
    this.#ws.add(conn);
    this.#track(session, 'websocket');
    const commands = new CommandHandler(
      session,
      this.#publisher,
      this.#rpc,
      (frame) => conn.frame(frame),
      this.options.maxBadFrames,
      (err) => this.log.error({ err }, 'command failed'),
    );
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      conn.alive = true;
      if (isBinary) {
        conn.frame({ type: 'error', error: { code: 'bad_frame', reason: 'frames must be text (JSON)' } });
        return;
      }
      if (!commands.handle(data.toString('utf8'))) session.close('bad_protocol', 'too many malformed frames');
    });
    ws.on('error', (err) => this.log.debug({ err }, 'websocket error'));
    ws.on('close', () => {
      this.#ws.delete(conn);
      this.#untrack(session);
    });
    conn.frame({ type: 'welcome', version: PROTOCOL_VERSION, session: session.id, heartbeat: this.options.pingInterval });
  }

  #checking = false;

  /** One position check at a time; a slow broker makes checks rarer, never overlapping. */
  #checkPositions(): void {
    if (this.#checking) return;
    this.#checking = true;
    this.#hub
      .checkPositions()
      .catch((err: unknown) => this.log.error({ err }, 'position check failed'))
      .finally(() => {
        this.#checking = false;
      });
  }

  #pingSweep(): void {
    for (const conn of this.#ws) conn.heartbeat();
  }

  #sseHeartbeat(): void {
    for (const conn of this.#sse) conn.heartbeat();
  }
}

/** Validates a `POST /rpc` body `{ method, data? }` with the same rules as the WebSocket `rpc` frame. */
function rpcBody(body: unknown): { method: string; data: Json | undefined } {
  const frame = toClientFrame({ ...(typeof body === 'object' && body !== null ? body : {}), type: 'rpc', id: 0 });
  if (frame.type !== 'rpc') throw new TidingsError('bad_request', 'body must be { method, data? }');
  return { method: frame.method, data: frame.data };
}

/** Creates a gateway; call `listen()` to start it. */
export function createGateway(config: GatewayConfig = {}, parts: GatewayParts = {}): Gateway {
  return new Gateway(config, parts);
}

export type { Sink };
