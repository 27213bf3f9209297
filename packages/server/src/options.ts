/**
 * Gateway options: one frozen DEFAULTS object, a loader that layers file, environment and flags over
 * it, and validation that fails fast at start-up with every problem named.
 * @module
 */
import { readFileSync } from 'node:fs';
import { publicKeyProblem } from './jwt.js';

/**
 * What a connection gets of a namespace's publications while it is a slow consumer (more than
 * `maxBufferedBytes` waiting for it):
 * - `drop`: they are left out for that connection (ephemeral namespaces only);
 * - `conflate`: only the latest pending publication per channel and `type` is kept for that
 *   connection, and delivered once its backlog drains (ephemeral namespaces only);
 * - `disconnect`: the connection is closed `slow_consumer` and the client resumes from its position.
 */
export type Backpressure = 'drop' | 'conflate' | 'disconnect';

/** Per-namespace channel policy. */
export interface NamespaceOptions {
  /** Most publications kept per channel for resume (0 with `ephemeral`). */
  readonly historySize: number;
  /** How long a publication stays in history, in seconds. */
  readonly historyTtl: number;
  /** Whether connected clients (WebSocket, `POST /send`) may publish. */
  readonly clientPublish: boolean;
  /** Skip history entirely: positions are still assigned, but there is no resume and no gap. */
  readonly ephemeral: boolean;
  /**
   * Track who is subscribed (WebSocket and SSE clients): subscribers get `join` / `leave` events, and
   * `GET /api/presence`, `GET /presence` and the `presence` frame list who is there.
   */
  readonly presence: boolean;
  /** With JWT authentication: anyone may subscribe here, with or without a token. */
  readonly anonymous: boolean;
  /**
   * What a slow consumer gets of this namespace ({@link Backpressure}). Unless set: `drop` in an
   * ephemeral namespace, `disconnect` otherwise. `drop` and `conflate` need `ephemeral`: in a namespace
   * with history a publication left out for one connection would be a silent loss.
   */
  readonly backpressure: Backpressure;
}

/** JWT verification: configure exactly one of `secret`, `publicKey` and `jwksUrl`. */
export interface JwtConfig {
  /** HS256 shared secret, at least 32 bytes (`TIDINGS_JWT_SECRET`). */
  readonly secret?: string;
  /** PEM public key: RSA (RS256), P-256 (ES256) or Ed25519 (EdDSA). */
  readonly publicKey?: string;
  /** JWKS endpoint, cached and fetched again for an unknown `kid` (`TIDINGS_JWKS_URL`). */
  readonly jwksUrl?: string;
  /** Least ms between two JWKS fetches for unknown `kid`s. */
  readonly jwksCooldown?: number;
  /** Required `aud`. */
  readonly audience?: string;
  /** Required `iss`. */
  readonly issuer?: string;
}

/** How clients authenticate. */
export interface AuthConfig {
  /** Verify a JWT at every connection; undefined: everyone is anonymous and may subscribe anywhere. */
  readonly jwt?: JwtConfig;
  /** The cookie a token may come in. */
  readonly cookie: string;
  /** An HTTP authorization callout asked for every subscribe and client publish (see authorize.ts). */
  readonly proxy?: { readonly url: string; readonly timeout?: number };
}

/** Every gateway option. Durations are in milliseconds unless the name says otherwise. */
export interface GatewayOptions {
  readonly host: string;
  readonly port: number;
  /** API key for `POST /api/publish`; undefined means "generate one at start-up". */
  readonly apiKey: string | undefined;
  /** Namespace name ("" is the default namespace) to policy. Channels in other namespaces are refused. */
  readonly namespaces: Readonly<Record<string, NamespaceOptions>>;
  /** Largest WebSocket frame or HTTP body accepted, in bytes. */
  readonly maxPayload: number;
  /** Largest HTTP request body accepted (a publish batch), in bytes. */
  readonly maxBody: number;
  /** Most publications in one `POST /api/publish` batch. */
  readonly maxBatch: number;
  /** Most channels one connection may subscribe to. */
  readonly maxSubscriptions: number;
  /** Bytes queued for one connection before it is treated as a slow consumer. */
  readonly maxBufferedBytes: number;
  /** Most live publications held per subscription while its history is read. */
  readonly maxResumeBuffer: number;
  /** Most messages returned by one long poll. */
  readonly maxPollMessages: number;
  /**
   * Bytes this node's poll groups may hold, over all of them: their recent publications (for polls a
   * little behind) and the answers they made for them. Past it a group keeps fewer, and a poll further
   * behind takes the ordinary path (a history read).
   */
  readonly maxPollGroupBytes: number;
  /** Idempotency window for publishes with a key. */
  readonly dedupWindow: number;
  /** Most idempotency keys remembered per channel within the window. */
  readonly dedupMaxKeys: number;
  /** Most channel streams (positions plus history) kept by the in-memory broker. */
  readonly maxChannels: number;
  readonly pingInterval: number;
  /** How often each joined channel's latest position is compared with the live feed, to repair a lost tail. */
  readonly positionCheck: number;
  readonly sseHeartbeat: number;
  /** `retry:` hint sent to SSE clients; each stream gets up to 50% random extra. */
  readonly sseRetry: number;
  readonly pollTimeout: number;
  /** Consecutive malformed frames before a WebSocket is closed as not speaking the protocol. */
  readonly maxBadFrames: number;
  /** Pino log level, or `silent`. */
  readonly logLevel: string;
  /** `json` lines, `pretty` (colored, for people), or `auto`: pretty on a terminal, JSON otherwise. */
  readonly logFormat: 'auto' | 'json' | 'pretty';
  /** Share of per-message records (publications, dropped messages) written at debug: 0 none, 1 every one. */
  readonly logSampleRate: number;
  /** Count events and serve them as Prometheus metrics at `GET /metrics` (false: count nothing). */
  readonly metrics: boolean;
  /** A port of its own for `/metrics` (then not served on the main port); 0: the main port. */
  readonly metricsPort: number;
  /** A token that opens `/admin` (the API key always does); undefined: only the API key. */
  readonly adminToken: string | undefined;
  /** Serve the demo page and its namespaces (`demo`, `typing`), where anonymous clients may publish. */
  readonly demo: boolean;
  /** Total bytes the in-memory broker may hold in history and idempotency keys; past it, publishes are refused (`storage_full`). */
  readonly maxHistoryBytes: number;
  /** Requests (subscribe, publish, rpc) one WebSocket may have running at once; later ones wait while it stops reading. */
  readonly maxInflight: number;
  /** Time allowed to receive a request's headers; then 408. */
  readonly headersTimeout: number;
  /** Time allowed to receive a whole request (headers and body); then 408. */
  readonly requestTimeout: number;
  /** Graceful shutdown's deadline: connections still open then are cut. */
  readonly shutdownTimeout: number;
  /**
   * On SIGTERM, clients are told to reconnect elsewhere in waves spread over this window (ms), not all
   * at once, while `/readyz` answers 503 and new connections are refused; at most half of
   * `shutdownTimeout` is used, so the rest finishes in time.
   */
  readonly drainWindow: number;
  /**
   * On SIGTERM, `/readyz` answers 503 at once and everything else is served as usual for this long (ms),
   * so load balancers and Kubernetes take the node out of rotation before the drain begins.
   */
  readonly drainDelay: number;
  /**
   * Where positions, history and live traffic live: `memory` (one node, the default), `redis://host:port`
   * or `nats://host:port` (nodes sharing it form one cluster).
   */
  readonly broker: string;
  /** This node's id in a cluster (session ids start with it); undefined: a random one per process. */
  readonly nodeId: string | undefined;
  /** How long a channel stays subscribed at the broker after its last subscriber on this node left, in ms. */
  readonly channelLinger: number;
  /**
   * Presence entries of a node that dies without saying goodbye expire within this (plus the broker's
   * sweep); each node refreshes its own entries every third of it.
   */
  readonly presenceTtl: number;
  /** Client authentication (JWT) and the authorization callout. */
  readonly auth: AuthConfig;
  /** A module whose `subscribe` / `publish` exports authorize subscribes and client publishes (`--auth-hook ./authz.mjs`). */
  readonly authHook: string | undefined;
  /** A module whose exported functions answer client requests by name (`--rpc-module ./handlers.mjs`). */
  readonly rpcModule: string | undefined;
  /** Open client connections (WebSocket, SSE, long polls) per node; past it, 503 with Retry-After. */
  readonly maxConnections: number;
  /** Open client connections per IP address, per node (0: no limit); past it, 429 `limit_exceeded`. */
  readonly maxConnectionsPerIp: number;
  /** WebSocket and SSE connections per authenticated user, across the cluster (0: no limit); past it, 429. */
  readonly maxConnectionsPerUser: number;
  /**
   * New client connections per second per node (reconnect storms): excess handshakes get 503 / close
   * 4503 with when to retry. A long poll its channel's poll group takes (it continues at a position
   * the group holds) is not a new connection; any other poll is.
   */
  readonly maxConnectRate: number;
  /** New client connections per second per IP address, per node (0: no limit); past it, 429 with when to retry. */
  readonly maxConnectRatePerIp: number;
  /** Inbound WebSocket frames per second per connection (twice that in a burst); excess frames get `limit_exceeded`. */
  readonly maxFrameRate: number;
  /** Client publishes per second per connection, or per user (or IP) on `POST /send` (twice that in a burst). */
  readonly maxPublishRate: number;
  /** Client publishes per second per channel, per node (twice that in a burst; 0: no limit). */
  readonly maxChannelPublishRate: number;
  /** Take the client's IP from the last `X-Forwarded-For` entry (behind a proxy you run), not the socket. */
  readonly trustProxy: boolean;
  /**
   * Browser origins (`https://app.example.com`) allowed to connect with credentials: WebSocket upgrades
   * from others are refused, CORS names only these (with credentials), and cookie tokens count only from
   * them. Empty: any origin, CORS `*`, and cookie tokens only from the gateway's own origin.
   */
  readonly allowedOrigins: readonly string[];
}

export const DEFAULT_NAMESPACE: NamespaceOptions = Object.freeze({
  historySize: 100,
  historyTtl: 300,
  clientPublish: false,
  ephemeral: false,
  presence: false,
  anonymous: false,
  backpressure: 'disconnect',
});

/** Namespaces added by `demo: true` (`tidings serve --demo`): anonymous clients may publish there. */
export const DEMO_NAMESPACES: Readonly<Record<string, NamespaceOptions>> = Object.freeze({
  demo: Object.freeze({ historySize: 200, historyTtl: 3600, clientPublish: true, ephemeral: false, presence: false, anonymous: true, backpressure: 'disconnect' }),
  typing: Object.freeze({ historySize: 0, historyTtl: 0, clientPublish: true, ephemeral: true, presence: false, anonymous: true, backpressure: 'drop' }),
});

export const DEFAULTS: GatewayOptions = Object.freeze({
  host: '0.0.0.0',
  port: 8080,
  apiKey: undefined,
  namespaces: Object.freeze({ '': DEFAULT_NAMESPACE }),
  maxPayload: 64 * 1024,
  maxBody: 1024 * 1024,
  maxBatch: 1000,
  maxSubscriptions: 128,
  maxBufferedBytes: 4 * 1024 * 1024,
  maxResumeBuffer: 10_000,
  maxPollMessages: 1000,
  maxPollGroupBytes: 64 * 1024 * 1024,
  dedupWindow: 120_000,
  dedupMaxKeys: 10_000,
  maxChannels: 100_000,
  pingInterval: 25_000,
  positionCheck: 10_000,
  sseHeartbeat: 15_000,
  sseRetry: 1_000,
  pollTimeout: 25_000,
  maxBadFrames: 20,
  logLevel: 'info',
  logFormat: 'auto',
  logSampleRate: 0.01,
  metrics: true,
  metricsPort: 0,
  adminToken: undefined,
  demo: false,
  maxHistoryBytes: 256 * 1024 * 1024,
  maxInflight: 64,
  headersTimeout: 10_000,
  requestTimeout: 30_000,
  shutdownTimeout: 10_000,
  drainWindow: 3000,
  drainDelay: 0,
  broker: 'memory',
  nodeId: undefined,
  channelLinger: 10_000,
  presenceTtl: 30_000,
  auth: Object.freeze({ cookie: 'tidings_token' }),
  authHook: undefined,
  rpcModule: undefined,
  allowedOrigins: Object.freeze([]),
  maxConnections: 50_000,
  maxConnectionsPerIp: 1000,
  maxConnectionsPerUser: 5,
  maxConnectRate: 2000,
  maxConnectRatePerIp: 200,
  maxFrameRate: 100,
  maxPublishRate: 20,
  maxChannelPublishRate: 1000,
  trustProxy: false,
});

/** Options as a user writes them: any subset, namespaces partial too. */
export type GatewayConfig = Partial<Omit<GatewayOptions, 'namespaces' | 'auth'>> & {
  namespaces?: Record<string, Partial<NamespaceOptions>>;
  auth?: { jwt?: JwtConfig; cookie?: string; proxy?: { url: string; timeout?: number } };
};

/** Raised when configuration is invalid; `problems` lists every one. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(readonly problems: readonly string[]) {
    super(`invalid configuration:\n  - ${problems.join('\n  - ')}`);
  }
}

const NUMBER_LIMITS: Record<string, readonly [number, number]> = {
  port: [0, 65535],
  maxPayload: [64, 16 * 1024 * 1024],
  maxBody: [64, 256 * 1024 * 1024],
  maxBatch: [1, 100_000],
  maxSubscriptions: [1, 10_000],
  maxBufferedBytes: [1024, 1024 * 1024 * 1024],
  maxResumeBuffer: [1, 1_000_000],
  maxPollMessages: [1, 100_000],
  maxPollGroupBytes: [0, 2 ** 40],
  dedupWindow: [0, 86_400_000],
  dedupMaxKeys: [0, 10_000_000],
  maxChannels: [1, 100_000_000],
  pingInterval: [100, 3_600_000],
  positionCheck: [50, 3_600_000],
  sseHeartbeat: [100, 3_600_000],
  sseRetry: [0, 3_600_000],
  pollTimeout: [100, 300_000],
  maxBadFrames: [1, 1_000_000],
  maxHistoryBytes: [64 * 1024, 2 ** 40],
  maxInflight: [1, 100_000],
  headersTimeout: [100, 600_000],
  requestTimeout: [100, 3_600_000],
  shutdownTimeout: [0, 600_000],
  drainWindow: [0, 600_000],
  drainDelay: [0, 600_000],
  metricsPort: [0, 65535],
  channelLinger: [0, 3_600_000],
  presenceTtl: [300, 3_600_000],
  maxConnections: [1, 10_000_000],
  maxConnectionsPerIp: [0, 10_000_000],
  maxConnectionsPerUser: [0, 1_000_000],
  maxConnectRate: [1, 10_000_000],
  maxConnectRatePerIp: [0, 10_000_000],
  maxFrameRate: [1, 10_000_000],
  maxPublishRate: [1, 10_000_000],
  maxChannelPublishRate: [0, 10_000_000],
};
const BOOLEANS = ['demo', 'trustProxy', 'metrics'];
const LOG_FORMATS = ['auto', 'json', 'pretty'];
const BROKER_URL = /^(memory|(redis|rediss|nats|tls):\/\/\S+)$/;
const NODE_ID = /^[A-Za-z0-9_-]{1,32}$/;
const NS_LIMITS: Record<string, readonly [number, number]> = {
  historySize: [0, 1_000_000],
  historyTtl: [0, 30 * 86_400],
};
const BACKPRESSURE: readonly Backpressure[] = ['drop', 'conflate', 'disconnect'];
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
/** Namespace names; a leading `_` is reserved for internal namespaces. */
const NS_NAME = /^(?!_)[A-Za-z0-9_-]{0,32}$/;

function checkInt(problems: string[], where: string, value: unknown, [min, max]: readonly [number, number]): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    problems.push(`${where} must be an integer from ${min} to ${max} (got ${JSON.stringify(value)})`);
  }
}

function resolveNamespaces(problems: string[], input: unknown, demo: boolean): Record<string, NamespaceOptions> {
  const out: Record<string, NamespaceOptions> = { ...DEFAULTS.namespaces, ...(demo ? DEMO_NAMESPACES : {}) };
  if (input === undefined) return out;
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    problems.push('namespaces must be an object of namespace name to options');
    return out;
  }
  for (const [name, raw] of Object.entries(input as Record<string, unknown>)) {
    if (!NS_NAME.test(name)) {
      problems.push(`namespace name '${name}' must be up to 32 letters, digits, _ or - (not starting with _)`);
      continue;
    }
    if (typeof raw !== 'object' || raw === null) {
      problems.push(`namespaces.${name} must be an object`);
      continue;
    }
    const merged: Record<string, unknown> = { ...DEFAULT_NAMESPACE, ...(out[name] ?? {}), ...raw };
    for (const key of Object.keys(raw)) {
      if (!Object.hasOwn(DEFAULT_NAMESPACE, key)) problems.push(`namespaces.${name}.${key} is not an option`);
    }
    for (const [key, limits] of Object.entries(NS_LIMITS)) checkInt(problems, `namespaces.${name}.${key}`, merged[key], limits);
    for (const key of ['clientPublish', 'ephemeral', 'presence', 'anonymous']) {
      if (typeof merged[key] !== 'boolean') problems.push(`namespaces.${name}.${key} must be true or false`);
    }
    // Not set here: follows `ephemeral` (what a namespace it overrides had was itself such a default).
    if ((raw as Record<string, unknown>).backpressure === undefined) merged.backpressure = merged.ephemeral === true ? 'drop' : 'disconnect';
    const bp = merged.backpressure;
    if (!(BACKPRESSURE as readonly unknown[]).includes(bp)) {
      problems.push(`namespaces.${name}.backpressure must be one of ${BACKPRESSURE.join(', ')} (got ${JSON.stringify(bp)})`);
    } else if (bp !== 'disconnect' && merged.ephemeral === false) {
      problems.push(
        `namespaces.${name}.backpressure '${String(bp)}' needs ephemeral: true: this namespace keeps history and positions, so a publication ` +
          `${bp === 'drop' ? 'dropped' : 'conflated away'} for a slow consumer would be a silent loss; use 'disconnect' (the client resumes from its position)`,
      );
    }
    const ns = merged as unknown as NamespaceOptions;
    out[name] = Object.freeze(ns.ephemeral ? { ...ns, historySize: 0, historyTtl: 0 } : ns);
  }
  return out;
}

const JWT_STRINGS = ['secret', 'publicKey', 'jwksUrl', 'audience', 'issuer'] as const;
const COOKIE_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$/;

function resolveAuth(problems: string[], input: unknown): AuthConfig {
  if (input === undefined) return DEFAULTS.auth;
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    problems.push('auth must be an object');
    return DEFAULTS.auth;
  }
  const raw = input as Record<string, unknown>;
  for (const key of Object.keys(raw)) if (!['jwt', 'cookie', 'proxy'].includes(key)) problems.push(`auth.${key} is not an option`);
  let proxy: AuthConfig['proxy'];
  if (raw.proxy !== undefined) {
    const p = raw.proxy as { url?: unknown; timeout?: unknown };
    if (typeof p !== 'object' || p === null || typeof p.url !== 'string' || !/^https?:\/\/\S+$/.test(p.url)) {
      problems.push('auth.proxy must be { "url": "http(s)://...", "timeout"?: ms }');
    } else {
      if (p.timeout !== undefined) checkInt(problems, 'auth.proxy.timeout', p.timeout, [1, 60_000]);
      proxy = Object.freeze({ url: p.url, ...(typeof p.timeout === 'number' ? { timeout: p.timeout } : {}) });
    }
  }
  let cookie = DEFAULTS.auth.cookie;
  if (raw.cookie !== undefined) {
    if (typeof raw.cookie === 'string' && COOKIE_NAME.test(raw.cookie)) cookie = raw.cookie;
    else problems.push('auth.cookie must be a cookie name');
  }
  const base: AuthConfig = proxy === undefined ? { cookie } : { cookie, proxy };
  if (raw.jwt === undefined) return Object.freeze(base);
  if (typeof raw.jwt !== 'object' || raw.jwt === null || Array.isArray(raw.jwt)) {
    problems.push('auth.jwt must be an object');
    return Object.freeze(base);
  }
  const jwt = raw.jwt as Record<string, unknown>;
  for (const key of Object.keys(jwt)) {
    if (!(JWT_STRINGS as readonly string[]).includes(key) && key !== 'jwksCooldown') problems.push(`auth.jwt.${key} is not an option`);
  }
  for (const key of JWT_STRINGS) if (jwt[key] !== undefined && (typeof jwt[key] !== 'string' || jwt[key] === '')) problems.push(`auth.jwt.${key} must be a non-empty string`);
  if (jwt.jwksCooldown !== undefined) checkInt(problems, 'auth.jwt.jwksCooldown', jwt.jwksCooldown, [0, 3_600_000]);
  const keys = ['secret', 'publicKey', 'jwksUrl'].filter((k) => jwt[k] !== undefined);
  if (keys.length !== 1) problems.push(`auth.jwt needs exactly one of secret, publicKey and jwksUrl (got ${keys.length === 0 ? 'none' : keys.join(', ')})`);
  if (typeof jwt.secret === 'string' && Buffer.byteLength(jwt.secret) < 32) problems.push('auth.jwt.secret must be at least 32 bytes');
  if (typeof jwt.jwksUrl === 'string' && !/^https?:\/\/\S+$/.test(jwt.jwksUrl)) problems.push('auth.jwt.jwksUrl must be an http(s) URL');
  const keyProblem = typeof jwt.publicKey === 'string' && jwt.publicKey !== '' ? publicKeyProblem(jwt.publicKey) : undefined;
  if (keyProblem !== undefined) problems.push(keyProblem);
  return Object.freeze({ ...base, jwt: Object.freeze({ ...jwt }) });
}

/** A secret sent as `Authorization: Bearer <secret>`: a header value of one token, so no space in it. */
const isSecret = (value: unknown): boolean => typeof value === 'string' && value.length >= 16 && /^[\x21-\x7e]+$/.test(value);
const SECRET_RULE = 'must be a string of at least 16 visible ASCII characters, with no spaces (it is sent as Authorization: Bearer <secret>)';

/** Merges a config over DEFAULTS and validates it; throws {@link ConfigError} naming every problem. */
export function resolveOptions(config: GatewayConfig = {}): GatewayOptions {
  const problems: string[] = [];
  for (const key of Object.keys(config)) {
    // Own keys only: `toString` or `__proto__` are not options because every object has them.
    if (!Object.hasOwn(DEFAULTS, key)) problems.push(`${key} is not an option`);
  }
  const merged = { ...DEFAULTS, ...config } as Record<string, unknown>;
  for (const [key, limits] of Object.entries(NUMBER_LIMITS)) checkInt(problems, key, merged[key], limits);
  if (typeof merged.host !== 'string' || merged.host === '') problems.push('host must be a non-empty string');
  if (merged.apiKey !== undefined && !isSecret(merged.apiKey)) problems.push(`apiKey ${SECRET_RULE}`);
  if (typeof merged.logLevel !== 'string' || !LOG_LEVELS.includes(merged.logLevel)) {
    problems.push(`logLevel must be one of ${LOG_LEVELS.join(', ')}`);
  }
  if (typeof merged.logFormat !== 'string' || !LOG_FORMATS.includes(merged.logFormat)) problems.push(`logFormat must be one of ${LOG_FORMATS.join(', ')}`);
  if (typeof merged.logSampleRate !== 'number' || !(merged.logSampleRate >= 0 && merged.logSampleRate <= 1)) {
    problems.push(`logSampleRate must be a number from 0 to 1 (got ${JSON.stringify(merged.logSampleRate)})`);
  }
  if (merged.adminToken !== undefined && !isSecret(merged.adminToken)) problems.push(`adminToken ${SECRET_RULE}`);
  if (merged.metricsPort !== 0 && merged.metricsPort === merged.port) problems.push('metricsPort must differ from port (0 serves /metrics on port)');
  for (const key of BOOLEANS) if (typeof merged[key] !== 'boolean') problems.push(`${key} must be true or false`);
  if (typeof merged.broker !== 'string' || !BROKER_URL.test(merged.broker)) {
    problems.push(`broker must be memory, redis://host:port or nats://host:port (got ${JSON.stringify(merged.broker)})`);
  }
  if (merged.authHook !== undefined && (typeof merged.authHook !== 'string' || merged.authHook === '')) problems.push('authHook must be a module path');
  if (merged.rpcModule !== undefined && (typeof merged.rpcModule !== 'string' || merged.rpcModule === '')) problems.push('rpcModule must be a module path');
  if (merged.nodeId !== undefined && (typeof merged.nodeId !== 'string' || !NODE_ID.test(merged.nodeId))) {
    problems.push('nodeId must be 1-32 letters, digits, _ or -');
  }
  if (typeof merged.headersTimeout === 'number' && typeof merged.requestTimeout === 'number' && merged.headersTimeout > merged.requestTimeout) {
    problems.push('headersTimeout must not be longer than requestTimeout');
  }
  const namespaces = resolveNamespaces(problems, config.namespaces, merged.demo === true);
  const auth = resolveAuth(problems, config.auth);
  const origins = merged.allowedOrigins;
  if (!Array.isArray(origins) || !origins.every((o) => typeof o === 'string' && /^https?:\/\/[^/\s]+$/.test(o))) {
    problems.push('allowedOrigins must be a list of origins like https://app.example.com');
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze({ ...(merged as unknown as GatewayOptions), namespaces: Object.freeze(namespaces), auth });
}

/** Environment variables read by {@link loadConfig}, with the option each sets. */
export const ENV_VARS = {
  PORT: 'port',
  HOST: 'host',
  TIDINGS_PORT: 'port',
  TIDINGS_HOST: 'host',
  TIDINGS_API_KEY: 'apiKey',
  TIDINGS_LOG_LEVEL: 'logLevel',
  TIDINGS_LOG_FORMAT: 'logFormat',
  TIDINGS_ADMIN_TOKEN: 'adminToken',
  TIDINGS_BROKER: 'broker',
  TIDINGS_NODE_ID: 'nodeId',
  TIDINGS_ALLOWED_ORIGINS: 'allowedOrigins',
} as const satisfies Record<string, keyof GatewayOptions>;

function coerce(key: keyof GatewayOptions, text: string): unknown {
  const def = DEFAULTS[key];
  if (typeof def === 'number') return /^-?\d+(\.\d+)?$/.test(text) ? Number(text) : text;
  if (typeof def === 'boolean') return text === 'true' ? true : text === 'false' ? false : text;
  if (Array.isArray(def)) return text.split(',').map((s) => s.trim()).filter((s) => s !== '');
  return text;
}

/** Reads a JSON config file; throws {@link ConfigError} with the file's problem. */
export function readConfigFile(path: string): GatewayConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError([`cannot read config file ${path}: ${(err as Error).message}`]);
  }
  try {
    const value = JSON.parse(text) as unknown;
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new Error('the top level must be an object');
    }
    return value;
  } catch (err) {
    throw new ConfigError([`config file ${path} is not valid JSON: ${(err as Error).message}`]);
  }
}

/**
 * Layers configuration, later wins: DEFAULTS, the config file, environment variables, then flags.
 * `flags` are option names to raw strings (from the command line).
 */
export function loadConfig(opts: {
  file?: string | undefined;
  env?: Record<string, string | undefined>;
  flags?: Record<string, string>;
}): GatewayOptions {
  const fromFile: GatewayConfig = opts.file === undefined ? {} : readConfigFile(opts.file);
  // JWT keys from the environment (secrets belong there rather than in a file) replace the file's.
  const jwtSecret = opts.env?.TIDINGS_JWT_SECRET;
  const jwksUrl = opts.env?.TIDINGS_JWKS_URL;
  if ((jwtSecret !== undefined && jwtSecret !== '') || (jwksUrl !== undefined && jwksUrl !== '')) {
    const jwt: Record<string, unknown> = { ...fromFile.auth?.jwt };
    for (const k of ['secret', 'publicKey', 'jwksUrl']) delete jwt[k];
    const key = jwtSecret !== undefined && jwtSecret !== '' ? { secret: jwtSecret } : { jwksUrl };
    fromFile.auth = { ...fromFile.auth, jwt: { ...jwt, ...key } };
  }
  const fromEnv: Record<string, unknown> = {};
  for (const [name, key] of Object.entries(ENV_VARS)) {
    const text = opts.env?.[name];
    if (text !== undefined && text !== '') fromEnv[key] = coerce(key, text);
  }
  const fromFlags: Record<string, unknown> = {};
  const problems: string[] = [];
  for (const [key, text] of Object.entries(opts.flags ?? {})) {
    if (!Object.hasOwn(DEFAULTS, key) || key === 'namespaces') problems.push(`--${key} is not an option`);
    else fromFlags[key] = coerce(key as keyof GatewayOptions, text);
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return resolveOptions({ ...fromFile, ...fromEnv, ...fromFlags });
}
