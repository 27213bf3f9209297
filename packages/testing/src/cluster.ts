/**
 * A cluster as it runs in production: gateway nodes as separate processes (the built CLI,
 * `tidings serve --broker ...`), each on its own port with its own node id, sharing one broker and
 * one API key, behind nginx with the shipped config. Nodes can be stopped gracefully, killed with
 * SIGKILL mid-stream, and started again on the same port.
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { PublishRequest, PublishResult } from '@tidings/protocol';
import { postOnce, TEST_API_KEY } from './gateway.js';
import { startClusterNginx, type Nginx } from './nginx.js';
import { freePort } from './ports.js';

const CLI = fileURLToPath(new URL('../../server/dist/cli.js', import.meta.url));

export interface GatewayNode {
  readonly id: string;
  readonly port: number;
  readonly url: string;
  /** The running process (replaced by `start()` after a stop or kill). */
  readonly pid: number | undefined;
  /** Everything the process wrote (stdout and stderr), for failure messages. */
  readonly output: string;
  /** Starts the process (again) on the same port; resolves once it listens. */
  start(): Promise<void>;
  /** SIGTERM: the graceful drain; resolves with the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL: the node dies without a goodbye. */
  kill(): Promise<void>;
}

export interface NodeOptions {
  readonly broker: string;
  readonly id: string;
  /** Extra `serve` flags, e.g. `['--config', file]` or `['--poll-timeout', '2000']`. */
  readonly flags?: readonly string[];
}

/** One gateway node process. Not started until `start()`. */
export async function gatewayNode(opts: NodeOptions): Promise<GatewayNode> {
  const port = await freePort();
  let child: ChildProcess | undefined;
  let output = '';
  let exited: Promise<number | null> = Promise.resolve(null);
  const node: GatewayNode = {
    id: opts.id,
    port,
    url: `http://127.0.0.1:${port}`,
    get pid() {
      return child?.exitCode === null ? child.pid : undefined;
    },
    get output() {
      return output;
    },
    async start() {
      const args = [CLI, 'serve', '--port', String(port), '--host', '127.0.0.1', '--broker', opts.broker, '--node-id', opts.id, '--log-level', 'warn', ...(opts.flags ?? [])];
      const proc = spawn(process.execPath, args, { env: { ...process.env, TIDINGS_API_KEY: TEST_API_KEY, PORT: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
      child = proc;
      exited = new Promise((resolve) => proc.once('exit', (code) => resolve(code)));
      const seen = new Promise<void>((resolve, reject) => {
        const onData = (d: Buffer): void => {
          output += d.toString();
          if (output.includes(`listening on http://127.0.0.1:${port}`)) resolve();
        };
        proc.stdout?.on('data', onData);
        proc.stderr?.on('data', (d: Buffer) => (output += d.toString()));
        proc.once('exit', (code) => reject(new Error(`node ${opts.id} exited with ${code} before listening:\n${output}`)));
      });
      const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`node ${opts.id} did not listen within 15 s:\n${output}`)), 15_000).unref());
      await Promise.race([seen, timeout]);
    },
    async stop() {
      child?.kill('SIGTERM');
      return exited;
    },
    async kill() {
      child?.kill('SIGKILL');
      await exited;
    },
  };
  return node;
}

export interface Cluster {
  readonly nodes: readonly GatewayNode[];
  readonly nginx: Nginx;
  /** The cluster's address: nginx. */
  readonly url: string;
  /** Publishes through the HTTP API of the node at `via` (default: through nginx). */
  publish(channel: string, data: unknown, extra?: Partial<PublishRequest>, via?: string): Promise<PublishResult>;
  /** Stops nginx and every node (SIGKILL for any that will not stop). */
  close(): Promise<void>;
}

/** Starts `size` nodes on `broker` behind nginx with the shipped config. */
export async function startCluster(broker: string, size = 3, flags: readonly string[] = []): Promise<Cluster> {
  const nodes: GatewayNode[] = [];
  for (let i = 1; i <= size; i++) nodes.push(await gatewayNode({ broker, id: `node${i}`, flags }));
  try {
    await Promise.all(nodes.map((n) => n.start()));
  } catch (err) {
    await Promise.all(nodes.map((n) => n.kill()));
    throw err;
  }
  const nginx = await startClusterNginx(nodes.map((n) => n.port));
  return {
    nodes,
    nginx,
    url: nginx.url,
    async publish(channel, data, extra = {}, via = nginx.url) {
      const { status, body } = await postOnce(`${via}/api/publish`, JSON.stringify({ channel, data, ...extra }));
      if (status !== 200) throw new Error(`publish failed: ${status} ${body}`);
      return JSON.parse(body) as PublishResult;
    },
    async close() {
      await nginx.close();
      await Promise.all(
        nodes.map(async (n) => {
          if (n.pid === undefined) return;
          const stopped = await Promise.race([n.stop(), new Promise<'late'>((r) => setTimeout(() => r('late'), 5000))]);
          if (stopped === 'late') await n.kill();
        }),
      );
    },
  };
}
