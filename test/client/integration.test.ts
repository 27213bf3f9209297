/**
 * The client against a real gateway, on each transport: ordered exactly-once delivery, resume across
 * a server restart with publishing going on, explicit gaps, acked idempotent publishes queued while
 * down, requests, refused credentials, dead-connection detection, and clean-up.
 */
import { describe, expect, it } from 'vitest';
import type { Client, ClientOptions, Message, TransportName } from '@tidings/client';
import { TidingsError, type Gap } from '@tidings/protocol';
import { MemoryBroker, type Authenticator, type Broker, type GatewayConfig } from '@tidings/server';
import { cleanupAfterEach, publishCommand, startGateway, ownedTestClient, startProxy, until, type TestGateway } from '@tidings/testing';

/** The internal channels every gateway subscribes to at its broker: cluster control and the admin dashboard's snapshots. */
const CONTROL = 2;

const KINDS: readonly TransportName[] = ['websocket', 'sse', 'poll'];
const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const cleanup = cleanupAfterEach();

const CONFIG: GatewayConfig = {
  pingInterval: 200,
  sseHeartbeat: 200,
  pollTimeout: 1000,
  // Channels are let go at the broker as soon as their last subscriber leaves, so leak checks see it at once.
  channelLinger: 0,
  namespaces: { small: { historySize: 3 }, chat: { clientPublish: true, historySize: 1000 } },
};

async function gateway(broker: Broker, port = 0, extra: Partial<Parameters<typeof startGateway>[1]> = {}): Promise<TestGateway> {
  const gw = await startGateway({ ...CONFIG, port }, { broker, ...extra });
  cleanup.push(() => gw.close());
  return gw;
}

const client = (url: string, kind: TransportName, options: ClientOptions = {}): Client => ownedTestClient(cleanup, url, kind, options);

function publishDirect(broker: Broker, channel: string, data: unknown): Promise<unknown> {
  return broker.publish(publishCommand(channel, JSON.stringify(data)));
}

describe.each(KINDS)('client over %s', (kind) => {
  it('delivers each message once and in order, to listeners, type routes and async iteration', async () => {
    const gw = await gateway(new MemoryBroker({ maxChannels: 1000, dedupMaxKeys: 100 }));
    const c = client(gw.url, kind);
    const sub = c.subscribe('news');
    const seen: number[] = [];
    const typed: string[] = [];
    sub.on('message', (m) => seen.push(m.position.seq));
    c.on('chat.*', (m) => typed.push(m.type ?? ''));
    const iterated: number[] = [];
    const reading = (async () => {
      for await (const m of sub) {
        iterated.push(m.position.seq);
        if (iterated.length === 20) break;
      }
    })();
    await until(() => c.state.status === 'connected', 8000, 'connected');
    await until(() => sub.position !== undefined, 8000, 'start position');
    for (let i = 1; i <= 20; i++) await gw.publish('news', i, i % 5 === 0 ? { type: 'chat.message' } : {});
    await until(() => seen.length === 20);
    await reading;
    expect(seen).toEqual(range(1, 20));
    expect(iterated).toEqual(range(1, 20));
    expect(typed).toEqual(['chat.message', 'chat.message', 'chat.message', 'chat.message']);
    expect(c.transport).toBe(kind);
  });

  it('resumes across a server restart while publishing goes on: the exact sequence, no gap', async () => {
    const broker = new MemoryBroker({ maxChannels: 1000, dedupMaxKeys: 100 });
    let gw = await gateway(broker);
    const port = gw.port;
    const c = client(gw.url, kind);
    const sub = c.subscribe('feed');
    const got: number[] = [];
    const gaps: Gap[] = [];
    sub.on('message', (m: Message) => got.push(m.data as number));
    sub.on('gap', (g) => gaps.push(g));
    await until(() => sub.position !== undefined, 8000, 'start position');
    for (let i = 1; i <= 10; i++) await gw.publish('feed', i);
    await until(() => got.length >= 5);
    await gw.close();
    for (let i = 11; i <= 20; i++) await publishDirect(broker, 'feed', i);
    gw = await gateway(broker, port);
    for (let i = 21; i <= 30; i++) await gw.publish('feed', i);
    await until(() => got.length === 30, 10_000, '30 messages');
    expect(got).toEqual(range(1, 30));
    expect(gaps).toEqual([]);
  });

  it('reports an explicit gap when history no longer covers the outage, then continues', async () => {
    const broker = new MemoryBroker({ maxChannels: 1000, dedupMaxKeys: 100 });
    let gw = await gateway(broker);
    const port = gw.port;
    const c = client(gw.url, kind);
    const sub = c.subscribe('small:x');
    const got: number[] = [];
    const gaps: Gap[] = [];
    sub.on('message', (m) => got.push(m.position.seq));
    sub.on('gap', (g) => gaps.push(g));
    await until(() => sub.position !== undefined, 8000, 'start position');
    await gw.publish('small:x', 1);
    await until(() => got.length === 1);
    await gw.close();
    for (let i = 2; i <= 10; i++) await publishDirect(broker, 'small:x', i);
    gw = await gateway(broker, port);
    await until(() => got.length === 4, 10_000, 'resume');
    expect(gaps).toHaveLength(1);
    expect(gaps[0]).toMatchObject({ channel: 'small:x', from: { seq: 1 }, to: { seq: 7 }, reason: 'trimmed' });
    expect(got).toEqual([1, 8, 9, 10]);
  });

  it('publishes with an ack, queues while down and never publishes twice', async () => {
    const broker = new MemoryBroker({ maxChannels: 1000, dedupMaxKeys: 100 });
    let gw = await gateway(broker);
    const port = gw.port;
    const c = client(gw.url, kind);
    const first = await c.publish('chat:room', { n: 1 }, { type: 'chat.message' });
    expect(first).toMatchObject({ channel: 'chat:room', position: { seq: 1 }, duplicate: false });
    await gw.close();
    // Over WebSocket the outage is noticed at once; over HTTP transports the publish discovers it.
    if (kind === 'websocket') await until(() => c.state.status !== 'connected', 5000, 'noticed the outage');
    const queued = c.publish('chat:room', { n: 2 });
    await new Promise((r) => setTimeout(r, 100));
    gw = await gateway(broker, port);
    expect((await queued).position.seq).toBe(2);
    const again = await c.publish('chat:room', { n: 3 }, { idempotencyKey: 'same' });
    const dup = await c.publish('chat:room', { n: 3 }, { idempotencyKey: 'same' });
    expect(dup).toEqual({ ...again, duplicate: true });
    await expect(c.publish('news', 1)).rejects.toMatchObject({ code: 'forbidden' });
  });

  it('answers requests and times them out, holding nothing for those it gave up on', async () => {
    const gw = await gateway(new MemoryBroker({ maxChannels: 10, dedupMaxKeys: 10 }), 0, {
      rpc: { add: (d) => (d as number[]).reduce((a, b) => a + b, 0), hang: () => new Promise(() => undefined) },
    });
    const c = client(gw.url, kind);
    expect(await c.request('add', [1, 2, 3])).toBe(6);
    await expect(c.request('nope')).rejects.toMatchObject({ code: 'unknown_method' });
    const err = await c.request('hang', null, { timeout: 200 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TidingsError);
    expect((err as TidingsError).code).toBe('timeout');
    // Thirty more that never get a reply: once timed out, the transport keeps none of them.
    const outcomes = await Promise.all(Array.from({ length: 30 }, () => c.request('hang', null, { timeout: 100 }).catch((e: unknown) => (e as TidingsError).code)));
    expect(new Set(outcomes)).toEqual(new Set(['timeout']));
    expect(c.resources).toMatchObject({ queued: 0, awaiting: 0 });
    expect(await c.request('add', [4, 5])).toBe(9);
  });

  it('subscribes a channel anew from its own position when it is unsubscribed and subscribed again before the connection opens', async () => {
    const gw = await gateway(new MemoryBroker({ maxChannels: 10, dedupMaxKeys: 10 }));
    let at = await gw.publish('again', 1);
    for (let i = 2; i <= 6; i++) at = await gw.publish('again', i);
    const c = client(gw.url, kind);
    const first = c.subscribe('again');
    // The connection is on its way (a WebSocket asks for this subscription in its connect request).
    await new Promise((r) => setTimeout(r, 0));
    expect(c.state.status).toBe('connecting');
    first.unsubscribe();
    const sub = c.subscribe('again', { since: { epoch: at.position.epoch, seq: 2 } });
    const got: number[] = [];
    sub.on('message', (m) => got.push(m.data as number));
    await until(() => got.length === 4, 5000, () => `3 to 6 (got ${got.join(', ')})`);
    await gw.publish('again', 7);
    await until(() => got.length === 5, 5000, 'and 7');
    expect(got).toEqual([3, 4, 5, 6, 7]);
  });

  it('a channel unsubscribed and subscribed again at once, while connected, gets what the new subscription asks for, once', async () => {
    const gw = await gateway(new MemoryBroker({ maxChannels: 10, dedupMaxKeys: 10 }));
    let at = await gw.publish('again', 1);
    for (let i = 2; i <= 6; i++) at = await gw.publish('again', i);
    const c = client(gw.url, kind);
    c.subscribe('other');
    await until(() => c.state.status === 'connected', 5000, 'connected');
    // From 1 (a replay of 2..6), let go at once, then from now.
    c.subscribe('again', { since: { epoch: at.position.epoch, seq: 1 } }).unsubscribe();
    const sub = c.subscribe('again');
    const got: number[] = [];
    const errors: string[] = [];
    sub.on('message', (m) => got.push(m.data as number));
    sub.on('error', (e) => errors.push(e.code));
    await until(() => sub.position !== undefined && sub.position.seq >= 6, 5000, 'the new subscription started');
    await new Promise((r) => setTimeout(r, 200));
    for (let i = 7; i <= 9; i++) await gw.publish('again', i);
    await until(() => got.length >= 3, 5000, () => `7 to 9 (got ${got.join(', ')})`);
    await new Promise((r) => setTimeout(r, 200));
    expect(got).toEqual([7, 8, 9]);
    expect(errors).toEqual([]);
    expect(sub.active).toBe(true);
  });

  it('asks again on the same connection, after a backoff delay, when the server answers unavailable, until it answers otherwise', async () => {
    let calls = 0;
    const gw = await gateway(new MemoryBroker({ maxChannels: 10, dedupMaxKeys: 10 }), 0, {
      rpc: {
        // Its dependency is down for the first three calls.
        flaky: () => {
          calls += 1;
          if (calls <= 3) throw new TidingsError('unavailable', 'the inventory service is down');
          return 'in stock';
        },
      },
    });
    const c = client(gw.url, kind);
    c.subscribe('flaky-rpc');
    await until(() => c.state.status === 'connected', 5000, 'connected');
    const states: string[] = [];
    c.on('state', (change) => states.push(change.to.status));
    expect(await c.request('flaky', null, { timeout: 10_000 })).toBe('in stock');
    expect(calls).toBe(4);
    // The connection that carried the refusals was never taken for lost.
    expect(states).toEqual([]);
  });

  it('stops reconnecting when the token is refused, with a clear error', async () => {
    let attempts = 0;
    const auth: Authenticator = {
      connect: (info) => {
        attempts += 1;
        const token = info.url.searchParams.get('token') ?? info.headers.authorization?.replace(/^Bearer /, '');
        if (token === 'good') return Promise.resolve({ user: 'u', anonymous: false });
        return Promise.reject(new TidingsError('unauthorized', 'token rejected'));
      },
      canSubscribe: () => true,
      canPublish: () => true,
    };
    const gw = await gateway(new MemoryBroker({ maxChannels: 10, dedupMaxKeys: 10 }), 0, { auth });
    let calls = 0;
    const good = client(gw.url, kind, { token: () => (calls++, 'good') });
    good.subscribe('x');
    await until(() => good.state.status === 'connected', 8000, 'connected with a good token');
    expect(calls).toBe(1);
    const errors: TidingsError[] = [];
    const bad = client(gw.url, kind, { token: () => Promise.resolve('bad') });
    bad.on('error', (e) => errors.push(e));
    bad.subscribe('x');
    await until(() => bad.state.status === 'failed', 8000, 'failed');
    const seen = attempts;
    await new Promise((r) => setTimeout(r, 600));
    expect(attempts).toBe(seen);
    expect(errors.map((e) => e.code)).toEqual(['unauthorized']);
    await expect(bad.publish('x', 1)).rejects.toMatchObject({ code: 'unauthorized' });
  });

  it('detects a dead connection from missing heartbeats and reconnects', async () => {
    const gw = await gateway(new MemoryBroker({ maxChannels: 10, dedupMaxKeys: 10 }));
    const proxy = await startProxy(gw.port);
    cleanup.push(() => proxy.close());
    const c = client(proxy.url, kind);
    const sub = c.subscribe('hb');
    const got: number[] = [];
    sub.on('message', (m) => got.push(m.position.seq));
    await until(() => sub.position !== undefined, 8000, 'start position');
    const states: string[] = [];
    c.on('state', (s) => states.push(s.to.status));
    proxy.blackhole();
    await gw.publish('hb', 1);
    await until(() => states.includes('waiting'), 5000, 'dead connection noticed');
    proxy.cut();
    proxy.resume();
    await until(() => got.length === 1, 8000, 'resumed');
    expect(got).toEqual([1]);
  });

  it('releases everything after thousands of subscribe/unsubscribe cycles and close()', async () => {
    const broker = new MemoryBroker({ maxChannels: 5000, dedupMaxKeys: 10 });
    const gw = await gateway(broker);
    const c = client(gw.url, kind);
    const keep = c.subscribe('keep');
    await until(() => keep.position !== undefined, 8000, 'start position');
    const before = c.resources;
    /** What the gateway and the broker hold, in one comparable object. */
    const held = (): unknown => {
      const { sessions, hub, polls } = gw.gateway.stats();
      const { streams, subscribed } = broker.stats();
      // A long poll may be parked in its channels' poll groups (each group is the hub subscriber of its
      // channel) instead of holding a session: counted as the session and subscribers it replaces.
      return { sessions: sessions + polls.parked, hub: { ...hub, subscribers: hub.subscribers - polls.groups + polls.places }, broker: { streams, subscribed } };
    };
    // Only `keep` is held while it is subscribed (a long poll's session exists while the poll is held),
    // besides the cluster control channel every gateway subscribes to at the broker.
    const keeping = { sessions: 1, hub: { channels: 1, subscribers: 1, repairing: 0, lingering: 0 }, broker: { streams: 0, subscribed: 1 + CONTROL } };
    const nothing = { sessions: 0, hub: { channels: 0, subscribers: 0, repairing: 0, lingering: 0 }, broker: { streams: 0, subscribed: CONTROL } };
    const heldNow = (expected: unknown): boolean => JSON.stringify(held()) === JSON.stringify(expected);
    /** Waits until the gateway and broker hold `expected` and keep holding it for 300 ms (late requests have landed). */
    const steady = async (expected: unknown, what: string): Promise<void> => {
      const deadline = Date.now() + 10_000;
      let since: number | undefined;
      for (;;) {
        if (!heldNow(expected)) since = undefined;
        else since ??= Date.now();
        if (since !== undefined && Date.now() - since >= 300) return;
        if (Date.now() > deadline) expect(held(), `${what}: not steady within 10 s`).toEqual(expected);
        await new Promise((r) => setTimeout(r, 5));
      }
    };
    // A few subscriptions established at the gateway and the broker, then dropped: the counts see them.
    for (let i = 0; i < 3; i++) {
      const s = c.subscribe(`settled-${i}`);
      await until(() => s.position !== undefined, 8000, 'settled subscription started');
      await until(() => heldNow({ ...keeping, hub: { channels: 2, subscribers: 2, repairing: 0, lingering: 0 }, broker: { streams: 0, subscribed: 2 + CONTROL } }), 5000, 'the subscription is held');
      s.unsubscribe();
      await steady(keeping, `gateway and broker let go of settled-${i}`);
    }
    // 2000 quick cycles in runs, each run closed by a subscription the server answers before it is
    // dropped, so the cycles reach the gateway. A WebSocket run stays below the 64 requests a
    // connection may have in flight (beyond that they are refused; see inflight-limit.test.ts).
    const perRun = kind === 'websocket' ? 25 : 200;
    for (let run = 0; run < 2000 / perRun; run++) {
      for (let i = 0; i < perRun; i++) {
        const s = c.subscribe(`cycle-${(run * perRun + i) % 50}`);
        const off = s.on('message', () => undefined);
        c.on('x.*', () => undefined)();
        off();
        s.unsubscribe();
      }
      const s = c.subscribe(`answered-${run % 10}`);
      await until(() => s.position !== undefined, 8000, 'answered subscription started');
      s.unsubscribe();
    }
    // The last unsubscribes' replies may still be on their way: what waits for them goes when they come.
    await until(() => JSON.stringify(c.resources) === JSON.stringify(before), 5000, () => `client resources back to ${JSON.stringify(before)} (${JSON.stringify(c.resources)})`);
    await steady(keeping, "gateway and broker back to holding only 'keep' after the cycles");
    expect(gw.gateway.connections()[kind]).toBeLessThanOrEqual(1);
    c.close();
    expect(c.resources).toEqual({ subscriptions: 0, listeners: 0, queued: 0, awaiting: 0, timers: 0 });
    await until(() => gw.gateway.connections()[kind] === 0, 5000, 'server released the connection');
    await steady(nothing, 'gateway and broker released everything');
    // Subscribing alone created no stream at the broker (streams: 0 above): only a publish does.
    expect(broker.stats().historyBytes).toBe(0);
  });
});

describe('client restart handling', () => {
  it('comes back at once when the server says it is restarting, despite a long backoff', async () => {
    const gw = await gateway(new MemoryBroker({ maxChannels: 10, dedupMaxKeys: 10 }));
    const c = client(gw.url, 'websocket', { backoff: { min: 20_000, max: 30_000 } });
    c.subscribe('r');
    await until(() => c.state.status === 'connected');
    // The states it passes through, as they happen: polling for the short wait could miss it.
    const states: string[] = [];
    c.on('state', (s) => states.push(s.to.status));
    const started = Date.now();
    gw.gateway.disconnectAll('restart');
    await until(() => states.includes('waiting') && c.state.status === 'connected', 3000, 'reconnected quickly');
    expect(Date.now() - started).toBeLessThan(2500);
    expect(states.indexOf('waiting')).toBeLessThan(states.lastIndexOf('connected'));
  });
});

describe('server-suggested retry delay', () => {
  it('waits at least the SSE retry hint before reconnecting, even with a tiny backoff', async () => {
    const gw = await startGateway({ sseRetry: 1500 });
    cleanup.push(() => gw.close());
    const c = client(gw.url, 'sse', { backoff: { min: 10, max: 20 } });
    c.subscribe('hint');
    await until(() => c.state.status === 'connected');
    let waitingAt = 0;
    let reconnectedAt = 0;
    c.on('state', (s) => {
      if (s.to.status === 'waiting') waitingAt = Date.now();
      if (s.to.status === 'connected') reconnectedAt = Date.now();
    });
    gw.gateway.disconnectAll('going_away', 'maintenance');
    await until(() => reconnectedAt > 0, 5000, 'reconnected');
    expect(reconnectedAt - waitingAt).toBeGreaterThanOrEqual(1400);
  });
});

describe('upstream queue and credentials', () => {
  it('asks the token provider again on every reconnect', async () => {
    const gw = await startGateway({});
    cleanup.push(() => gw.close());
    let calls = 0;
    const c = client(gw.url, 'websocket', { token: () => `t${++calls}` });
    c.subscribe('tok');
    await until(() => c.state.status === 'connected');
    gw.gateway.disconnectAll('restart');
    await until(() => calls === 2 && c.state.status === 'connected', 5000, 'reconnected with a fresh token');
  });

  it('bounds what waits for a connection and says so when full', async () => {
    // Nothing listens on this port: every attempt fails, so publishes wait in the queue.
    const c = client('http://127.0.0.1:9', 'websocket', { maxQueue: 2, backoff: { min: 1000, max: 1000 } });
    const waiting = [c.publish('a', 1), c.publish('a', 2)];
    await expect(c.publish('a', 3)).rejects.toMatchObject({ code: 'limit_exceeded' });
    expect(c.resources.queued).toBe(2);
    c.close();
    for (const p of waiting) await expect(p).rejects.toMatchObject({ code: 'unavailable' });
    expect(c.resources).toEqual({ subscriptions: 0, listeners: 0, queued: 0, awaiting: 0, timers: 0 });
  });
});
