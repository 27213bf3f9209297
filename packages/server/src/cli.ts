#!/usr/bin/env node
/**
 * `tidings serve | publish | subscribe`: run the gateway, publish from a shell, watch channels.
 * @module
 */
import { jsonCodec, parseJson, type Channel, type Position, type ServerFrame, type SubscribeResult } from '@tidings/protocol';
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { createGateway } from './gateway.js';
import { createLogger, noticesFor } from './log.js';
import { closest, commandHelp, COMMANDS, parseArgs, usage } from './cli-args.js';
import { ConfigError, loadConfig } from './options.js';
import { installProcessNet } from './process-net.js';

// A reader that went away (a closed pipe) must not take the gateway down: output is best effort.
for (const stream of [process.stdout, process.stderr]) stream.on('error', () => undefined);

function say(text: string): void {
  if (process.stdout.writable) process.stdout.write(text);
}

function fail(message: string): never {
  process.stderr.write(`${message}\n`);
  process.exit(2);
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
  const logger = createLogger(options.logLevel, options.logFormat);
  const tell = noticesFor(options.logFormat, say);
  const gateway = createGateway(options, { logger });
  installProcessNet(logger, (site) => gateway.metrics.unexpectedError(site));
  const info = await gateway.listen();
  tell(`Tidings listening on ${info.url} (WebSocket ${info.url.replace(/^http/, 'ws')}/ws, SSE /sse, long polling /poll)`);
  if (options.demo) tell(`Demo: open ${info.url}/ in two tabs`);
  if (gateway.apiKeyGenerated) {
    // A secret never goes to a log: shown once on a terminal, else written to a file only the user can read.
    if (process.stdout.isTTY) {
      say(`No API key configured; generated one for this run (shown once): ${gateway.apiKey}\n(set TIDINGS_API_KEY to choose your own)\n`);
    } else {
      const file = process.env.TIDINGS_API_KEY_FILE ?? join(tmpdir(), `tidings-api-key-${info.port}`);
      rmSync(file, { force: true });
      writeFileSync(file, `${gateway.apiKey}\n`, { mode: 0o600, flag: 'wx' });
      tell(`No API key configured; generated one for this run and wrote it to ${file} (mode 0600); set TIDINGS_API_KEY to choose your own`);
    }
  }
  const stop = (signal: string): void => {
    tell(`${signal}: draining connections`);
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
  if (channel === undefined || json === undefined) fail(commandHelp('publish'));
  let data: unknown;
  try {
    data = parseJson(json);
  } catch {
    fail(`<json> is not valid JSON: ${json}`);
  }
  const apiKey = flags.apiKey ?? process.env.TIDINGS_API_KEY;
  if (apiKey === undefined) fail('set TIDINGS_API_KEY or pass --api-key');
  const body = { channel, data, type: flags.type, idempotencyKey: flags.idempotencyKey };
  const url = `${baseUrl(flags)}/api/publish`;
  let res: Response;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${apiKey}` },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    fail(`cannot reach ${url}: ${cause?.code ?? cause?.message ?? (err as Error).message}`);
  }
  const text = await res.text();
  process.stdout.write(`${text}\n`);
  if (!res.ok) process.exit(1);
}

async function subscribe(channels: Channel[], flags: Record<string, string>): Promise<void> {
  if (channels.length === 0) fail(commandHelp('subscribe'));
  const positions = new Map<Channel, Position>();
  const wsUrl = `${baseUrl(flags).replace(/^http/, 'ws')}/ws`;
  const state = (text: string): void => {
    process.stderr.write(`${text}\n`);
  };
  let attempt = 0;
  let lastError = '';
  const connect = (): void => {
    state(`connecting to ${wsUrl}`);
    const ws = new WebSocket(wsUrl);
    ws.on('open', () => {
      attempt = 0;
      state(`live: ${wsUrl} (${channels.join(', ')})`);
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
    ws.on('error', (err: Error & { code?: string }) => (lastError = err.code ?? err.message));
    ws.on('close', (code: number, reason: Buffer) => {
      const delay = Math.random() * Math.min(30_000, 500 * 2 ** attempt++);
      const why = lastError !== '' ? lastError : `closed ${code}${reason.length > 0 ? ` (${reason.toString()})` : ''}`;
      lastError = '';
      state(`${wsUrl}: ${why}; retrying in ${(delay / 1000).toFixed(1)} s`);
      setTimeout(connect, delay);
    });
  };
  connect();
  await new Promise<never>(() => undefined);
}

/** `tidings check-config FILE`: validates a config file (with the environment) without starting. */
function checkConfig(positionals: string[]): void {
  const [file] = positionals;
  if (file === undefined) fail(commandHelp('check-config'));
  try {
    loadConfig({ file, env: process.env });
  } catch (err) {
    if (err instanceof ConfigError) fail(`${file}: ${err.message}`);
    throw err;
  }
  say(`${file}: ok\n`);
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
    say(`${usage()}\n`);
    return;
  }
  if (COMMANDS[command] === undefined) {
    const guess = closest(command, Object.keys(COMMANDS));
    fail(`unknown command '${command}'${guess === undefined ? '' : `; did you mean '${guess}'?`}\n\n${usage()}`);
  }
  let parsed;
  try {
    parsed = parseArgs(command, rest);
  } catch (err) {
    fail((err as Error).message);
  }
  if (parsed.help) {
    say(commandHelp(command));
    return;
  }
  const { positionals, flags } = parsed;
  switch (command) {
    case 'serve':
      return serve(flags);
    case 'publish':
      return publish(positionals, flags);
    case 'subscribe':
      return subscribe(positionals, flags);
    default:
      return checkConfig(positionals);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
