/**
 * Ephemeral channels through the SDK, against a real gateway, on each transport. The server keeps no
 * history there and promises no resume, so a client that misses a seq (it was disconnected, or no
 * poll was waiting) will never get it: the SDK must deliver what comes next at once, never wait for
 * the missed seq, never resubscribe, and report no gap. The missed seqs are produced for real.
 */
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { type Client, type ClientOptions, type Gap, type Message, type TransportName, type WebSocketConstructor } from '@tidings/client';
import { MemoryBroker, type Broker, type GatewayConfig } from '@tidings/server';
import { cleanupAfterEach, publishCommand, startGateway, testClient, until, type TestGateway } from '@tidings/testing';

const KINDS: readonly TransportName[] = ['websocket', 'sse', 'poll'];
const CHANNEL = 'typing:room';
const cleanup = cleanupAfterEach();

// The namespace is configured here, not taken from the gateway's defaults.
const CONFIG: GatewayConfig = {
  pingInterval: 200,
  sseHeartbeat: 200,
  pollTimeout: 1000,
  namespaces: { typing: { ephemeral: true, clientPublish: true } },
};

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const urlOf = (input: RequestInfo | URL): string => (typeof input === 'string' ? input : input instanceof URL ? input.href : input.url);

async function gateway(broker: Broker, port = 0): Promise<TestGateway> {
  const gw = await startGateway({ ...CONFIG, port }, { broker });
  cleanup.push(() => gw.close());
  return gw;
}

function newBroker(): MemoryBroker {
  return new MemoryBroker({ maxChannels: 100, dedupMaxKeys: 100 });
}

/**
 * Counts what the server accepted as a subscription: WebSocket connections opened with the channel
 * in the connect request, `subscribe` frames sent on an open WebSocket, `/sse` streams it answered. One per connection is the subscription itself; any more would be a
 * resubscribe. (Attempts while the gateway is down reach no server, so they do not count.)
 */
function counting(): { subscribes: () => number; options: Pick<ClientOptions, 'WebSocket' | 'fetch'> } {
  let subscribes = 0;
  const Counting = function (url: string) {
    const ws = new WebSocket(url);
    if (new URL(url).searchParams.has('channel')) ws.once('open', () => (subscribes += 1));
    const send = ws.send.bind(ws);
    ws.send = ((data: string) => {
      if (data.includes('"type":"subscribe"')) subscribes += 1;
      send(data);
    }) as typeof ws.send;
    return ws;
  } as unknown as WebSocketConstructor;
  const fetchCounting: typeof fetch = async (input, init) => {
    const res = await fetch(input, init);
    if (urlOf(input).includes('/sse?') && res.ok) subscribes += 1;
    return res;
  };
  return { subscribes: () => subscribes, options: { WebSocket: Counting, fetch: fetchCounting } };
}

interface Watched {
  readonly client: Client;
  readonly got: Message[];
  readonly gaps: Gap[];
  /** Connections opened (each subscribes once). */
  connections: number;
}

function watch(url: string, kind: TransportName, options: ClientOptions = {}): Watched {
  const client = testClient(url, kind, options);
  cleanup.push(() => client.close());
  const w: Watched = { client, got: [], gaps: [], connections: 0 };
  client.on('state', (s) => {
    if (s.to.status === 'connected') w.connections += 1;
  });
  const sub = client.subscribe(CHANNEL);
  sub.on('message', (m) => w.got.push(m));
  sub.on('gap', (g) => w.gaps.push(g));
  return w;
}

const data = (w: Watched): number[] => w.got.map((m) => m.data as number);

/**
 * Publishes `from`, `from + 1`, ... until the client delivers one of them (an ephemeral channel is
 * live only: what is published before the client is subscribed again is not for it). Returns the
 * next number to publish.
 */
async function publishUntilDelivered(gw: TestGateway, w: Watched, from: number, what: string): Promise<number> {
  const deadline = Date.now() + 8000;
  let n = from;
  while (!data(w).some((d) => d >= from)) {
    if (Date.now() > deadline) {
      throw new Error(`${what}: nothing published from ${from} to ${n - 1} was delivered; delivered ${JSON.stringify(data(w))}`);
    }
    await gw.publish(CHANNEL, n++);
    await sleep(30);
  }
  return n;
}

/** Publishes five more and expects every one, in order, right after what came before. */
async function expectFlowing(gw: TestGateway, w: Watched, from: number): Promise<void> {
  const next = [from, from + 1, from + 2, from + 3, from + 4];
  for (const n of next) await gw.publish(CHANNEL, n);
  await until(() => data(w).includes(from + 4), 5000, `messages ${from}..${from + 4} delivered`);
  expect(data(w).slice(-5)).toEqual(next);
}

function expectIncreasing(values: readonly number[]): void {
  for (let i = 1; i < values.length; i++) expect(values[i]).toBeGreaterThan(values[i - 1] as number);
}

describe.each(KINDS)('ephemeral channel over %s', (kind) => {
  it('keeps delivering after seqs it missed while disconnected: no stall, no gap, no resubscribe', async () => {
    const broker = newBroker();
    let gw = await gateway(broker);
    const port = gw.port;
    const count = counting();
    const w = watch(gw.url, kind, count.options);
    await until(() => w.client.state.status === 'connected', 8000, 'connected');
    const afterFirst = await publishUntilDelivered(gw, w, 1, 'before the restart');
    await gw.close();
    // Published while the client has no gateway: these seqs are gone for it, for good.
    const missed: number[] = [];
    for (let i = 0; i < 3; i++) {
      const n = afterFirst + i;
      missed.push(n);
      await broker.publish(publishCommand(CHANNEL, String(n)));
    }
    gw = await gateway(broker, port);
    const start = afterFirst + missed.length;
    const next = await publishUntilDelivered(gw, w, start, 'after the restart (the SDK waits for a missed seq)');
    await expectFlowing(gw, w, next);

    expect(data(w).filter((d) => missed.includes(d))).toEqual([]);
    expectIncreasing(w.got.map((m) => m.position.seq));
    expect(w.gaps).toEqual([]);
    expect(w.got.every((m) => m.ephemeral === true)).toBe(true);
    if (kind !== 'poll') expect(count.subscribes()).toBe(w.connections);
    expect(w.client.state.status).toBe('connected');
  });

  it('adopts a new epoch after the stream is recreated, without resubscribing', async () => {
    let gw = await gateway(newBroker());
    const port = gw.port;
    const count = counting();
    const w = watch(gw.url, kind, count.options);
    await until(() => w.client.state.status === 'connected', 8000, 'connected');
    const afterFirst = await publishUntilDelivered(gw, w, 1, 'before the restart');
    const epoch = w.got[0]?.position.epoch;
    await gw.close();
    // A fresh broker: the channel's stream starts a new epoch, from seq 1.
    gw = await gateway(newBroker(), port);
    const next = await publishUntilDelivered(gw, w, afterFirst, 'in the new epoch (the SDK resubscribes instead of delivering)');
    await expectFlowing(gw, w, next);

    const later = w.got.filter((m) => (m.data as number) >= afterFirst);
    expect(later.every((m) => m.position.epoch !== epoch)).toBe(true);
    expectIncreasing(later.map((m) => m.position.seq));
    expect(w.gaps).toEqual([]);
    if (kind !== 'poll') expect(count.subscribes()).toBe(w.connections);
  });
});

describe('ephemeral channel over long polling, without any fault', () => {
  it('a publication between two polls does not hold back the ones after it', async () => {
    const gw = await gateway(newBroker());
    // Holds the client's polls back while the test publishes, so nobody is polling for a moment.
    let gate: Promise<void> | undefined;
    let open = (): void => undefined;
    let polls = 0;
    const gated: typeof fetch = async (input, init) => {
      if (urlOf(input).includes('/poll?')) {
        if (gate !== undefined) await gate;
        polls += 1;
      }
      return fetch(input, init);
    };
    const w = watch(gw.url, 'poll', { fetch: gated });
    // The first poll answers at once; the second is the one the server holds.
    await until(() => polls >= 2 && gw.gateway.connections().poll === 1, 8000, 'a poll held by the server');
    gate = new Promise((resolve) => (open = resolve));
    const next = await publishUntilDelivered(gw, w, 1, 'the first poll');
    // The next poll is held: this publication falls between two polls and is not kept for the client.
    await gw.publish(CHANNEL, next);
    gate = undefined;
    open();
    const after = await publishUntilDelivered(gw, w, next + 1, 'after a publication between two polls (the SDK waits for it)');
    await expectFlowing(gw, w, after);
    expect(data(w)).not.toContain(next);
    expectIncreasing(w.got.map((m) => m.position.seq));
    expect(w.gaps).toEqual([]);
  });
});
