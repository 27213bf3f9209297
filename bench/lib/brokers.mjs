// Broker servers for the `brokers` session: each run starts a fresh redis-server or nats-server
// (JetStream) from the installed binaries, on a free loopback port with a throwaway data
// directory, pinned with taskset like every other process, and stops it by its pid (SIGTERM, then
// SIGKILL) and removes the directory. Same arguments as the test kit (packages/testing/src/redis.ts
// and nats.ts): no persistence for Redis; JetStream's file store in the directory for NATS.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { spawnPinnedBinary, stop } from './children.mjs';
import { ask, freePort } from './net.mjs';

/** The brokers compared, in table order. `shared`: several gateway nodes can use one. */
export const BROKERS = {
  memory: { label: 'memory', shared: false },
  redis: { label: 'Redis', shared: true, bin: process.env.TIDINGS_REDIS ?? 'redis-server' },
  nats: { label: 'NATS JetStream', shared: true, bin: process.env.TIDINGS_NATS_SERVER ?? '/usr/sbin/nats-server' },
};
export const BROKER_KINDS = Object.keys(BROKERS);

/** The binary's version line, or why it cannot run. */
function version(bin) {
  try {
    return execFileSync(bin, ['--version'], { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch (err) {
    throw new Error(`${bin} is not installed or does not run (${err instanceof Error ? err.message.split('\n')[0] : String(err)})`, { cause: err });
  }
}

/**
 * Starts broker `kind` pinned to `core`; resolves with { kind, url, pid, port, version, stop() } once
 * it answers (Redis: PING; NATS: "Server is ready" and accepting connections), or rejects within
 * about 10 s with the server's last output. `memory` starts nothing: its url is `memory`.
 */
export async function startBroker(kind, core) {
  if (kind === 'memory') return { kind, url: 'memory', pid: undefined, version: 'in-process', stop: async () => undefined };
  const { bin } = BROKERS[kind];
  const versionLine = version(bin);
  const dir = mkdtempSync(join(tmpdir(), `tidings-bench-${kind}-`));
  const port = await freePort();
  const args =
    kind === 'redis'
      ? ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--logfile', '']
      : ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', dir];
  const child = spawnPinnedBinary(core, bin, args, { stderr: 'pipe' });
  let output = '';
  const keep = (d) => (output = (output + d.toString()).slice(-4000));
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const halt = async () => {
    await stop(child, 3000);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${kind} server exited (${child.exitCode ?? child.signalCode})`);
      if (Date.now() > deadline) throw new Error(`${kind} server did not become ready within 10 s`);
      const ready =
        kind === 'redis' ? (await ask(port, '*1\r\n$4\r\nPING\r\n', 1000)).startsWith('+PONG') : output.includes('Server is ready') && (await ask(port, '', 1000)) !== '';
      if (ready) break;
      await sleep(50);
    }
  } catch (err) {
    await halt();
    throw new Error(`${err instanceof Error ? err.message : String(err)}: ${output.trim().split('\n').slice(-3).join(' | ')}`, { cause: err });
  }
  return { kind, url: `${kind}://127.0.0.1:${port}`, pid: child.pid, port, version: versionLine, stop: halt };
}
