/**
 * A TCP proxy on a free loopback port, for faults a real network has: `blackhole()` keeps every
 * connection open but stops moving bytes (a dead peer behind a NAT), `cut()` resets every
 * connection, `resume()` moves bytes again.
 * @module
 */
import { createServer, connect, type Server, type Socket } from 'node:net';

export interface TcpProxy {
  readonly port: number;
  readonly url: string;
  /** Connections accepted so far. */
  readonly accepted: number;
  /** While true, connections that ask for a WebSocket upgrade are reset (a proxy that blocks WebSocket). */
  blockUpgrades: boolean;
  /** While true, connections that ask for a WebSocket upgrade are held open and never answered (a proxy that swallows them). */
  holdUpgrades: boolean;
  blackhole(): void;
  resume(): void;
  cut(): void;
  close(): Promise<void>;
}

export async function startProxy(targetPort: number): Promise<TcpProxy> {
  const pairs = new Set<[Socket, Socket]>();
  let holes = false;
  let accepted = 0;
  const server: Server = createServer((client) => {
    accepted += 1;
    const upstream = connect(targetPort, '127.0.0.1');
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    let first = true;
    let held = false;
    const forward = (from: Socket, to: Socket): void => {
      from.on('data', (chunk: Buffer) => {
        if (from === client && first) {
          first = false;
          const upgrade = /\r\nupgrade:\s*websocket/i.test(chunk.toString('latin1'));
          if (upgrade && proxy.blockUpgrades) {
            client.resetAndDestroy();
            upstream.destroy();
            return;
          }
          held = upgrade && proxy.holdUpgrades;
          if (held) {
            // The gateway never hears of it (so cannot time it out); the client waits for an answer.
            upstream.removeAllListeners().on('error', () => undefined).destroy();
            return;
          }
        }
        if (!holes && !held) to.write(chunk);
      });
    };
    forward(client, upstream);
    forward(upstream, client);
    const end = (): void => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  const cut = (): void => {
    for (const [a, b] of pairs) {
      a.resetAndDestroy();
      b.destroy();
    }
    pairs.clear();
  };
  const proxy: TcpProxy = {
    blockUpgrades: false,
    holdUpgrades: false,
    port,
    url: `http://127.0.0.1:${port}`,
    get accepted() {
      return accepted;
    },
    blackhole() {
      holes = true;
    },
    resume() {
      holes = false;
    },
    cut,
    close() {
      cut();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
  return proxy;
}
