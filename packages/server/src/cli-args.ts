/**
 * The command line's grammar: each command's flags with a description and default, `--help` text,
 * and strict parsing (an unknown flag or a stray argument is an error with a "did you mean").
 * @module
 */
import { DEFAULTS, ENV_VARS, type GatewayOptions } from './options.js';

/** Every variable the commands read: the options' (TIDINGS_PORT and TIDINGS_HOST over PORT and HOST), the key's, the JWT key's, and the URL publish and subscribe talk to. */
const ENVIRONMENT = [...Object.keys(ENV_VARS), 'TIDINGS_API_KEY_FILE', 'TIDINGS_JWT_SECRET', 'TIDINGS_JWKS_URL', 'TIDINGS_URL'];

/** One line per `serve` option. Typed over every option, so a new option cannot go undocumented. */
export const OPTION_HELP: Readonly<Record<Exclude<keyof GatewayOptions, 'namespaces' | 'auth'>, string>> = {
  host: 'address to listen on',
  port: 'port to listen on (0: any free port)',
  apiKey: 'API key for /api/* (default: generated at start; required with a shared broker)',
  maxPayload: 'largest publication data or WebSocket frame, in bytes',
  maxBody: 'largest HTTP request body, in bytes',
  maxBatch: 'most publications in one publish batch',
  maxSubscriptions: 'most channels one connection may subscribe to',
  maxBufferedBytes: 'bytes queued for one connection before it is a slow consumer',
  maxResumeBuffer: 'live publications held per subscription while its history is read',
  maxPollMessages: 'most messages in one long-poll answer',
  maxPollGroupBytes: 'bytes of recent publications and answers all long-poll groups may hold',
  dedupWindow: 'how long an idempotency key is remembered, in ms',
  dedupMaxKeys: 'idempotency keys remembered per channel (server side and clients each)',
  maxChannels: 'channel streams the in-memory broker keeps',
  pingInterval: 'WebSocket heartbeat interval, in ms',
  positionCheck: 'how often joined channels are checked against the broker, in ms',
  sseHeartbeat: 'SSE comment heartbeat interval, in ms',
  sseRetry: 'SSE retry hint, in ms (plus up to 50% jitter)',
  pollTimeout: 'longest a long poll is held, in ms',
  maxBadFrames: 'malformed WebSocket frames tolerated per minute',
  logLevel: 'fatal, error, warn, info, debug, trace or silent',
  logFormat: 'json, pretty, or auto (pretty on a terminal)',
  logSampleRate: 'share of per-message records logged at debug, from 0 to 1',
  metrics: 'serve Prometheus metrics at /metrics',
  metricsPort: 'a separate port for /metrics (0: the main port)',
  adminToken: 'token that opens /admin besides the API key',
  demo: 'serve the demo page and its namespaces (never in production)',
  maxHistoryBytes: 'bytes of history and keys the in-memory broker may hold',
  maxInflight: 'requests one WebSocket may run at once',
  headersTimeout: 'time to receive request headers, in ms',
  requestTimeout: 'time to receive a whole request, in ms',
  shutdownTimeout: 'graceful shutdown deadline, in ms',
  drainWindow: 'on SIGTERM, clients are sent elsewhere in waves over this many ms',
  drainDelay: 'on SIGTERM, /readyz answers 503 this many ms before the drain begins',
  broker: 'memory, redis://host:port (or a Redis Cluster master) or nats://host:port',
  nodeId: "this node's id in a cluster (default: random)",
  channelLinger: 'how long a channel stays subscribed at the broker after its last subscriber left, in ms',
  presenceTtl: "how long a dead node's presence entries live, in ms",
  authHook: 'module whose subscribe / publish exports authorize clients',
  rpcModule: 'module whose exported functions answer client requests (RPC) by method name',
  allowedOrigins: 'comma-separated browser origins allowed with credentials',
  maxConnections: 'open client connections per node',
  maxConnectionsPerIp: 'open client connections per IP address (0: no limit)',
  maxConnectionsPerUser: 'WebSocket and SSE connections per user across the cluster (0: no limit)',
  maxConnectRate: 'new client connections per second per node',
  maxConnectRatePerIp: 'new client connections per second per IP address (0: no limit)',
  maxFrameRate: 'inbound WebSocket frames per second per connection',
  maxPublishRate: 'client publishes per second per connection',
  maxChannelPublishRate: 'client publishes per second per channel (0: no limit)',
  trustProxy: 'take client addresses from X-Forwarded-For',
};

export interface FlagSpec {
  readonly description: string;
  /** Shown as the default; undefined: none. */
  readonly default?: string;
  /** A switch takes no value (`--demo`). */
  readonly switch?: boolean;
}

export interface CommandSpec {
  readonly usage: string;
  readonly summary: string;
  /** Flags by camelCase name. */
  readonly flags: Readonly<Record<string, FlagSpec>>;
  /** Most positional arguments (Infinity: any number). */
  readonly maxPositionals: number;
}

const kebab = (name: string): string => name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
export const camel = (name: string): string => name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

function shown(value: string | number | boolean | readonly string[] | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'object') return value.length === 0 ? '(none)' : value.join(',');
  return String(value);
}

const serveFlags: Record<string, FlagSpec> = {
  config: { description: 'JSON config file (namespaces, auth, any option)' },
  ...Object.fromEntries(
    Object.entries(OPTION_HELP).map(([name, description]) => {
      const def = DEFAULTS[name as keyof typeof OPTION_HELP];
      return [name, { description, default: shown(def), switch: typeof def === 'boolean' }];
    }),
  ),
};

export const COMMANDS: Readonly<Record<string, CommandSpec>> = {
  serve: { usage: 'tidings serve [--config file.json] [--<option> value ...]', summary: 'run the gateway', flags: serveFlags, maxPositionals: 0 },
  publish: {
    usage: 'tidings publish <channel> <json> [--type T] [--idempotency-key K] [--url URL] [--api-key KEY]',
    summary: 'publish one message through the HTTP API',
    flags: {
      type: { description: 'message type' },
      idempotencyKey: { description: 'publish at most once with this key' },
      url: { description: 'gateway URL', default: 'TIDINGS_URL or http://localhost:8080' },
      apiKey: { description: 'API key', default: 'TIDINGS_API_KEY' },
    },
    maxPositionals: 2,
  },
  subscribe: {
    usage: 'tidings subscribe <channel> [<channel> ...] [--url URL]',
    summary: 'print the messages of channels as they arrive (state on stderr)',
    flags: { url: { description: 'gateway URL', default: 'TIDINGS_URL or http://localhost:8080' } },
    maxPositionals: Infinity,
  },
  'check-config': { usage: 'tidings check-config <file.json>', summary: 'validate a config file without starting', flags: {}, maxPositionals: 1 },
};

/** `--help` text of one command: usage, then every flag with its description and default. */
export function commandHelp(name: string): string {
  const spec = COMMANDS[name];
  if (spec === undefined) return usage();
  const lines = Object.entries(spec.flags).map(([flag, f]) => {
    const head = `  --${kebab(flag)}${f.switch === true ? '' : ' <value>'}`;
    return `${head.padEnd(34)} ${f.description}${f.default === undefined ? '' : ` (default: ${f.default})`}`;
  });
  return `Usage: ${spec.usage}\n${spec.summary}.\n${lines.length > 0 ? `\nOptions:\n${lines.join('\n')}\n` : ''}`;
}

/** The overall usage: every command. */
export function usage(): string {
  const lines = Object.values(COMMANDS).map((c) => `  ${c.usage}\n      ${c.summary}`);
  return `Usage:\n${lines.join('\n')}\n\n'tidings <command> --help' lists a command's options.\nEnvironment: ${ENVIRONMENT.join(', ')}.`;
}

/** Edit distance, for "did you mean". */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0] as number;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const here = row[j] as number;
      row[j] = Math.min(here + 1, (row[j - 1] as number) + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = here;
    }
  }
  return row[b.length] as number;
}

/** The closest of `names` to `name`, when close enough to be a typo. */
export function closest(name: string, names: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const n of names) {
    const d = distance(name.toLowerCase(), n.toLowerCase());
    if (d < bestD) {
      best = n;
      bestD = d;
    }
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(name.length / 3)) ? best : undefined;
}

export type Parsed = { readonly help: true } | { readonly help: false; readonly positionals: string[]; readonly flags: Record<string, string> };

/** Parses `argv` for `command`; throws an Error with a message for the user on anything it does not know. */
export function parseArgs(command: string, argv: readonly string[]): Parsed {
  const spec = COMMANDS[command] as CommandSpec;
  const positionals: string[] = [];
  const flags: Record<string, string> = {};
  const known = Object.keys(spec.flags);
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--help' || arg === '-h') return { help: true };
    if (!arg.startsWith('--')) {
      if (positionals.length >= spec.maxPositionals) {
        const asPort = command === 'serve' && /^\d+$/.test(arg) ? `; did you mean --port ${arg}?` : '';
        throw new Error(`unexpected argument '${arg}'${asPort}\n('tidings ${command} --help' lists the options)`);
      }
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const raw = arg.slice(2, eq === -1 ? undefined : eq);
    const name = camel(raw);
    const flag = Object.hasOwn(spec.flags, name) ? spec.flags[name] : undefined;
    if (flag === undefined) {
      const guess = closest(name, known);
      throw new Error(`unknown option --${raw}${guess === undefined ? '' : `; did you mean --${kebab(guess)}?`}\n('tidings ${command} --help' lists the options)`);
    }
    if (eq === -1 && flag.switch === true && (argv[i + 1] === undefined || argv[i + 1]?.startsWith('--') === true)) {
      flags[name] = 'true';
      continue;
    }
    const value = eq === -1 ? argv[++i] : arg.slice(eq + 1);
    if (value === undefined) throw new Error(`--${raw} needs a value`);
    flags[name] = value;
  }
  return { help: false, positionals, flags };
}
