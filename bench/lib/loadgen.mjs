// Orchestrator side of a load generator process: spawns it pinned and turns IPC into promises.
import { fileURLToPath } from 'node:url';
import { exited, spawnPinned, stop } from './children.mjs';

const SCRIPT = fileURLToPath(new URL('../load/loadgen.mjs', import.meta.url));

export class LoadGen {
  #child;
  #next = 1;
  #pending = new Map();

  /** With `profile` ({ dir, name }), the process writes a CPU profile when it exits. */
  constructor(core, profile) {
    const nodeFlags = profile === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', profile.dir, '--cpu-prof-name', profile.name];
    this.#child = spawnPinned(core, SCRIPT, [], { ipc: true, nodeFlags });
    this.#child.stdout.resume();
    this.#child.on('message', (msg) => {
      const p = this.#pending.get(msg.id);
      if (p === undefined) return;
      if (msg.ev === 'done') p.settle(undefined, msg.result);
      else if (msg.ev === 'error') p.settle(new Error(`load generator: ${msg.message}`));
      else p.onEvent(msg);
    });
    this.#child.on('exit', (code, signal) => {
      for (const p of this.#pending.values()) p.settle(new Error(`load generator exited (${code ?? signal})`));
    });
  }

  get pid() {
    return this.#child.pid;
  }

  /** Sends a command; resolves with its result, rejects on error or after `timeoutMs`. */
  request(cmd, args, { timeoutMs, onEvent = () => undefined }) {
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.#pending.get(id)?.settle(new Error(`load generator: ${cmd} timed out`)), timeoutMs);
      const settle = (err, result) => {
        clearTimeout(timer);
        this.#pending.delete(id);
        if (err) reject(err);
        else resolve(result);
      };
      this.#pending.set(id, { settle, onEvent });
      this.#child.send({ id, cmd, ...args });
    });
  }

  /** Asks it to close its sockets and exit; stops it if it does not. */
  async close() {
    await this.request('close', {}, { timeoutMs: 5000 }).catch(() => undefined);
    if (!(await exited(this.#child, 5000))) await stop(this.#child, 3000);
  }
}
