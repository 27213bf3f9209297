#!/usr/bin/env node
/**
 * `tidings serve | publish | subscribe`: run the gateway, publish from a shell, watch channels.
 * @module
 */
import { jsonCodec, parseJson, type Channel, type Position, type ServerFrame, type SubscribeResult } from '@tidings/protocol';
import WebSocket from 'ws';
import { createGateway } from './gateway.js';
import { createLogger } from './log.js';
import { ConfigError, DEFAULTS, loadConfig } from './options.js';
import { installProcessNet } from './process-net.js';

const USAGE = `Usage:
  tidings serve [--config file.json] [--port N] [--host H] [--api-key KEY] [--demo] [--<option> value ...]
  tidings publish <channel> <json> [--type T] [--idempotency-key K] [--url URL] [--api-key KEY]
  tidings subscribe <channel> [<channel> ...] [--url URL]

Environment: PORT, HOST, TIDINGS_API_KEY, TIDINGS_LOG_LEVEL, TIDINGS_URL (default http://localhost:8080).
Options for serve: ${Object.keys(DEFAULTS).filter((k) => k !== 'namespaces').join(', ')} (as --kebab-case flags).`;

const kebabToCamel = (s: string): string => s.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

// A reader that went away (a closed pipe) must not take the gateway down: output is best effort.
for (const stream of [process.stdout, process.stderr]) stream.on('error', () => undefined);

function say(text: string): void {
  if (process.stdout.writable) process.stdout.write(text);
}

function fail(message: string): never {
  process.stderr.write(`${message}\n`);
  process.exit(2);
}

/** Options that are switches: `--demo` alone means true. */
const SWITCHES = new Set(Object.entries(DEFAULTS).filter(([, v]) => typeof v === 'boolean').map(([k]) => k));

/** Splits `--name value` / `--name=value` pairs from positionals; every flag but a switch takes a value. */
function splitArgs(argv: string[]): { positionals: string[]; flags: Record<string, string> } {
  const positionals: string[] = [];
  const flags: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (!arg.startsWith('--')) {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = kebabToCamel(arg.slice(2, eq === -1 ? undefined : eq));
    if (eq === -1 && SWITCHES.has(name) && (argv[i + 1] === undefined || argv[i + 1]?.startsWith('--') === true)) {
      flags[name] = 'true';
      continue;
    }
    const value = eq === -1 ? argv[++i] : arg.slice(eq + 1);
    if (value === undefined) fail(`--${arg.slice(2)} needs a value\n\n${USAGE}`);
    flags[name] = value;
  }
  return { positionals, flags };
}

async function serve(flags: Record<string, string>): Promise<void> {
  const { config: file, ...rest } = flags;
  let options;
  try {
    options = loadConfig({ file, env: process.env, flags: rest });
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }
  const logger = createLogger(options.logLevel);
  const gateway = createGateway(options, { logger });
  installProcessNet(logger, (site) => gateway.metrics.unexpectedError(site));
  const info = await gateway.listen();
  say(`Tidings listening on ${info.url} (WebSocket ${info.url.replace(/^http/, 'ws')}/ws, SSE /sse, long polling /poll)\n`);
  if (options.demo) say(`Demo: open ${info.url}/ in two tabs\n`);
  if (gateway.apiKeyGenerated) {
    say(`No API key configured; generated one for this run: ${gateway.apiKey}\n(set TIDINGS_API_KEY to choose your own)\n`);
  }
  const stop = (signal: string): void => {
    say(`${signal}: draining connections\n`);
    gateway.close().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
}

function baseUrl(flags: Record<string, string>): string {
  return (flags.url ?? process.env.TIDINGS_URL ?? 'http://localhost:8080').replace(/\/$/, '');
}

async function publish(positionals: string[], flags: Record<string, string>): Promise<void> {
  const [channel, json] = positionals;
  if (channel === undefined || json === undefined) fail(USAGE);
  let data: unknown;
  try {
    data = parseJson(json);
  } catch {
    fail(`<json> is not valid JSON: ${json}`);
  }
  const apiKey = flags.apiKey ?? process.env.TIDINGS_API_KEY;
  if (apiKey === undefined) fail('set TIDINGS_API_KEY or pass --api-key');
  const body = { channel, data, type: flags.type, idempotencyKey: flags.idempotencyKey };
  const res = await fetch(`${baseUrl(flags)}/api/publish`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${apiKey}` },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  process.stdout.write(`${text}\n`);
  if (!res.ok) process.exit(1);
}

async function subscribe(channels: Channel[], flags: Record<string, string>): Promise<void> {
  if (channels.length === 0) fail(USAGE);
  const positions = new Map<Channel, Position>();
  const wsUrl = `${baseUrl(flags).replace(/^http/, 'ws')}/ws`;
  let attempt = 0;
  const connect = (): void => {
    const ws = new WebSocket(wsUrl);
    ws.on('open', () => {
      attempt = 0;
      channels.forEach((channel, i) => {
        const since = positions.get(channel);
        ws.send(jsonCodec.encodeClient(since ? { type: 'subscribe', id: i, channel, since } : { type: 'subscribe', id: i, channel }));
      });
    });
    ws.on('message', (data: Buffer) => {
      const frame: ServerFrame = jsonCodec.decodeServer(data.toString('utf8'));
      if (frame.type === 'message') {
        positions.set(frame.message.channel, frame.message.position);
        process.stdout.write(`${JSON.stringify(frame.message)}\n`);
      } else if (frame.type === 'gap') {
        positions.set(frame.gap.channel, frame.gap.to);
        process.stderr.write(`gap: ${JSON.stringify(frame.gap)}\n`);
      } else if (frame.type === 'reply') {
        // Only subscribe requests are sent, so every reply is a SubscribeResult.
        const { channel, position } = frame.result as SubscribeResult;
        if (!positions.has(channel)) positions.set(channel, position);
      } else if (frame.type === 'error') {
        process.stderr.write(`error: ${frame.error.code}: ${frame.error.reason}\n`);
      }
    });
    ws.on('error', () => undefined);
    ws.on('close', () => {
      const delay = Math.random() * Math.min(30_000, 500 * 2 ** attempt++);
      setTimeout(connect, delay);
    });
  };
  connect();
  await new Promise<never>(() => undefined);
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  const { positionals, flags } = splitArgs(rest);
  switch (command) {
    case 'serve':
      return serve(flags);
    case 'publish':
      return publish(positionals, flags);
    case 'subscribe':
      return subscribe(positionals, flags);
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(`${USAGE}\n`);
      return;
    default:
      fail(`unknown command '${command}'\n\n${USAGE}`);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
