/**
 * The gateway as a child process, for hostile-input runs and the attack benchmark. Started by
 * {@link GatewayProcess} (`process.ts`) as `node --expose-gc dist/hostile/harness.js` with
 * an IPC channel; it runs the built `@tidings/server` exactly as `tidings serve` does (the same
 * `createGateway`, the same process-level net for escaped errors, pino logs on stdout), so a crash
 * is the death of this process and its memory is the gateway's alone. Over IPC it reports its port
 * once listening, and on request a probe: `process.memoryUsage()` (right after full garbage
 * collections unless asked not to collect), what the gateway holds (`stats()`), its counters (unexpected errors included) and
 * the broker's retained bytes.
 *
 * Configuration comes from the environment: `TIDINGS_HARNESS_CONFIG` (a JSON `GatewayConfig`),
 * `TIDINGS_HARNESS_DENY` (a token the authentication hook refuses) and
 * `TIDINGS_HARNESS_SECRET` (a namespace the hook lets nobody subscribe or publish to).
 * This module is a program, not part of the test kit's exports.
 * @module
 */
import { TidingsError, type Json } from '@tidings/protocol';
import {
  CounterMetrics,
  createGateway,
  createLogger,
  installProcessNet,
  MemoryBroker,
  resolveOptions,
  type Authenticator,
  type GatewayConfig,
  type Identity,
} from '@tidings/server';

/** Messages from the harness to its parent. */
export type HarnessMessage =
  | { readonly type: 'ready'; readonly port: number; readonly apiKey: string; readonly pid: number }
  | { readonly type: 'probe'; readonly id: number; readonly probe: unknown }
  | { readonly type: 'failed'; readonly error: string };

const send = (msg: HarnessMessage): void => {
  process.send?.(msg);
};

const config = JSON.parse(process.env.TIDINGS_HARNESS_CONFIG ?? '{}') as GatewayConfig;
const denied = process.env.TIDINGS_HARNESS_DENY ?? '';
const secret = process.env.TIDINGS_HARNESS_SECRET ?? '';

const ANONYMOUS: Identity = Object.freeze({ user: '', anonymous: true });

/** Tokens from the `token` query or a bearer header; one token refused; one namespace closed to everyone. */
const auth: Authenticator = {
  connect(info) {
    const bearer = /^Bearer\s+(\S+)$/i.exec(info.headers.authorization ?? '')?.[1];
    const token = info.url.searchParams.get('token') ?? bearer ?? '';
    if (denied !== '' && token === denied) return Promise.reject(new TidingsError('unauthorized', 'this token is refused'));
    return Promise.resolve(token === '' ? ANONYMOUS : { user: token.slice(0, 64), anonymous: false });
  },
  canSubscribe: (_identity, channel) => secret === '' || !channel.startsWith(`${secret}:`),
  canPublish: (_identity, channel) => secret === '' || !channel.startsWith(`${secret}:`),
};

const rpc = {
  echo: (data: Json | undefined): Json => data ?? null,
  slow: (): Promise<Json> => new Promise((resolve) => setTimeout(() => resolve('late'), 50)),
};

const gc = (globalThis as { gc?: () => void }).gc;

async function collect(): Promise<void> {
  // Two full collections with a turn between: weak callbacks (Buffer backing stores) run after the first.
  gc?.();
  await new Promise((r) => setTimeout(r, 50));
  gc?.();
  await new Promise((r) => setTimeout(r, 50));
}

async function main(): Promise<void> {
  const options = resolveOptions(config);
  const logger = createLogger(options.logLevel);
  const metrics = new CounterMetrics();
  const broker = new MemoryBroker({ maxChannels: options.maxChannels, dedupMaxKeys: options.dedupMaxKeys, maxHistoryBytes: options.maxHistoryBytes });
  const gateway = createGateway(config, { logger, metrics, broker, auth, rpc });
  const net = installProcessNet(logger, (site) => metrics.unexpectedError(site));
  const { port } = await gateway.listen();
  send({ type: 'ready', port, apiKey: gateway.apiKey, pid: process.pid });
  process.on('message', (msg: { type?: string; id?: number; gc?: boolean }) => {
    if (msg.type !== 'probe') return;
    void (msg.gc === false ? Promise.resolve() : collect()).then(() => {
      send({
        type: 'probe',
        id: msg.id ?? 0,
        probe: { memory: process.memoryUsage(), gc: gc !== undefined, stats: gateway.stats(), metrics: metrics.snapshot(), netErrors: net.count, broker: broker.stats() },
      });
    });
  });
  // The parent went away: nobody will stop this process, so stop now.
  process.on('disconnect', () => process.exit(0));
  process.once('SIGTERM', () => {
    gateway.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  });
}

main().catch((err: unknown) => {
  send({ type: 'failed', error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
  process.exit(1);
});
