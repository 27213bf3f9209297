/**
 * Starts the built gateway in a child process (`harness.ts`, compiled to
 * `packages/testing/dist/hostile/harness.js`, importing `packages/server/dist`) on a free loopback
 * port, and talks to it from outside: its PID and liveness, `/healthz`, publishing through the HTTP
 * API, its RSS from `/proc`, and probes over IPC (memory after full garbage collections, what the
 * gateway holds, its unexpected-error counters). Its pino log lines at `error` level and above are
 * collected, since each one is a bug the gateway caught. Stopped by PID.
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { PublishRequest, PublishResult } from '@tidings/protocol';
import type { Gateway, GatewayConfig, GatewayStats, MemoryBroker } from '@tidings/server';
import { postOnce, type TestGateway } from '../gateway.js';
import type { HarnessMessage } from './harness.js';

/** The compiled harness (relative to the package root, so it resolves from `src/` under vitest and from `dist/`). */
export const HARNESS_SCRIPT = fileURLToPath(new URL('../../dist/hostile/harness.js', import.meta.url));

export interface GatewayProcessOptions {
  readonly config?: GatewayConfig;
  /** A token the authentication hook refuses (`?token=` or a bearer header). */
  readonly deniedToken?: string;
  /** A namespace the authentication hook lets nobody subscribe or publish to. */
  readonly secretNamespace?: string;
  /** A command to run node under, e.g. `['taskset', '-c', '0']` (it must exec node, so the PID is node's). */
  readonly wrap?: readonly string[];
  /** Node flags; `--expose-gc` is always added. */
  readonly nodeFlags?: readonly string[];
  readonly startTimeoutMs?: number;
}

/** What the harness reports on a probe. */
export interface GatewayProbe {
  /** `process.memoryUsage()`, right after two full garbage collections unless the probe asked for none. */
  readonly memory: NodeJS.MemoryUsage;
  /** Whether `gc` was available (started with `--expose-gc`). */
  readonly gc: boolean;
  readonly stats: GatewayStats;
  readonly metrics: { connections: Record<string, number>; publications: number; deliveries: number; drops: Record<string, number>; errors: number };
  /** Errors that escaped every handler and reached the process-level net. */
  readonly netErrors: number;
  readonly broker: ReturnType<MemoryBroker['stats']>;
}

/** A pino line at `error` (50) or above. */
function isErrorLine(line: string): boolean {
  try {
    return ((JSON.parse(line) as { level?: number }).level ?? 0) >= 50;
  } catch {
    return line.trim() !== '';
  }
}

export class GatewayProcess {
  /** Pino lines at error level or above (and anything on stdout that is not JSON). */
  readonly errorLogs: string[] = [];
  stderr = '';
  #exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  readonly #probes = new Map<number, (p: GatewayProbe) => void>();
  #nextProbe = 1;
  #stdoutRest = '';

  private constructor(
    readonly child: ChildProcess,
    readonly pid: number,
    readonly port: number,
    readonly apiKey: string,
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get wsUrl(): string {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  /** How the process ended, once it has. */
  get exit(): { code: number | null; signal: NodeJS.Signals | null } | undefined {
    return this.#exit;
  }

  /** Starts the harness; resolves once the gateway listens. */
  static start(options: GatewayProcessOptions = {}): Promise<GatewayProcess> {
    if (!existsSync(HARNESS_SCRIPT)) throw new Error(`${HARNESS_SCRIPT} is missing: build first (npx tsc -b)`);
    const config: GatewayConfig = { host: '127.0.0.1', port: 0, logLevel: 'error', ...options.config };
    const node = [process.execPath, '--expose-gc', ...(options.nodeFlags ?? []), HARNESS_SCRIPT];
    const [command, ...args] = [...(options.wrap ?? []), ...node] as [string, ...string[]];
    const child = spawn(command, args, {
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      env: {
        ...process.env,
        TIDINGS_HARNESS_CONFIG: JSON.stringify(config),
        TIDINGS_HARNESS_DENY: options.deniedToken ?? '',
        TIDINGS_HARNESS_SECRET: options.secretNamespace ?? '',
      },
    });
    return new Promise((resolve, reject) => {
      let proc: GatewayProcess | undefined;
      const early: string[] = [];
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`the gateway process did not start within ${options.startTimeoutMs ?? 15_000} ms: ${early.join('')}`));
      }, options.startTimeoutMs ?? 15_000);
      child.stderr?.setEncoding('utf8');
      child.stderr?.on('data', (d: string) => {
        if (proc === undefined) early.push(d);
        else proc.stderr += d;
      });
      child.stdout?.setEncoding('utf8');
      child.stdout?.on('data', (d: string) => {
        if (proc === undefined) early.push(d);
        else proc.#stdout(d);
      });
      child.on('message', (msg: HarnessMessage) => {
        if (msg.type === 'ready') {
          clearTimeout(timer);
          proc = new GatewayProcess(child, msg.pid, msg.port, msg.apiKey);
          for (const text of early) proc.#stdout(text);
          resolve(proc);
        } else if (msg.type === 'probe') {
          if (proc !== undefined) proc.#probes.get(msg.id)?.(msg.probe as GatewayProbe);
        }
        else {
          clearTimeout(timer);
          reject(new Error(`the gateway process failed to start: ${msg.error}`));
        }
      });
      child.on('exit', (code, signal) => {
        clearTimeout(timer);
        if (proc === undefined) reject(new Error(`the gateway process exited (${code ?? signal}) before listening: ${early.join('')}`));
        else proc.#exit = { code, signal };
      });
    });
  }

  #stdout(text: string): void {
    const lines = (this.#stdoutRest + text).split('\n');
    this.#stdoutRest = lines.pop() ?? '';
    for (const line of lines) if (isErrorLine(line)) this.errorLogs.push(line);
  }

  /** The process has not exited and its PID exists. */
  alive(): boolean {
    if (this.#exit !== undefined) return false;
    try {
      process.kill(this.pid, 0);
      return true;
    } catch {
      return false;
    }
  }

  /** `GET /healthz`: status and parsed body (status 0 when it could not be reached). */
  async health(timeoutMs = 3000): Promise<{ status: number; body: { status?: string; connections?: Record<string, number>; channels?: number } }> {
    try {
      const res = await fetch(`${this.url}/healthz`, { signal: AbortSignal.timeout(timeoutMs) });
      return { status: res.status, body: (await res.json()) as { status?: string } };
    } catch {
      return { status: 0, body: {} };
    }
  }

  /** Resident memory from `/proc/<pid>/status`, in bytes. */
  rss(): number {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${this.pid}/status`, 'utf8'));
    return m === null ? NaN : Number(m[1]) * 1024;
  }

  /** Asks the harness for a probe, after full garbage collections unless `gc` is false (a quick look at the counters). */
  probe({ gc = true, timeoutMs = 10_000 }: { gc?: boolean; timeoutMs?: number } = {}): Promise<GatewayProbe> {
    const id = this.#nextProbe++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#probes.delete(id);
        reject(new Error(`no probe answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#probes.set(id, (p) => {
        clearTimeout(timer);
        this.#probes.delete(id);
        resolve(p);
      });
      this.child.send({ type: 'probe', id, gc });
    });
  }

  /** Publishes through `POST /api/publish` (server API); throws on a non-200 answer. */
  async publish(channel: string, data: unknown, extra: Partial<PublishRequest> = {}): Promise<PublishResult> {
    const { status, body } = await postOnce(`${this.url}/api/publish`, JSON.stringify({ channel, data, ...extra }), { authorization: `Bearer ${this.apiKey}` });
    if (status !== 200) throw new Error(`publish failed: ${status} ${body}`);
    return JSON.parse(body) as PublishResult;
  }

  /** The shape the test kit's subscribers take (`openSubscriber`); `gateway` is in another process. */
  testGateway(): TestGateway {
    const publish = (channel: string, data: unknown, extra?: Partial<PublishRequest>): Promise<PublishResult> => this.publish(channel, data, extra);
    const close = (): Promise<void> => this.stop();
    return {
      get gateway(): Gateway {
        throw new Error('the gateway runs in another process: use probe()');
      },
      url: this.url,
      wsUrl: this.wsUrl,
      port: this.port,
      publish,
      close,
    };
  }

  /** SIGTERM (graceful close), then SIGKILL after `graceMs`; resolves once the process exited. */
  stop(graceMs = 3000): Promise<void> {
    if (this.#exit !== undefined) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        try {
          process.kill(this.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }, graceMs);
      this.child.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      try {
        process.kill(this.pid, 'SIGTERM');
      } catch {
        clearTimeout(timer);
        resolve();
      }
    });
  }
}
