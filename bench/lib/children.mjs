// Starts child processes pinned to one core with the descriptor limit raised, and kills them all on exit.
import { execFileSync, spawn } from 'node:child_process';

const live = new Set();
/** Processes that are not our children (an nginx worker), killed with them. */
const adopted = new Set();

/** Kills every child still running (SIGKILL, by pid). Safe to call repeatedly. */
export function killAll() {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  live.clear();
  for (const pid of adopted) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  adopted.clear();
}

/** Has `pid` (a grandchild) killed by killAll too, until `release(pid)`. */
export function adopt(pid) {
  adopted.add(pid);
}

export function release(pid) {
  adopted.delete(pid);
}

/** The descriptor hard limit children get as their soft limit (`ulimit -Hn`). */
export function descriptorLimit() {
  const text = execFileSync('bash', ['-c', 'ulimit -Hn'], { encoding: 'utf8' }).trim();
  return text === 'unlimited' ? Infinity : Number(text);
}

process.on('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    killAll();
    process.exit(130);
  });
}

/**
 * Runs `node <script> ...args` on `core` with `ulimit -n` at its hard limit. `bash` execs into
 * taskset, which execs node, so `child.pid` is the node process itself.
 */
export function spawnPinned(core, script, args, { env = {}, ipc = false, nodeFlags = [] } = {}) {
  return spawnPinnedBinary(core, process.execPath, [...nodeFlags, script, ...args], { env, ipc });
}

/**
 * Runs any executable on `core` the same way (`bash` execs into taskset, which execs `file`, so
 * `child.pid` is the program itself and it is stopped by that pid). stdout is piped; stderr is
 * inherited unless `stderr: 'pipe'`.
 */
export function spawnPinnedBinary(core, file, args, { env = {}, ipc = false, stderr = 'inherit' } = {}) {
  const stdio = ['ignore', 'pipe', stderr];
  if (ipc) stdio.push('ipc');
  const child = spawn('bash', ['-c', 'ulimit -n "$(ulimit -Hn)" && exec taskset -c "$0" "$@"', String(core), file, ...args], {
    stdio,
    env: { ...process.env, ...env },
  });
  live.add(child);
  child.on('exit', () => live.delete(child));
  return child;
}

/** Resolves true when the child exits within `ms`, false otherwise. */
export function exited(child, ms) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** Stops a child: SIGTERM, then SIGKILL after `graceMs`. Resolves when it has exited. */
export function stop(child, graceMs = 2000) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** Resolves with the first match of `pattern` in the child's stdout, or rejects after `timeoutMs`. */
export function waitForOutput(child, pattern, timeoutMs) {
  return new Promise((resolve, reject) => {
    let text = '';
    const done = (err, match) => {
      clearTimeout(timer);
      child.stdout.off('data', onData);
      child.off('exit', onExit);
      if (err) reject(err);
      else resolve(match);
    };
    const onData = (chunk) => {
      text += chunk.toString('utf8');
      const match = pattern.exec(text);
      if (match !== null) done(undefined, match);
    };
    const onExit = (code) => done(new Error(`child exited (${code}) before printing ${pattern}: ${text.slice(0, 500)}`));
    const timer = setTimeout(() => done(new Error(`timed out waiting for ${pattern}`)), timeoutMs);
    child.stdout.on('data', onData);
    child.on('exit', onExit);
  });
}
