/**
 * An outage is not a reason to fall back. Against a real gateway with real timers: a WebSocket client
 * rides out an ordinary restart on WebSocket, remembers nothing and loses nothing; a client started
 * while the server is down connects over WebSocket once it is up; a publish-only client never
 * reports a dead server as connected and backs off. (That a transport which fails while the server
 * answers still falls back, through a real nginx, is test/client/fallback.test.ts.)
 */
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createClient, type Client, type ClientOptions, type ClientState, type TransportMemory, type TransportName, type WebSocketConstructor } from '@tidings/client';
import { MemoryBroker, type Broker, type GatewayConfig } from '@tidings/server';
import { cleanupAfterEach, publishCommand, startGateway, startNginx, startProxy, startRedis, until, type TestGateway } from '@tidings/testing';

const cleanup = cleanupAfterEach();

const CONFIG: GatewayConfig = {
  pingInterval: 500,
  sseHeartbeat: 500,
  pollTimeout: 1000,
  namespaces: { live: { historySize: 1000 }, chat: { clientPublish: true, historySize: 100 } },
};

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const urlOf = (input: RequestInfo | URL): string => (typeof input === 'string' ? input : input instanceof URL ? input.href : input.url);
const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

async function gateway(broker: Broker, port = 0): Promise<TestGateway> {
  const gw = await startGateway({ ...CONFIG, port }, { broker });
  cleanup.push(() => gw.close());
  return gw;
}

/** A port where nothing listens (a gateway that was there and is gone), to start one on later. */
async function deadPort(): Promise<number> {
  const gw = await startGateway(CONFIG);
  await gw.close();
  return gw.port;
}

function memory(): TransportMemory & { readonly items: Map<string, string> } {
  const items = new Map<string, string>();
  return { items, getItem: (k) => items.get(k) ?? null, setItem: (k, v) => void items.set(k, v) };
}

interface Watched {
  readonly client: Client;
  /** Every transport the client reported connected on. */
  readonly connectedOn: TransportName[];
  /** Downstream requests of the HTTP transports (the client tried SSE or long polling). */
  readonly httpStreams: string[];
  readonly states: Array<{ state: ClientState; at: number }>;
}

/** A client with every transport allowed (WebSocket first), watched. */
function watched(url: string, options: ClientOptions = {}): Watched {
  const httpStreams: string[] = [];
  const client = createClient(url, {
    WebSocket: WebSocket as unknown as WebSocketConstructor,
    fetch: (input, init) => {
      const text = urlOf(input);
      if (/\/(sse|poll)\?/.test(text)) httpStreams.push(text);
      return fetch(input, init);
    },
    openTimeout: 1500,
    heartbeatSlack: 500,
    pollTimeout: 1000,
    backoff: { min: 50, max: 500 },
    ...options,
  });
  cleanup.push(() => client.close());
  const w: Watched = { client, connectedOn: [], httpStreams, states: [] };
  client.on('state', (s) => {
    w.states.push({ state: s.to, at: Date.now() });
    if (s.to.status === 'connected') w.connectedOn.push(s.to.transport);
  });
  return w;
}

describe('an outage is retried on the best transport', () => {
  it('a WebSocket client rides out a 3 s gateway restart on WebSocket: nothing remembered, nothing lost', async () => {
    const broker = new MemoryBroker({ maxChannels: 100, dedupMaxKeys: 100 });
    let gw = await gateway(broker);
    const port = gw.port;
    const storage = memory();
    const w = watched(gw.url, { storage });
    const sub = w.client.subscribe('live:feed');
    const got: number[] = [];
    const gaps: unknown[] = [];
    sub.on('message', (m) => got.push(m.data as number));
    sub.on('gap', (g) => gaps.push(g));
    await until(() => w.client.state.status === 'connected' && sub.position !== undefined, 8000, 'connected');
    for (let i = 1; i <= 5; i++) await gw.publish('live:feed', i);
    await until(() => got.length === 5, 5000, 'first five');

    await gw.close();
    for (let i = 6; i <= 10; i++) await broker.publish(publishCommand('live:feed', String(i)));
    await sleep(3000);
    gw = await gateway(broker, port);
    for (let i = 11; i <= 15; i++) await gw.publish('live:feed', i);
    await until(() => got.length >= 15, 10_000, 'all fifteen after the restart');

    expect(got).toEqual(range(1, 15));
    expect(gaps).toEqual([]);
    expect(w.client.transport).toBe('websocket');
    expect(new Set(w.connectedOn)).toEqual(new Set(['websocket']));
    expect(w.httpStreams).toEqual([]);
    expect([...storage.items.values()].filter((t) => t !== 'websocket')).toEqual([]);
    // It kept trying during the outage, backing off, and never gave up.
    expect(w.states.filter((s) => s.state.status === 'connecting').length).toBeGreaterThan(2);
  });

  it('a client created while the server is down connects over WebSocket once it comes up', async () => {
    const port = await deadPort();
    const storage = memory();
    const w = watched(`http://127.0.0.1:${port}`, { storage });
    const sub = w.client.subscribe('live:later');
    const got: number[] = [];
    sub.on('message', (m) => got.push(m.data as number));
    await sleep(1500);
    expect(w.client.state.status).not.toBe('connected');
    const gw = await gateway(new MemoryBroker({ maxChannels: 100, dedupMaxKeys: 100 }), port);
    await until(() => w.client.state.status === 'connected' && sub.position !== undefined, 8000, 'connected once the server is up');
    expect(w.client.transport).toBe('websocket');
    await gw.publish('live:later', 1);
    await until(() => got.length === 1, 5000, 'a message');
    expect(w.connectedOn).toEqual(['websocket']);
    expect(w.httpStreams).toEqual([]);
    expect([...storage.items.values()].filter((t) => t !== 'websocket')).toEqual([]);
  });
});

/** The `ws` WebSocket, counting the attempts the client makes. */
function countingWebSocket(): { readonly attempts: string[]; readonly WebSocket: WebSocketConstructor } {
  const attempts: string[] = [];
  class Counting extends WebSocket {
    constructor(url: string | URL, protocols?: string | string[]) {
      super(url, protocols);
      attempts.push(String(url));
    }
  }
  return { attempts, WebSocket: Counting as unknown as WebSocketConstructor };
}

describe('telling a blocked transport from an outage', () => {
  it('a server that comes up between a failed WebSocket attempt and the reachability check: still WebSocket, nothing remembered', async () => {
    const port = await deadPort();
    const storage = memory();
    const ws = countingWebSocket();
    const streams: string[] = [];
    let up: Promise<TestGateway> | undefined;
    const w = watched(`http://127.0.0.1:${port}`, {
      storage,
      WebSocket: ws.WebSocket,
      // The gateway starts exactly when the client checks whether the server answers plain HTTP,
      // after its first WebSocket attempt was refused: the outage ends at the worst moment.
      fetch: async (input, init) => {
        const text = urlOf(input);
        if (/\/(sse|poll)\?/.test(text)) streams.push(text);
        else if (text.endsWith('/poll')) await (up ??= gateway(new MemoryBroker({ maxChannels: 100, dedupMaxKeys: 100 }), port));
        return fetch(input, init);
      },
    });
    const sub = w.client.subscribe('live:window');
    await until(() => w.client.state.status === 'connected' && sub.position !== undefined, 8000, 'connected');
    expect(up).toBeDefined();
    expect(w.client.transport).toBe('websocket');
    expect(ws.attempts).toHaveLength(2);
    expect(streams).toEqual([]);
    expect(storage.items.size).toBe(0);
  });

  // A proxy in front of a live gateway that resets upgrades (refused fast: tried once more) or
  // holds them unanswered (no answer in time: one open timeout spent on WebSocket, not two).
  it.each([
    ['a WebSocket refused while the server answers is tried once more, then the client falls back and remembers', 'blockUpgrades', 2],
    ['a WebSocket that gets no answer in time while the server answers is not tried again: the client falls back at once', 'holdUpgrades', 1],
  ] as const)('%s', async (_title, fault, attempts) => {
    const gw = await gateway(new MemoryBroker({ maxChannels: 100, dedupMaxKeys: 100 }));
    const proxy = await startProxy(gw.port);
    cleanup.push(() => proxy.close());
    proxy[fault] = true;
    const storage = memory();
    const ws = countingWebSocket();
    const w = watched(proxy.url, { storage, WebSocket: ws.WebSocket, openTimeout: 1000 });
    const sub = w.client.subscribe('live:proxied-upgrade');
    await until(() => w.client.state.status === 'connected' && sub.position !== undefined, 8000, 'connected');
    expect(w.client.transport).toBe('sse');
    expect(ws.attempts).toHaveLength(attempts);
    expect([...storage.items.values()]).toEqual(['sse']);
  });
});

describe('behind a reverse proxy', () => {
  it('a restart the proxy answers with 502 is an outage: the client stays on the transport that works there', async () => {
    const broker = new MemoryBroker({ maxChannels: 100, dedupMaxKeys: 100 });
    let gw = await gateway(broker);
    const port = gw.port;
    // This proxy strips WebSocket upgrades, so SSE is a genuine fallback here.
    const nginx = await startNginx(port, 'strip-upgrade');
    cleanup.push(() => nginx.close());
    const storage = memory();
    const w = watched(nginx.url, { storage });
    const sub = w.client.subscribe('live:proxied');
    const got: number[] = [];
    sub.on('message', (m) => got.push(m.data as number));
    await until(() => w.client.state.status === 'connected' && sub.position !== undefined, 10_000, 'connected');
    expect(w.client.transport).toBe('sse');
    expect([...storage.items.values()]).toEqual(['sse']);
    for (let i = 1; i <= 3; i++) await gw.publish('live:proxied', i);
    await until(() => got.length === 3, 5000, 'first three');

    await gw.close();
    for (let i = 4; i <= 6; i++) await broker.publish(publishCommand('live:proxied', String(i)));
    await sleep(2000);
    gw = await gateway(broker, port);
    for (let i = 7; i <= 9; i++) await gw.publish('live:proxied', i);
    await until(() => got.length >= 9, 10_000, 'all nine after the restart');

    expect(got).toEqual(range(1, 9));
    expect(w.client.transport).toBe('sse');
    expect(new Set(w.connectedOn)).toEqual(new Set(['sse']));
    expect(w.httpStreams.filter((u) => u.includes('/poll?'))).toEqual([]);
    expect([...storage.items.values()]).toEqual(['sse']);
  });
});

describe.each<[string, readonly TransportName[] | undefined]>([
  ['every transport', undefined],
  ['sse', ['sse']],
  ['poll', ['poll']],
])('a publish-only client on %s', (_name, transports) => {
  it('never reports a dead server as connected, and its retries back off', async () => {
    const port = await deadPort();
    const min = 50;
    const max = 800;
    // The top of every backoff window, so the delays are exactly the caps.
    const w = watched(`http://127.0.0.1:${port}`, { storage: null, random: () => 0.999, backoff: { min, max }, ...(transports === undefined ? {} : { transports }) });
    const published = w.client.publish('chat:room', { n: 1 });
    published.catch(() => undefined);
    await sleep(2500);

    expect(w.connectedOn).toEqual([]);
    const waits = w.states.filter((s) => s.state.status === 'waiting');
    const attempts = waits.map((s) => (s.state as { attempt: number }).attempt);
    expect(attempts).toEqual(range(1, attempts.length));
    // Over 2.5 s: windows of about 100, 200, 400, 800, 800 ms leave room for five or six attempts, not dozens.
    expect(waits.length).toBeGreaterThanOrEqual(3);
    expect(waits.length).toBeLessThanOrEqual(7);
    for (const wait of waits) {
      const i = w.states.indexOf(wait);
      const retried = w.states[i + 1];
      if (retried === undefined) continue;
      const attempt = (wait.state as { attempt: number }).attempt;
      const cap = Math.min(max, min * 2 ** attempt);
      expect(retried.state.status).toBe('connecting');
      expect(retried.at - wait.at).toBeGreaterThanOrEqual(Math.floor(0.999 * cap) - 20);
    }

    // Once the server is up, the queued publish goes through.
    const gw = await gateway(new MemoryBroker({ maxChannels: 100, dedupMaxKeys: 100 }), port);
    await expect(published).resolves.toMatchObject({ channel: 'chat:room', position: { seq: 1 } });
    expect(w.client.state.status).toBe('connected');
    expect(w.client.transport).toBe(transports?.[0] ?? 'websocket');
    await gw.publish('chat:room', 2);
  });
});

describe('a subscription the server cannot make for now', () => {
  it('a WebSocket client whose resubscribe is refused unavailable (the broker down) keeps it, asks again, and gets everything after', async () => {
    const redis = await startRedis();
    cleanup.push(() => redis.stop());
    const gw = await startGateway({ ...CONFIG, broker: redis.url });
    cleanup.push(() => gw.close());
    const proxy = await startProxy(gw.port);
    cleanup.push(() => proxy.close());
    const w = watched(`http://127.0.0.1:${proxy.port}`, { transports: ['websocket'] });
    const sub = w.client.subscribe('live:feed');
    const seen: number[] = [];
    const gaps: string[] = [];
    sub.on('message', (m) => seen.push(m.data as number));
    sub.on('gap', (g) => gaps.push(g.reason));
    await until(() => sub.position !== undefined, 5000, 'subscribed');
    await gw.publish('live:feed', 1);
    await until(() => seen.length === 1, 5000, 'the first message');
    // The broker goes down, and the client's connection with it: it reconnects, and its resubscribe
    // is refused `unavailable` (history cannot be read) while the broker is down.
    await redis.kill();
    proxy.cut();
    await until(() => w.states.filter((s) => s.state.status === 'connected').length >= 2, 5000, 'reconnected');
    await sleep(800);
    expect(sub.active).toBe(true);
    await redis.restart();
    // Once the broker is back, the subscription is made again and delivers (after the gap the
    // broker's lost data explains).
    await until(() => sub.position !== undefined && gaps.length > 0, 10_000, 'subscribed again, with a gap');
    for (let n = 2; n <= 4; n++) await gw.publish('live:feed', n);
    await until(() => seen.includes(4), 5000, 'messages after the outage');
    expect(seen).toEqual([1, 2, 3, 4]);
    expect(sub.active).toBe(true);
  }, 30_000);
});
