/**
 * Starts a real Redis (the installed `redis-server` binary; `scripts/setup.sh` installs it on CI) on
 * a free loopback port with a throwaway data dir, for broker tests. No persistence unless asked
 * (`--save ''`, no AOF), so `restart()` and `kill()` followed by `restart()` lose every key, the way a
 * Redis without persistence does. The server is stopped by its PID, never by name.
 *
 * `command()` runs one command over a short-lived connection (a minimal RESP2 client, so the kit
 * needs no Redis library): `await redis.command('FLUSHALL')`.
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { freePort } from './ports.js';

/** The redis-server binary: `TIDINGS_REDIS` or the one on PATH. */
export const REDIS_BIN = process.env.TIDINGS_REDIS ?? 'redis-server';

/** A RESP2 reply: simple and bulk strings, integers, nil (null) and arrays. Error replies reject. */
export type RespValue = string | number | null | RespValue[];

export interface RedisServerOptions {
  /** Keep data across `restart()` (append-only file, fsync always). Default false. */
  readonly persist?: boolean;
  /** More `redis-server` arguments, e.g. `['--maxmemory', '10mb']`. */
  readonly args?: readonly string[];
}

export interface RedisServer {
  readonly port: number;
  /** `redis://127.0.0.1:<port>`. */
  readonly url: string;
  /** Runs one command and resolves with its reply (an error reply rejects). */
  command(...args: Array<string | number>): Promise<RespValue>;
  /** Stops the server (SIGTERM, then SIGKILL after 2 s) and removes its data dir. */
  stop(): Promise<void>;
  /** Stops it if it runs, and starts it again on the same port: data is lost unless `persist` was set. */
  restart(): Promise<void>;
  /** SIGKILL: the server is gone at once, with no shutdown; `restart()` brings it back. */
  kill(): Promise<void>;
  /** Whether the process runs. */
  readonly running: boolean;
}


function encode(args: ReadonlyArray<string | number>): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const arg of args) {
    const b = Buffer.from(String(arg), 'utf8');
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

/** Parses one reply at `at`; undefined when `buf` does not hold all of it yet. */
function parse(buf: Buffer, at: number): { value: RespValue | Error; end: number } | undefined {
  const eol = buf.indexOf('\r\n', at);
  if (eol === -1) return undefined;
  const line = buf.toString('utf8', at + 1, eol);
  switch (buf[at]) {
    case 0x2b: // +
      return { value: line, end: eol + 2 };
    case 0x2d: // -
      return { value: new Error(line), end: eol + 2 };
    case 0x3a: // :
      return { value: Number(line), end: eol + 2 };
    case 0x24: {
      // $
      const len = Number(line);
      if (len < 0) return { value: null, end: eol + 2 };
      if (buf.length < eol + 2 + len + 2) return undefined;
      return { value: buf.toString('utf8', eol + 2, eol + 2 + len), end: eol + 2 + len + 2 };
    }
    case 0x2a: {
      // *
      const count = Number(line);
      if (count < 0) return { value: null, end: eol + 2 };
      const items: RespValue[] = [];
      let end = eol + 2;
      for (let i = 0; i < count; i++) {
        const item = parse(buf, end);
        if (item === undefined) return undefined;
        if (item.value instanceof Error) return { value: item.value, end: item.end };
        items.push(item.value);
        end = item.end;
      }
      return { value: items, end };
    }
    default:
      return { value: new Error(`unexpected RESP reply: ${line}`), end: eol + 2 };
  }
}

/** Runs one command on a fresh connection to `port`. */
export function redisCommand(port: number, args: ReadonlyArray<string | number>, timeoutMs = 5000): Promise<RespValue> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => finish(new Error(`redis ${String(args[0])} timed out`)), timeoutMs);
    const finish = (result: RespValue | Error): void => {
      clearTimeout(timer);
      socket.destroy();
      if (result instanceof Error) reject(result);
      else resolve(result);
    };
    socket.once('error', (err) => finish(err));
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const reply = parse(buf, 0);
      if (reply !== undefined) finish(reply.value);
    });
    socket.once('connect', () => socket.write(encode(args)));
  });
}

const live = new Set<ChildProcess>();
let exitHook = false;

/** Starts a Redis server; resolves once it answers PING. */
export async function startRedis(options: RedisServerOptions = {}): Promise<RedisServer> {
  const dir = mkdtempSync(join(tmpdir(), 'tidings-redis-'));
  const port = await freePort();
  const persistence = options.persist === true ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no'];
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', ...persistence, '--daemonize', 'no', '--logfile', '', ...(options.args ?? [])];
  let child: ChildProcess | undefined;
  let stderr = '';
  if (!exitHook) {
    exitHook = true;
    // A crashed test run never leaves a server behind.
    process.once('exit', () => {
      for (const c of live) c.kill('SIGKILL');
    });
  }

  const exited = (c: ChildProcess): Promise<void> =>
    c.exitCode !== null || c.signalCode !== null ? Promise.resolve() : new Promise((resolve) => c.once('exit', () => resolve()));

  const launch = async (): Promise<void> => {
    const c = spawn(REDIS_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child = c;
    live.add(c);
    c.once('exit', () => live.delete(c));
    stderr = '';
    c.stdout?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    c.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    const deadline = Date.now() + 10_000;
    for (;;) {
      const pong = await redisCommand(port, ['PING'], 1000).then(
        (r) => r === 'PONG',
        () => false,
      );
      if (pong) return;
      if (c.exitCode !== null || Date.now() > deadline) {
        c.kill('SIGKILL');
        throw new Error(`redis-server did not start on port ${port}: ${stderr}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  const halt = async (signal: NodeJS.Signals): Promise<void> => {
    const c = child;
    if (c === undefined || c.exitCode !== null || c.signalCode !== null) return;
    const done = exited(c);
    c.kill(signal);
    await Promise.race([done, new Promise((r) => setTimeout(r, 2000))]);
    if (c.exitCode === null && c.signalCode === null) {
      c.kill('SIGKILL');
      await done;
    }
  };

  try {
    await launch();
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    command: (...cmd) => redisCommand(port, cmd),
    get running() {
      return child !== undefined && child.exitCode === null && child.signalCode === null;
    },
    async stop() {
      await halt('SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
    async restart() {
      await halt('SIGTERM');
      await launch();
    },
    async kill() {
      await halt('SIGKILL');
    },
  };
}

/**
 * A Redis server for the suite (or `describe` block) this is called in: started before its tests (with
 * `options`), stopped after them. Use it as the server itself, from within the tests.
 */
export function suiteRedis(options: RedisServerOptions = {}): RedisServer {
  let server: RedisServer | undefined;
  beforeAll(async () => {
    server = await startRedis(options);
  }, 20_000);
  afterAll(async () => {
    await server?.stop();
  });
  const started = (): RedisServer => {
    if (server === undefined) throw new Error('the suite Redis is used before its suite started');
    return server;
  };
  return {
    get port() {
      return started().port;
    },
    get url() {
      return started().url;
    },
    get running() {
      return started().running;
    },
    command: (...args) => started().command(...args),
    stop: () => started().stop(),
    restart: () => started().restart(),
    kill: () => started().kill(),
  };
}
