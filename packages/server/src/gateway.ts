/**
 * The composition root: the only module that knows the concrete transports and broker. It builds
 * the route table (each transport owns its handler), puts {@link Admission} in front of every
 * request and upgrade, opens sessions for transports through the {@link Connector}, runs the
 * heartbeat sweeps and the presence refresh, and drains everything on close within a deadline.
 * @module
 */
import { randomBytes } from 'node:crypto';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Registry } from 'prom-client';
import { TidingsError, type Channel, type CloseName, type PresenceResult } from '@tidings/protocol';
import { Admission, clientAddress, refuseOnSocket, type LaneHandler, type Route } from './admission.js';
import { openAuth, type Authenticator, type Identity, type TransportName } from './auth.js';
import type { Broker, BrokerSettings, BrokerStatus } from './brokers/broker.js';
import { MemoryBroker } from './brokers/memory.js';
import { RedisBroker } from './brokers/redis.js';
import { jwtAuth } from './jwt.js';
import { originPolicy, type OriginPolicy } from './origin.js';
import { ConnectionGate, KeyedBuckets, RetryLater, TokenBucket } from './limits.js';
import { CONNECTIONS_NAMESPACE, UserConnections } from './user-connections.js';
import { Control, CONTROL_CHANNEL, CONTROL_NAMESPACE } from './control.js';
import { Admin, ADMIN_CHANNEL, ADMIN_NAMESPACE } from './admin/admin.js';
import { bothHooks, loadHooks, proxyHooks, type AuthorizeHooks, type HooksHolder } from './authorize.js';
import { systemClock, type Clock } from './clock.js';
import { NatsBroker } from './brokers/nats.js';
import { restoreFastStrings } from './fast-strings.js';
import { CommandHandler, DuplexSession, type RpcHandlers } from './commands.js';
import { demoPage, publicFile } from './http/demo.js';
import { answerAsPlain, wantsWebSocket } from './http/plain-upgrade.js';
import { FastLane } from './http/lane.js';
import { handlePresence } from './http/presence.js';
import { handlePublish } from './http/publish.js';
import { handleRefresh } from './http/refresh.js';
import { readJson, sendJson } from './http/respond.js';
import { handleRpc } from './http/rpc.js';
import { Hub } from './hub.js';
import { createLogger, sampledLog, type Logger } from './log.js';
import { CounterMetrics, NO_METRICS, type ErrorSite, type Metrics } from './metrics.js';
import { prometheusRegistry } from './prometheus.js';
import { ConfigError, resolveOptions, type GatewayConfig, type GatewayOptions } from './options.js';
import { listPresence, Presence } from './presence.js';
import { PresenceListings } from './presence-listings.js';
import { PollGroups } from './poll-groups.js';
import { Publisher } from './publisher.js';
import { loadRpcModule } from './rpc-module.js';
import { Session, type SessionContext } from './session.js';
import type { Connector, DuplexSink, Sink, StreamTransport } from './sink.js';
import { PollTransport } from './transports/long-polling.js';
import { GatewayResponse, SseTransport } from './transports/sse.js';
import { WebSocketTransport } from './transports/websocket.js';

/** Pieces a host application may supply; the defaults run one node in memory. */
export interface GatewayParts {
  readonly broker?: Broker;
  readonly auth?: Authenticator;
  readonly metrics?: Metrics;
  readonly rpc?: RpcHandlers;
  readonly logger?: Logger;
  /** Authorization hooks asked for every subscribe and client publish, after the authenticator allowed it. */
  readonly authorize?: AuthorizeHooks;
  /** The clock tokens are checked and expire against (default: the system's; tests inject one). */
  readonly clock?: Clock;
}

/** Where the gateway listens. */
export interface ListenInfo {
  readonly host: string;
  readonly port: number;
  readonly url: string;
  /** The port `/metrics` is served on, when it has one of its own (`metricsPort`). */
  readonly metricsPort?: number;
}

/** What the gateway holds right now (for health checks, leak checks and tests). */
export interface GatewayStats {
  readonly node: string;
  readonly broker: BrokerStatus;
  readonly connections: Record<TransportName, number>;
  readonly sessions: number;
  readonly hub: { readonly channels: number; readonly subscribers: number; readonly repairing: number; readonly lingering: number };
  /** Presence entries of this node's clients. */
  readonly presence: number;
  /**
   * Long-poll groups (each one hub subscriber of its channel), the polls parked in them (no session of
   * their own) and the places those take (a poll of several channels waits in each one's group), the
   * places in their parked lists and in their hold queues (the parked places, and those of polls
   * answered or gone that a list or queue has not let go yet: each at most twice the parked places,
   * and a few), and the bytes of
   * recent publications and answers the groups hold (at most `maxPollGroupBytes`).
   */
  readonly polls: { readonly groups: number; readonly parked: number; readonly places: number; readonly listed: number; readonly queued: number; readonly bytes: number };
}

/** The authenticator the options configure: JWT when `auth.jwt` is set, else open. */
export function authFor(options: GatewayOptions, origins: OriginPolicy = originPolicy(options.allowedOrigins), clock: Clock = systemClock): Authenticator {
  const { jwt, cookie } = options.auth;
  if (jwt === undefined) return openAuth;
  const anonymousNamespaces = Object.entries(options.namespaces)
    .filter(([, ns]) => ns.anonymous)
    .map(([name]) => name);
  return jwtAuth({ jwt, cookie, anonymousNamespaces, origins, now: () => clock.now() });
}

/** The broker an options object names (`memory`, `redis://...`, `nats://...`); `log` receives the broker's warnings. */
function brokerFor(options: GatewayOptions, log: Logger): Broker {
  if (options.broker === 'memory') {
    return new MemoryBroker({ maxChannels: options.maxChannels, dedupMaxKeys: options.dedupMaxKeys, maxHistoryBytes: options.maxHistoryBytes });
  }
  if (/^rediss?:\/\//.test(options.broker)) return new RedisBroker({ url: options.broker, logger: log });
  if (/^(nats|tls):\/\//.test(options.broker)) return new NatsBroker({ url: options.broker, logger: log });
  throw new ConfigError([`broker ${options.broker.replace(/\/\/[^@/]*@/, '//***@')} is not supported by this build`]);
}

/** Retention per namespace and the idempotency window, as the broker is told at start. */
function brokerSettings(options: GatewayOptions): BrokerSettings {
  const namespaces = Object.fromEntries(
    Object.entries(options.namespaces).map(([name, ns]) => [name, { historySize: ns.historySize, historyTtl: ns.historyTtl * 1000, ephemeral: ns.ephemeral }]),
  );
  // The internal namespace of per-user connection entries (presence only).
  namespaces[CONNECTIONS_NAMESPACE] = { historySize: 0, historyTtl: 0, ephemeral: true };
  // The internal namespace of cluster control orders.
  namespaces[CONTROL_NAMESPACE] = { historySize: 0, historyTtl: 0, ephemeral: true };
  // The internal namespace of the admin dashboard's node snapshots.
  namespaces[ADMIN_NAMESPACE] = { historySize: 0, historyTtl: 0, ephemeral: true };
  return { namespaces, dedupWindow: options.dedupWindow };
}

/** The body of `POST /api/disconnect`: `{ "user", "reason"? }`. */
function disconnectRequest(body: unknown): { user: string; reason: string } {
  const { user, reason } = (typeof body === 'object' && body !== null ? body : {}) as { user?: unknown; reason?: unknown };
  if (typeof user !== 'string' || user === '' || user.length > 256) throw new TidingsError('bad_request', 'the body must be { "user": "<the token\'s sub>", "reason"?: "..." }');
  if (reason !== undefined && (typeof reason !== 'string' || reason.length > 120)) throw new TidingsError('bad_request', 'reason must be a string of at most 120 characters');
  return { user, reason: reason ?? 'disconnected by the server' };
}

/** A drain closes its connections in this many waves. */
const DRAIN_WAVES = 10;

/**
 * Request line and headers, at most (Node's default is 16 KiB). A stream of the most channels with the
 * longest names (64 of 200 characters, each escaped to up to 600 in a URL) comes back with a cursor of
 * every channel: an SSE stream's `Last-Event-ID` beside its URL, about 53 KB; a poll's `cursor`, escaped
 * in the query beside its channel list, about 80 KB. Both must fit, or a stream could open and never
 * resume.
 */
const MAX_HEADER_BYTES = 96 * 1024;
/** Connections the separate metrics port holds at once (`metricsPort`): scrapers, a few of them. */
const METRICS_MAX_CONNECTIONS = 32;

/**
 * `POST /refresh` for a stream on another node goes out as a control order that every node reads. A
 * stream refreshes once per token lifetime, so a user gets 1 a second (10 at once: a burst of tabs),
 * and the node 100 a second (200 at once), beyond which it answers 429: one client cannot make the
 * cluster do a node's worth of work per request at will. Users tracked: at most 10,000.
 */
const FORWARDS = { perUser: 1, perUserBurst: 10, users: 10_000, rate: 100, burst: 200 };

/** How long a closing connection may take to finish its close handshake or flush its last event. */
const CLOSE_GRACE = 5000;

/** Node's answers to requests it could not parse, as coded errors. */
function clientErrorOf(err: NodeJS.ErrnoException): TidingsError {
  switch (err.code) {
    case 'HPE_HEADER_OVERFLOW':
      return new TidingsError('header_too_large', 'the request headers are too large');
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return new TidingsError('request_timeout', 'the request did not arrive in time');
    default:
      return new TidingsError('bad_request', 'malformed HTTP request');
  }
}

export class Gateway {
  readonly options: GatewayOptions;
  readonly apiKey: string;
  /** True when no API key was configured and one was generated. */
  readonly apiKeyGenerated: boolean;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly server: Server;
  /** This node's id: unique in a cluster, the prefix of its session ids. */
  readonly nodeId: string;
  /** What session and connection-slot ids start with: this node and this life of it. */
  readonly #idPrefix: string;
  /** Refreshes this node forwards to the others (see {@link FORWARDS}), per user and in all. */
  readonly #forwardsByUser = new KeyedBuckets(FORWARDS.perUser, FORWARDS.perUserBurst, FORWARDS.users);
  readonly #forwards = new TokenBucket(FORWARDS.rate, FORWARDS.burst);
  readonly #broker: Broker;
  /** Whether this gateway created the broker and so must close it (a supplied one outlives it). */
  readonly #ownsBroker: boolean;
  readonly #hub: Hub;
  readonly #presence: Presence;
  readonly #control: Control;
  readonly #admin: Admin;
  readonly #pollGroups: PollGroups;
  readonly #authorize: HooksHolder;
  #listeningAt: number | undefined;
  /** Event-loop delay since the last `/healthz` (10 ms resolution). */
  readonly #loop: IntervalHistogram = monitorEventLoopDelay({ resolution: 10 });
  readonly #ws: WebSocketTransport;
  readonly #sse: SseTransport;
  /**
   * Every live session by id, so close() and disconnectAll() reach them all, and a token refresh of
   * an SSE stream finds the session it names. (One map: each entry costs every connection.)
   */
  readonly #sessions = new Map<string, Session>();
  /** Connections that have not sent a request yet: Node does not count them idle, so shutdown closes them itself. */
  readonly #silent = new Set<Socket>();
  readonly #lane: FastLane;
  #timers: NodeJS.Timeout[] = [];
  #started = false;
  #brokerStatus: BrokerStatus = 'down';
  #brokerReason = 'not started';
  #closing: Promise<void> | undefined;
  /** RPC handlers: the host's, then those of `rpcModule`. */
  readonly #rpc: Record<string, RpcHandlers[string]>;
  /** Set once the drain begins (after `drainDelay`): new connections are refused from then on. */
  #draining = false;
  /** The Prometheus registry, made at the first scrape. */
  #registry: Registry | undefined;
  /** The listener of `/metrics` when it has a port of its own. */
  #metricsServer: Server | undefined;

  constructor(config: GatewayConfig = {}, parts: GatewayParts = {}) {
    const options = (this.options = resolveOptions(config));
    this.apiKeyGenerated = options.apiKey === undefined;
    this.apiKey = options.apiKey ?? randomBytes(24).toString('base64url');
    this.log = parts.logger ?? createLogger(options.logLevel, options.logFormat);
    this.metrics = parts.metrics ?? (options.metrics ? new CounterMetrics() : NO_METRICS);
    this.nodeId = options.nodeId ?? randomBytes(4).toString('hex');
    this.#idPrefix = `${this.nodeId}-${randomBytes(4).toString('hex')}`;
    this.#ownsBroker = parts.broker === undefined;
    this.#broker = parts.broker ?? brokerFor(options, this.log);
    if (this.#broker.capabilities.shared && this.apiKeyGenerated) {
      throw new ConfigError([
        'a shared broker needs a configured API key (TIDINGS_API_KEY or apiKey): every node of a cluster must accept the same key, and a generated one differs per node',
      ]);
    }
    const origins = originPolicy(options.allowedOrigins);
    const clock = parts.clock ?? systemClock;
    const auth = parts.auth ?? authFor(options, origins, clock);
    // Filled in at listen() from `rpcModule` as well; the handlers below read it by reference.
    const rpc: Record<string, RpcHandlers[string]> = (this.#rpc = { ...parts.rpc });
    const repairLimit = Math.max(1000, ...Object.values(options.namespaces).map((n) => n.historySize));
    this.#hub = new Hub(this.#broker, { repairLimit, maxRepairQueue: options.maxResumeBuffer, linger: options.channelLinger }, (err, channel) => {
      this.log.error({ err, channel }, 'hub error');
    });
    const proxy = options.auth.proxy === undefined ? undefined : proxyHooks(options.auth.proxy.url, options.auth.proxy.timeout);
    const authorize: HooksHolder = (this.#authorize = { hooks: bothHooks(parts.authorize, proxy) });
    const publisher = new Publisher(this.#broker, options, auth, this.metrics, authorize, sampledLog(this.log, options.logSampleRate));
    this.#presence = new Presence(this.#broker, options.presenceTtl, (err, channel) => this.log.error({ err, channel }, 'presence error'));
    this.#control = new Control(
      this.#broker,
      {
        disconnectUser: (user, reason) => this.#disconnectUser(user, reason),
        refreshSession: (id, token) => {
          this.#sessions
            .get(id)
            ?.refresh(token)
            .catch(() => undefined);
        },
      },
      (err) => this.#unexpected('control', err, {}),
    );
    const ctx: SessionContext = {
      hub: this.#hub,
      broker: this.#broker,
      options,
      auth,
      metrics: this.metrics,
      nodeId: this.nodeId,
      idPrefix: this.#idPrefix,
      presence: this.#presence,
      authorize,
      clock,
    };
    const broker = this.#broker;
    // Listings read the broker once per channel at a time, however many ask (see presence-listings.ts).
    const listings = new PresenceListings(broker);
    /** Who is present in a channel, as a client (`identity`) or the server API (undefined) may see it. */
    const presenceFor =
      (identity: Identity | undefined) =>
      (channel: Channel): Promise<PresenceResult> =>
        listPresence(listings, options, auth, authorize, channel, identity);

    // One listener for every session (a closure per session would cost each connection two objects).
    const untrack = (session: Session): void => this.#untrack(session);
    const open = (transport: TransportName, sink: Sink, identity: Identity): Session => {
      const session: Session = new Session(ctx, sink, identity, untrack, transport);
      this.#sessions.set(session.id, session);
      this.metrics.connectionOpened(transport);
      // Asked first: the fields would be an object per connection even when debug is off.
      if (this.log.isLevelEnabled('debug')) this.log.debug({ session: session.id, transport, user: identity.user || undefined }, 'connect');
      session.watchExpiry();
      return session;
    };
    const draining = (): boolean => this.#draining;
    const pollGroups = (this.#pollGroups = new PollGroups(ctx, auth, options, (err, channel) => {
      if (err instanceof TidingsError) this.log.debug({ channel, code: err.code }, 'poll group not started');
      else this.#unexpected('hub', err, { channel });
    }));
    // Shared by every WebSocket's command handler (nothing per connection).
    const presenceLister = (channel: Channel, identity: Identity): Promise<PresenceResult> => listPresence(listings, options, auth, authorize, channel, identity);
    const commandError = (err: unknown, session: string): void => this.#unexpected('command', err, { session });
    const connector: Connector = {
      park: (req) => pollGroups.park(req),
      parkJoint: (req) => pollGroups.parkJoint(req),
      polled: (channel) => pollGroups.served(channel),
      open: (transport: StreamTransport, sink: Sink, identity: Identity) => open(transport, sink, identity),
      openDuplex: (sink: DuplexSink, identity: Identity) => {
        const session = open('websocket', sink, identity);
        return new DuplexSession(session, new CommandHandler(session, publisher, rpc, presenceLister, sink, sink, options, commandError));
      },
      get draining() {
        return draining();
      },
    };

    this.#ws = new WebSocketTransport({ ...options, closeGrace: CLOSE_GRACE }, connector, (err) => this.#unexpected('upgrade', err, {}));
    this.#sse = new SseTransport({ ...options, closeGrace: CLOSE_GRACE }, connector);
    const poll = new PollTransport(options, connector);
    const limits = { maxBody: options.maxBody, maxBatch: options.maxBatch };
    // Publishing is served on the fast lane too: one request per publication is what backends send.
    const send: LaneHandler = (req, res, a) => {
      // One-off publishes are rate-limited per user, or per address for anonymous clients.
      const sender = a.identity.anonymous ? `ip:${clientAddress(req, options.trustProxy)}` : `user:${a.identity.user}`;
      return handlePublish(req, res, publisher, { kind: 'client', identity: a.identity, sender }, limits);
    };
    const publish: LaneHandler = (req, res) => handlePublish(req, res, publisher, { kind: 'api' }, limits);

    const routes = new Map<string, Route>([
      [
        '/sse',
        { access: 'client', transport: 'sse', GET: this.#sse.handle, lane: { GET: this.#sse.handle }, stream: { contentType: 'text/event-stream; charset=utf-8' }, connection: { perUser: true } },
      ],
      [
        '/poll',
        { access: 'client', transport: 'poll', GET: poll.handle, lane: { GET: poll.handle }, stream: { contentType: 'application/json; charset=utf-8' }, connection: { perUser: false, charged: 'handler' } },
      ],
      ['/ws', { access: 'client', transport: 'websocket', upgrade: this.#ws.route, connection: { perUser: true } }],
      ['/send', { access: 'client', transport: 'http', POST: send, lane: { POST: send } }],
      [
        '/refresh',
        {
          access: 'public',
          transport: 'http',
          POST: (req, res) =>
            handleRefresh(
              req,
              res,
              (token) => (auth.refresh === undefined ? Promise.reject(new TidingsError('bad_request', 'this gateway has no tokens to refresh')) : auth.refresh({ user: '', anonymous: true }, token)),
              (id) => this.#sessions.get(id),
              (id, token, user) => this.#forwardRefresh(id, token, user),
              options.maxBody,
            ),
        },
      ],
      [
        '/api/disconnect',
        {
          access: 'api',
          transport: 'http',
          POST: async (req, res) => {
            const { user, reason } = disconnectRequest(await readJson(req, 64 * 1024));
            await this.#control.send({ op: 'disconnect', user, reason });
            sendJson(res, 200, { user, sent: true });
          },
        },
      ],
      ['/rpc', { access: 'client', transport: 'http', POST: (req, res, a) => handleRpc(req, res, rpc, a.identity, options.maxBody) }],
      ['/api/publish', { access: 'api', transport: 'http', POST: publish, lane: { POST: publish } }],
      ['/presence', { access: 'client', transport: 'http', GET: (_req, res, a) => handlePresence(res, a.target, presenceFor(a.identity)) }],
      ['/api/presence', { access: 'api', transport: 'http', GET: (_req, res, a) => handlePresence(res, a.target, presenceFor(undefined)) }],
      [
        '/healthz',
        {
          access: 'public',
          transport: 'http',
          GET: (_req, res) =>
            sendJson(res, 200, {
              status: 'ok',
              node: this.nodeId,
              connections: this.connections(),
              channels: this.#hub.channelCount,
              eventLoopDelayMs: this.#loopDelay(),
            }),
        },
      ],
      ['/readyz', { access: 'public', transport: 'http', GET: (_req, res) => this.#readiness(res) }],
    ]);
    if (options.metrics && options.metricsPort === 0) routes.set('/metrics', { access: 'public', transport: 'http', GET: (_req, res) => this.#scrape(res) });
    if (options.demo) {
      for (const path of ['/', '/index.html']) routes.set(path, { access: 'public', transport: 'http', GET: (_req, res) => demoPage(res) });
      routes.set('/tidings-client.js', { access: 'public', transport: 'http', GET: (_req, res) => publicFile(res, 'tidings-client.js') });
    }
    this.#admin = new Admin({
      sources: {
        node: this.nodeId,
        metrics: this.metrics,
        connections: () => this.connections(),
        broker: () => this.#brokerStatus,
        channelCount: () => this.#hub.channelCount,
        busiest: (n) => this.#hub.busiest(n),
        countPresent: async (channel) => (await broker.presence(channel)).length,
      },
      broker,
      publisher,
      options,
      apiKey: this.apiKey,
      log: this.log,
    });
    for (const [path, route] of this.#admin.routes()) routes.set(path, route);
    const admission = new Admission(routes, {
      auth,
      apiKey: this.apiKey,
      maxBody: options.maxBody,
      origins,
      gate: new ConnectionGate(options),
      users: new UserConnections(this.#broker, this.#presence, options.maxConnectionsPerUser, this.nodeId, `${this.#idPrefix}u`),
      trustProxy: options.trustProxy,
      draining,
      unexpected: (err, context) => this.#unexpected(context.upgrade === true ? 'upgrade' : 'request', err, context),
      refused: (code, context) => {
        this.metrics.refused(code);
        this.log.debug({ code, ...context }, 'refused');
      },
    });

    // A connection is silent until its first request (or upgrade) arrives. That is learned from the
    // request, not from a 'data' listener: one on an HTTP server's socket takes the socket off Node's
    // native read path (its parser reading the socket directly) for the rest of its life. The close
    // listener uses `this` (the socket) rather than a closure, and goes with the first request.
    const silent = this.#silent;
    function gone(this: Socket): void {
      silent.delete(this);
    }
    const spoke = (socket: Socket): void => {
      if (silent.delete(socket)) socket.off('close', gone);
    };
    // The answers Node's server has in flight on each connection (pipelined requests queue theirs),
    // each until it closes: a client error on the connection must not write into one already begun.
    // A connection's set goes with it. (A response lets go of its socket before it closes, so each
    // close listener keeps the set it is in.)
    const inFlight = new WeakMap<Duplex, Set<ServerResponse>>();
    const answering = (socket: Duplex, res: ServerResponse): void => {
      let open = inFlight.get(socket);
      if (open === undefined) inFlight.set(socket, (open = new Set()));
      open.add(res);
      res.on('close', () => open.delete(res));
    };
    const midAnswer = (socket: Duplex): boolean => {
      const open = inFlight.get(socket);
      if (open !== undefined) for (const res of open) if (res.headersSent) return true;
      return false;
    };
    this.server = createServer(
      {
        maxHeaderSize: MAX_HEADER_BYTES,
        headersTimeout: options.headersTimeout,
        requestTimeout: options.requestTimeout,
        connectionsCheckingInterval: Math.min(1000, options.headersTimeout),
        ServerResponse: GatewayResponse,
      },
      (req, res) => {
        spoke(req.socket);
        answering(req.socket, res);
        void admission.request(req, res);
      },
    );
    // Plain polls, streams and publishes are read and answered on the socket, without Node's request
    // and response objects; WebSocket upgrades are read there too, without Node's parser.
    const pathsWhere = (has: (route: Route) => boolean): Set<string> => new Set([...routes].filter(([, route]) => has(route)).map(([path]) => path));
    this.#lane = new FastLane(this.server, {
      routes: { GET: pathsWhere((r) => r.lane?.GET !== undefined), POST: pathsWhere((r) => r.lane?.POST !== undefined), UPGRADE: pathsWhere((r) => r.upgrade !== undefined) },
      maxBody: options.maxBody,
      serve: (req, res) => {
        spoke(req.socket);
        void admission.lane(req, res);
      },
      upgrade: (req, socket, head) => {
        spoke(socket);
        admission.upgrade(req, socket, head);
      },
    });
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      spoke(req.socket);
      if (wantsWebSocket(req)) admission.upgrade(req, socket, head);
      else answerAsPlain(req, socket, head, (r, s) => admission.request(r, s));
    });
    this.server.on('connection', (socket: Socket) => {
      silent.add(socket);
      socket.on('close', gone);
    });
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
      // A refusal written behind an answer whose head is out would land inside it (a stream's body):
      // the connection is cut instead, as Node's own handler does.
      if (err.code === 'ECONNRESET' || !socket.writable || midAnswer(socket)) {
        socket.destroy();
        return;
      }
      refuseOnSocket(socket, clientErrorOf(err));
    });
  }

  /** Starts the broker and listens; resolves with the bound address. */
  async listen(port = this.options.port, host = this.options.host): Promise<ListenInfo> {
    if (!this.#started) {
      if (this.options.authHook !== undefined) this.#authorize.hooks = bothHooks(this.#authorize.hooks, await loadHooks(this.options.authHook));
      if (this.options.rpcModule !== undefined) Object.assign(this.#rpc, await loadRpcModule(this.options.rpcModule));
      await this.#broker.start(
        {
          publication: (pub) =>
            pub.channel === CONTROL_CHANNEL ? this.#control.receive(pub) : pub.channel === ADMIN_CHANNEL ? this.#admin.receive(pub) : this.#hub.onPublication(pub),
          presence: this.#hub.onPresence,
          status: (status, reason) => this.#onBrokerStatus(status, reason),
        },
        brokerSettings(this.options),
      );
      this.#started = true;
      // Every module is loaded now, the hooks' and the RPC module's too (see fast-strings.ts).
      restoreFastStrings();
      this.#loop.enable();
      await this.#control.start();
      await this.#admin.start();
      this.#timers.push(setInterval(() => this.#ws.heartbeat(), this.#ws.heartbeatTick).unref());
      this.#timers.push(setInterval(() => this.#sse.heartbeat(), this.#sse.heartbeatTick).unref());
      // A feed that cannot lose a publication has no lost tail to find.
      if (this.#broker.capabilities.lossless !== true) this.#timers.push(setInterval(() => this.#checkPositions(), this.options.positionCheck).unref());
      // Well within the TTL: two refreshes can fail in a row before an entry of this live node expires.
      this.#timers.push(setInterval(() => this.#refreshPresence(), Math.floor(this.options.presenceTtl / 3)).unref());
    }
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const addr = this.server.address() as AddressInfo;
    const metricsPort = this.options.metrics && this.options.metricsPort > 0 ? await this.#listenMetrics(this.options.metricsPort, host) : undefined;
    const shown = host === '0.0.0.0' || host === '::' ? 'localhost' : host;
    const url = `http://${shown.includes(':') ? `[${shown}]` : shown}:${addr.port}`;
    this.#listeningAt = Date.now();
    this.log.info({ url, node: this.nodeId, broker: this.options.broker.replace(/\/\/[^@/]*@/, '//***@') }, 'listening');
    return { host: addr.address, port: addr.port, url, ...(metricsPort === undefined ? {} : { metricsPort }) };
  }

  /** Serves `/metrics` alone on a port of its own (every other path: 404). */
  async #listenMetrics(port: number, host: string): Promise<number> {
    const { headersTimeout, requestTimeout } = this.options;
    const server = (this.#metricsServer ??= createServer(
      // A scraper's request is small and answered at once: its head has the smallest bound, and a
      // connection that never finishes one is cut as on the main port.
      { maxHeaderSize: 8192, headersTimeout, requestTimeout, connectionsCheckingInterval: Math.min(1000, headersTimeout) },
      (req, res) => {
        if (req.method === 'GET' && (req.url ?? '').split('?')[0] === '/metrics') this.#scrape(res);
        else sendJson(res, 404, { error: { code: 'not_found', reason: 'only GET /metrics is served on this port' } });
      },
    ));
    // Scrapers are a few: past this, a connection is closed as it arrives.
    server.maxConnections = METRICS_MAX_CONNECTIONS;
    if (!server.listening) {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          resolve();
        });
      });
    }
    return (server.address() as AddressInfo).port;
  }

  /** Answers a Prometheus scrape; 404 when the host supplied its own {@link Metrics}, which the exporter cannot read. */
  #scrape(res: ServerResponse): void {
    const m = this.metrics;
    if (!(m instanceof CounterMetrics)) {
      sendJson(res, 404, { error: { code: 'not_found', reason: 'metrics are kept by the host application' } });
      return;
    }
    this.#registry ??= prometheusRegistry(m, {
      node: this.nodeId,
      subscriptions: () => this.#hub.stats().subscribers,
      channels: () => this.#hub.channelCount,
      bufferedBytes: () => {
        let bytes = 0;
        for (const session of this.#sessions.values()) bytes += session.sink.bufferedBytes;
        return bytes;
      },
      presenceEntries: () => this.#presence.size,
    });
    const registry = this.#registry;
    registry.metrics().then(
      (text) => {
        res.writeHead(200, { 'content-type': registry.contentType, 'cache-control': 'no-store' });
        res.end(text);
      },
      (err: unknown) => {
        this.#unexpected('request', err, { path: '/metrics' });
        if (!res.headersSent) sendJson(res, 500, { error: { code: 'internal', reason: 'metrics failed' } });
      },
    );
  }

  /** Connected sessions per transport. */
  connections(): Record<TransportName, number> {
    const counts: Record<TransportName, number> = { websocket: 0, sse: 0, poll: 0, http: 0 };
    for (const session of this.#sessions.values()) counts[session.transport] += 1;
    return counts;
  }

  /** What the gateway holds right now. */
  stats(): GatewayStats {
    return {
      node: this.nodeId,
      broker: this.#brokerStatus,
      connections: this.connections(),
      sessions: this.#sessions.size,
      hub: this.#hub.stats(),
      presence: this.#presence.size,
      polls: this.#pollGroups.stats(),
    };
  }

  #onBrokerStatus(status: BrokerStatus, reason: string): void {
    this.metrics.brokerStatus(status);
    if (status !== this.#brokerStatus) this.log[status === 'down' ? 'warn' : 'info']({ status, reason }, 'broker status');
    this.#brokerStatus = status === 'reset' ? 'up' : status;
    this.#brokerReason = reason;
    this.#hub.onStatus(status);
    if (status === 'reset') this.#presence.reassert();
  }

  /** 200 when this node can take traffic; 503 with a reason while its broker is down or it drains. */
  #readiness(res: ServerResponse): void {
    const reason = this.#closing !== undefined ? 'draining' : this.#brokerStatus === 'down' ? `broker down: ${this.#brokerReason}` : undefined;
    sendJson(res, reason === undefined ? 200 : 503, reason === undefined ? { ready: true, node: this.nodeId } : { ready: false, node: this.nodeId, reason }, reason === undefined ? {} : { 'retry-after': '1' });
  }

  /** Closes every client connection with `name` (default: restart, "come back now"). */
  disconnectAll(name: CloseName = 'restart', reason = 'server restarting'): void {
    for (const session of [...this.#sessions.values()]) session.close(name, reason);
  }

  /**
   * Graceful stop: refuse new work (`/readyz` answers 503), tell every client to come back
   * elsewhere, wait for connections to finish within `shutdownTimeout`, cut the rest, close the
   * broker. Calling it again returns the same promise.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close().then(() => {
      this.log.info({ node: this.nodeId, upMs: this.#listeningAt === undefined ? 0 : Date.now() - this.#listeningAt }, 'stopped');
    });
    return this.#closing;
  }

  async #close(): Promise<void> {
    // Not ready at once (the load balancer stops sending new clients), while everything else goes on.
    if (this.options.drainDelay > 0) await new Promise((r) => setTimeout(r, this.options.drainDelay));
    this.#draining = true;
    this.#loop.disable();
    for (const t of this.#timers) clearInterval(t);
    this.#timers = [];
    const deadline = setTimeout(() => {
      this.server.closeAllConnections();
      this.#lane.destroyAll();
      this.#ws.terminateAll();
      this.#sse.destroyAll();
    }, this.options.shutdownTimeout);
    // Draining: /readyz answers 503 and new connections are refused while the listener stays open,
    // so a load balancer sees it; clients are sent elsewhere in waves rather than all at once.
    await this.#drainInWaves(Math.min(this.options.drainWindow, this.options.shutdownTimeout / 2));
    const serverClosed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.disconnectAll('restart', 'server shutting down');
    this.#pollGroups.close();
    const adminClosed = this.#admin.close();
    // Answered polls and ended streams leave keep-alive connections idle: close those as they appear.
    const closeIdle = (): void => {
      this.server.closeIdleConnections();
      this.#lane.closeIdle();
      for (const socket of this.#silent) socket.destroy();
    };
    const idle = setInterval(closeIdle, 50);
    closeIdle();
    try {
      await Promise.all([serverClosed, this.#ws.allClosed()]);
    } finally {
      clearInterval(idle);
      clearTimeout(deadline);
    }
    if (this.#metricsServer !== undefined) {
      const metricsServer = this.#metricsServer;
      await new Promise<void>((resolve) => {
        metricsServer.close(() => resolve());
        metricsServer.closeAllConnections();
      });
    }
    await adminClosed;
    await this.#control.stop().catch(() => undefined);
    this.#hub.close();
    // The goodbyes of the sessions just closed: their presence entries are removed, not left to expire.
    await this.#presence.settled(CLOSE_GRACE);
    if (this.#ownsBroker) await this.#broker.close();
  }

  /** The event loop's delay since the previous call (max, p99, mean in ms), then starts a new window. */
  #loopDelay(): { max: number; p99: number; mean: number } {
    const ms = (ns: number): number => (Number.isFinite(ns) ? Math.round(ns / 1e4) / 100 : 0);
    const out = { max: ms(this.#loop.max), p99: ms(this.#loop.percentile(99)), mean: ms(this.#loop.mean) };
    this.#loop.reset();
    return out;
  }

  /** Closes every connection of `user` on this node (a `disconnect` order); resolves with how many. */
  #disconnectUser(user: string, reason: string): number {
    let n = 0;
    for (const session of [...this.#sessions.values()]) {
      if (session.identity.anonymous || session.identity.user !== user) continue;
      session.close('unauthorized', reason);
      n += 1;
    }
    if (n > 0) this.log.info({ user, connections: n }, 'disconnected a user');
    return n;
  }

  /** A refresh for a session another node holds: check the token here, then send it there. False when no node can hold it. */
  /** Hands a refresh (its token checked) to the node named in `session`; false when no other node could hold it. */
  async #forwardRefresh(session: string, token: string, user: string): Promise<boolean> {
    const dash = session.lastIndexOf('-');
    const node = dash === -1 ? '' : session.slice(0, dash);
    if (node === '' || node === this.nodeId || !this.#broker.capabilities.shared) return false;
    // Every node reads every control order: what one request costs is paid by the whole cluster, so
    // forwards are rationed per user (a stream refreshes once per token) and for the node.
    if (!this.#forwardsByUser.take(user) || !this.#forwards.take()) {
      const wait = Math.max(this.#forwardsByUser.wait(user), this.#forwards.wait);
      throw new RetryLater('limit_exceeded', 'too many refreshes forwarded to other nodes; wait', wait);
    }
    await this.#control.send({ op: 'refresh', session, token });
    return true;
  }

  /** Closes the sessions open now with `restart` in `WAVES` waves spread evenly over `window` ms. */
  async #drainInWaves(window: number): Promise<void> {
    const sessions = [...this.#sessions.values()];
    if (window <= 0 || sessions.length === 0) return;
    const waves = Math.min(DRAIN_WAVES, sessions.length);
    const per = Math.ceil(sessions.length / waves);
    for (let i = 0; i < waves; i++) {
      for (const session of sessions.slice(i * per, (i + 1) * per)) session.close('restart', 'server shutting down; reconnect');
      if (i < waves - 1) await new Promise((r) => setTimeout(r, window / waves));
    }
  }

  #untrack(session: Session): void {
    if (this.#sessions.get(session.id) !== session) return;
    this.#sessions.delete(session.id);
    const { transport } = session;
    const reason = session.closedAs ?? 'client_gone';
    this.metrics.connectionClosed(transport, reason);
    // A shed slow consumer is worth an operator's attention; ordinary comings and goings are debug.
    const level = reason === 'slow_consumer' ? 'info' : 'debug';
    if (!this.log.isLevelEnabled(level)) return;
    this.log[level]({ session: session.id, transport, user: session.identity.user || undefined, durationMs: Date.now() - session.openedAt, reason }, 'disconnect');
  }

  /** A bug: logged with its context and counted; the client got a coded `internal` error. */
  #unexpected(site: ErrorSite, err: unknown, context: Record<string, unknown>): void {
    this.metrics.unexpectedError(site);
    this.log.error({ err, site, ...context }, 'unexpected error');
  }

  #checking = false;
  #refreshing = false;

  /** One presence refresh at a time; a slow broker makes them rarer, never overlapping. */
  #refreshPresence(): void {
    if (this.#refreshing) return;
    this.#refreshing = true;
    this.#presence
      .refresh()
      .catch((err: unknown) => this.log.error({ err }, 'presence refresh failed'))
      .finally(() => {
        this.#refreshing = false;
      });
  }

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
}

/** Creates a gateway; call `listen()` to start it. */
export function createGateway(config: GatewayConfig = {}, parts: GatewayParts = {}): Gateway {
  return new Gateway(config, parts);
}
