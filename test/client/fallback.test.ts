/**
 * Transport fallback for real: a real nginx in front of the gateway. Through a proxy that drops the
 * WebSocket upgrade the client must end up on SSE; through one that buffers responses, on long
 * polling; and deliver everything either way. The transport that worked is remembered.
 */
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createClient, type Client, type ClientOptions, type TransportMemory, type WebSocketConstructor } from '@tidings/client';
import { cleanupAfterEach, startGateway, startNginx, startProxy, until, type NginxMode, type TcpProxy, type TestGateway } from '@tidings/testing';

const cleanup = cleanupAfterEach();

function memory(): TransportMemory & { readonly items: Map<string, string> } {
  const items = new Map<string, string>();
  return { items, getItem: (k) => items.get(k) ?? null, setItem: (k, v) => void items.set(k, v) };
}

async function behind(mode: NginxMode): Promise<{ gw: TestGateway; url: string }> {
  // The namespace is configured here rather than taken from the gateway's defaults.
  const gw = await startGateway({ sseHeartbeat: 500, pingInterval: 500, pollTimeout: 2000, namespaces: { demo: { clientPublish: true } } });
  cleanup.push(() => gw.close());
  const nginx = await startNginx(gw.port, mode);
  cleanup.push(() => nginx.close());
  return { gw, url: nginx.url };
}

function client(url: string, storage: TransportMemory): Client {
  const c = createClient(url, {
    WebSocket: WebSocket as unknown as WebSocketConstructor,
    storage,
    openTimeout: 1500,
    heartbeatSlack: 1000,
    pollTimeout: 2000,
    backoff: { min: 50, max: 500 },
  });
  cleanup.push(() => c.close());
  return c;
}

describe.each<[NginxMode, string]>([
  ['strip-upgrade', 'sse'],
  ['buffer', 'poll'],
])('behind nginx that does %s', (mode, expected) => {
  it(`ends up on ${expected} and delivers everything, in order`, async () => {
    const { gw, url } = await behind(mode);
    const storage = memory();
    const c = client(url, storage);
    const sub = c.subscribe('through-proxy');
    const got: number[] = [];
    sub.on('message', (m) => got.push(m.data as number));
    await until(() => c.state.status === 'connected' && sub.position !== undefined, 10_000, 'connected with a start position');
    expect(c.transport).toBe(expected);
    for (let i = 1; i <= 25; i++) await gw.publish('through-proxy', i);
    await until(() => got.length === 25, 10_000, 'all 25 messages');
    expect(got).toEqual(Array.from({ length: 25 }, (_, i) => i + 1));
    const reply = await c.publish('demo:proxy', { ok: true });
    expect(reply.position.seq).toBe(1);
    expect([...storage.items.values()]).toEqual([expected]);

    // The next load starts where it worked last time: no time spent on the transports that failed.
    const again = client(url, storage);
    const started = Date.now();
    again.subscribe('through-proxy');
    await until(() => again.state.status === 'connected', 5000, 'second client connected');
    expect(again.transport).toBe(expected);
    expect(Date.now() - started).toBeLessThan(1500);
  });
});

/** A gateway behind a proxy that refuses WebSocket upgrades until the test lets them through. */
async function upgradesBlocked(): Promise<{ gw: TestGateway; proxy: TcpProxy }> {
  const gw = await startGateway({ sseHeartbeat: 500, pingInterval: 500 });
  cleanup.push(() => gw.close());
  const proxy = await startProxy(gw.port);
  cleanup.push(() => proxy.close());
  proxy.blockUpgrades = true;
  return { gw, proxy };
}

/** A client that prefers WebSocket, falls back to SSE and checks for WebSocket again every 300 ms. */
function upgrading(url: string, options: ClientOptions = {}): Client {
  const c = createClient(url, {
    WebSocket: WebSocket as unknown as WebSocketConstructor,
    storage: memory(),
    transports: ['websocket', 'sse'],
    openTimeout: 1500,
    upgradeAfter: 300,
    backoff: { min: 50, max: 300 },
    ...options,
  });
  cleanup.push(() => c.close());
  return c;
}

describe('background upgrade', () => {
  it('moves back to WebSocket once it works again, without losing or repeating a message', async () => {
    const { gw, proxy } = await upgradesBlocked();
    const c = upgrading(proxy.url);
    const sub = c.subscribe('upgrade');
    const got: number[] = [];
    sub.on('message', (m) => got.push(m.data as number));
    await until(() => c.state.status === 'connected' && sub.position !== undefined, 8000, 'connected');
    expect(c.transport).toBe('sse');
    for (let i = 1; i <= 5; i++) await gw.publish('upgrade', i);
    proxy.blockUpgrades = false;
    await until(() => c.transport === 'websocket', 8000, 'back on websocket');
    for (let i = 6; i <= 10; i++) await gw.publish('upgrade', i);
    await until(() => got.length >= 10, 8000, 'all ten');
    expect(got).toEqual(Array.from({ length: 10 }, (_, i) => i + 1));
  });

  it('opens no WebSocket once the client is closed while the check\'s token is on its way', async () => {
    const { proxy } = await upgradesBlocked();
    let created = 0;
    class Counted extends WebSocket {
      constructor(address: string) {
        super(address);
        created += 1;
      }
    }
    let tokens = 0;
    let connected = false;
    // Once connected, the token takes 300 ms: the check for WebSocket asks for one, and the client closes meanwhile.
    const token = async (): Promise<string> => {
      tokens += 1;
      if (connected) await new Promise((r) => setTimeout(r, 300));
      return 'anything';
    };
    const c = upgrading(proxy.url, { WebSocket: Counted as unknown as WebSocketConstructor, token });
    c.subscribe('closing');
    await until(() => c.state.status === 'connected', 8000, 'connected');
    expect(c.transport).toBe('sse');
    connected = true;
    const asked = tokens;
    await until(() => tokens > asked, 3000, 'the check asks for a token');
    proxy.blockUpgrades = false;
    const before = created;
    c.close();
    await new Promise((r) => setTimeout(r, 800));
    expect(created).toBe(before);
  });

  it('connects and delivers when storage refuses to remember the transport that worked', async () => {
    const { gw, proxy } = await upgradesBlocked();
    const refusing: TransportMemory = {
      getItem: () => null,
      setItem: () => {
        throw new Error('QuotaExceededError');
      },
    };
    const c = client(proxy.url, refusing);
    const sub = c.subscribe('no-storage');
    const got: number[] = [];
    sub.on('message', (m) => got.push(m.data as number));
    await until(() => c.state.status === 'connected' && sub.position !== undefined, 10_000, 'connected');
    expect(c.transport).toBe('sse');
    for (let i = 1; i <= 3; i++) await gw.publish('no-storage', i);
    await until(() => got.length === 3, 5000, 'all three');
    expect(got).toEqual([1, 2, 3]);
  });
});
