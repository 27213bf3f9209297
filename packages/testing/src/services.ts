/**
 * What every real service the kit starts (NATS, Prometheus) needs: a process that is killed if the
 * test process exits without stopping it, a readiness probe, and waiting for an exit.
 * @module
 */
import type { ChildProcess } from 'node:child_process';
import { createConnection } from 'node:net';

/** Services running now: killed if the test process exits without stopping them (a crash, a failed hook). */
const running = new Set<ChildProcess>();
let exitHook = false;

/** Kills `child` with SIGKILL if the test process exits while it still runs. */
export function track(child: ChildProcess): void {
  running.add(child);
  child.once('exit', () => running.delete(child));
  if (exitHook) return;
  exitHook = true;
  process.once('exit', () => {
    for (const c of running) c.kill('SIGKILL');
  });
}

/** Resolves true when something accepts TCP connections on the loopback port. */
export function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Resolves when `child` has exited (at once if it already has). */
export function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** Sends `signal`, then SIGKILL after `graceMs`, and resolves once the process is gone. */
export async function halt(child: ChildProcess, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited(child);
  clearTimeout(timer);
}
