/**
 * Starts a real NATS server with JetStream (the Debian package's `nats-server`, 2.9 or later) on a
 * free loopback port with a throwaway store directory (`-sd`), for broker and cluster tests. It is
 * stopped by its PID; `restart()` brings it back on the same port, with the store kept (a restart)
 * or wiped (a server that lost its data), and `kill()` takes it down with SIGKILL.
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports.js';
import { accepts, exited, track } from './services.js';

/** The nats-server binary: `TIDINGS_NATS_SERVER` or the Debian path. */
export const NATS_SERVER_BIN = process.env.TIDINGS_NATS_SERVER ?? '/usr/sbin/nats-server';

export interface NatsServer {
  /** `nats://127.0.0.1:<port>`. */
  readonly url: string;
  readonly port: number;
  /** The JetStream store directory (removed by `stop()`). */
  readonly storeDir: string;
  /** Whether the server process is running now. */
  readonly running: boolean;
  /** Stops the server (SIGTERM, then SIGKILL after 3 s) and removes its store. Safe to call twice. */
  stop(): Promise<void>;
  /** Stops the server if it runs and starts it again on the same port; `keepStore: false` wipes JetStream first. */
  restart(opts?: { readonly keepStore?: boolean }): Promise<void>;
  /** Kills the server with SIGKILL (the store stays for a later `restart()`). */
  kill(): Promise<void>;
}

/** Starts `nats-server -js` on a free port; resolves once it reports ready (JetStream included). */
export async function startNats(): Promise<NatsServer> {
  const storeDir = mkdtempSync(join(tmpdir(), 'tidings-nats-'));
  const port = await freePort();
  let child: ChildProcess | undefined;
  let stopped = false;

  const launch = async (): Promise<void> => {
    const proc = spawn(NATS_SERVER_BIN, ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', storeDir], { stdio: ['ignore', 'ignore', 'pipe'] });
    child = proc;
    track(proc);
    let log = '';
    let ready = false;
    proc.stderr?.on('data', (d: Buffer) => {
      if (ready) return;
      log += d.toString();
      if (log.includes('Server is ready')) ready = true;
    });
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (ready && (await accepts(port))) return;
      if (proc.exitCode !== null || proc.signalCode !== null || Date.now() > deadline) {
        proc.kill('SIGKILL');
        throw new Error(`nats-server did not start on port ${port}: ${log.slice(-2000)}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  const halt = async (signal: NodeJS.Signals): Promise<void> => {
    const proc = child;
    child = undefined;
    if (proc === undefined || proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill(signal);
    const timer = setTimeout(() => proc.kill('SIGKILL'), 3000);
    await exited(proc);
    clearTimeout(timer);
  };

  try {
    await launch();
  } catch (err) {
    rmSync(storeDir, { recursive: true, force: true });
    throw err;
  }

  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    storeDir,
    get running() {
      return child !== undefined && child.exitCode === null && child.signalCode === null;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await halt('SIGTERM');
      rmSync(storeDir, { recursive: true, force: true });
    },
    async restart(opts = {}) {
      if (stopped) throw new Error('this NATS server was stopped for good');
      await halt('SIGTERM');
      if (opts.keepStore === false) rmSync(join(storeDir, 'jetstream'), { recursive: true, force: true });
      await launch();
    },
    async kill() {
      await halt('SIGKILL');
    },
  };
}
