/**
 * Every connection and rate limit, hit and answered with its code: the connect rate (503 with
 * Retry-After; close 4503 naming the delay on WebSocket), the node's connection cap, connections per
 * IP and per user (429 `limit_exceeded`; per user across two nodes on one Redis), inbound frames and
 * publishes per connection, publishes per user on `POST /send`, and publishes per channel. A refusal
 * changes nothing else: the slot is free again once a connection ends, and other clients go on.
 */
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { connect } from 'node:net';
import type { Authenticator, GatewayConfig } from '@tidings/server';
import { attemptSubscribe, RawWsClient, signToken, startGateway, suiteRedis, TEST_SECRET, testClient, until, type AttemptOutcome, type AttemptTransport, type TestGateway } from '@tidings/testing';

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function gateway(config: GatewayConfig): Promise<TestGateway> {
  const gw = await startGateway({ channelLinger: 0, namespaces: { user: {}, chat: { clientPublish: true } }, ...config });
  cleanup.push(() => gw.close());
  return gw;
}
const tokenFor = (sub: string): Promise<string> => signToken({ sub, channels: [`user:${sub}`, 'chat:*'], publish: ['chat:*'] });

/** Opens a WebSocket and keeps it; resolves once welcomed. */
async function hold(gw: TestGateway, query = ''): Promise<RawWsClient> {
  const c = await RawWsClient.connect(`${gw.wsUrl}${query}`);
  cleanup.push(() => c.terminate());
  return c;
}

const count = (outcomes: AttemptOutcome[], pred: (o: AttemptOutcome) => boolean): number => outcomes.filter(pred).length;

describe('admission control: new connections per second', () => {
  it('admits the cap, refuses the excess with 503 + Retry-After (HTTP) or close 4503 naming the delay (WebSocket)', async () => {
    const gw = await gateway({ maxConnectRate: 5 });
    // Distinct channels: a poll its channel's group continues is not a new connection (see the poll-group tests).
    const outcomes = await Promise.all(Array.from({ length: 30 }, (_, i) => attemptSubscribe(gw.url, i % 2 === 0 ? 'websocket' : 'poll', `news${i}`)));
    const admitted = count(outcomes, (o) => o.result === 'subscribed');
    expect(admitted).toBeGreaterThanOrEqual(5);
    expect(admitted).toBeLessThanOrEqual(8);
    expect(count(outcomes, (o) => o.result === 'close' && o.code === 4503)).toBeGreaterThan(5);
    expect(count(outcomes, (o) => o.result === 'http' && o.status === 503 && o.code === 'unavailable')).toBeGreaterThan(5);
    expect(admitted + count(outcomes, (o) => (o.result === 'close' && o.code === 4503) || (o.result === 'http' && o.status === 503))).toBe(30);
    // The refusal says when to come back, and the node's health endpoint is never refused.
    const res = await fetch(`${gw.url}/poll?channel=fresh&timeout=0`);
    expect(res.status).toBe(503);
    expect(Number(res.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect((await fetch(`${gw.url}/healthz`)).status).toBe(200);
    const ws = await new Promise<{ code: number; reason: string }>((resolve) => {
      const s = new WebSocket(gw.wsUrl);
      s.on('error', () => undefined);
      s.on('close', (code, reason) => resolve({ code, reason: reason.toString() }));
    });
    expect(ws.code).toBe(4503);
    expect(ws.reason).toMatch(/retry after \d+ ms/);
    // A second later the bucket has refilled.
    await new Promise((r) => setTimeout(r, 1100));
    expect(await attemptSubscribe(gw.url, 'sse', 'news')).toEqual({ result: 'subscribed' });
  });
});

describe('admission control: new connections per address', () => {
  it('one address past maxConnectRatePerIp is told to wait (429, close 4503, an SSE error event); other addresses are admitted', async () => {
    const gw = await gateway({ maxConnectRatePerIp: 3, trustProxy: true });
    const transports: AttemptTransport[] = ['websocket', 'sse', 'poll'];
    // Distinct channels: no poll is one its channel's group continues (those are not new connections).
    const flood = await Promise.all(Array.from({ length: 15 }, (_, i) => attemptSubscribe(gw.url, transports[i % 3] ?? 'poll', `news${i}`, { forwardedFor: '203.0.113.7' })));
    const admitted = count(flood, (o) => o.result === 'subscribed');
    expect(admitted).toBeGreaterThanOrEqual(3);
    expect(admitted).toBeLessThanOrEqual(6);
    const told = (o: AttemptOutcome): boolean =>
      (o.result === 'close' && o.code === 4503) || (o.result === 'error' && o.code === 'limit_exceeded') || (o.result === 'http' && o.status === 429 && o.code === 'limit_exceeded');
    expect(admitted + count(flood, told)).toBe(15);
    for (const t of transports) expect(await attemptSubscribe(gw.url, t, 'news', { forwardedFor: '203.0.113.8' })).toEqual({ result: 'subscribed' });
    // The HTTP refusal says when to come back.
    const poll = (channel: string): Promise<Response> => fetch(`${gw.url}/poll?channel=${channel}&timeout=0`, { headers: { 'x-forwarded-for': '203.0.113.9' } });
    for (let i = 0; i < 3; i++) expect((await poll(`other${i}`)).status).toBe(200);
    const refused = await poll('other3');
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(await refused.json()).toMatchObject({ error: { code: 'limit_exceeded', reason: expect.stringMatching(/from this address; retry in \d+ ms/) as unknown } });
  });
});

describe('connection caps', () => {
  it('per node: past maxConnections, 503 (close 4503); a slot frees when a connection ends', async () => {
    const gw = await gateway({ maxConnections: 2 });
    const a = await hold(gw);
    await hold(gw);
    expect(await attemptSubscribe(gw.url, 'websocket', 'news')).toEqual({ result: 'close', code: 4503 });
    // SSE streams are refused as a stream that names the code and when to retry (EventSource gives up on HTTP errors).
    expect(await attemptSubscribe(gw.url, 'sse', 'news')).toEqual({ result: 'error', code: 'unavailable' });
    a.terminate();
    await expect.poll(() => attemptSubscribe(gw.url, 'sse', 'news'), { timeout: 3000 }).toEqual({ result: 'subscribed' });
  });

  it('per IP: past maxConnectionsPerIp, 429 limit_exceeded', async () => {
    const gw = await gateway({ maxConnectionsPerIp: 2 });
    await hold(gw);
    const b = await hold(gw);
    expect(await attemptSubscribe(gw.url, 'poll', 'news')).toEqual({ result: 'http', status: 429, code: 'limit_exceeded' });
    expect(await attemptSubscribe(gw.url, 'websocket', 'news')).toEqual({ result: 'close', code: 4503 });
    b.terminate();
    await expect.poll(() => attemptSubscribe(gw.url, 'poll', 'news'), { timeout: 3000 }).toEqual({ result: 'subscribed' });
  });

  it('per IP: an IPv6 client counts by its /64, which a new address in it does not escape', async () => {
    const gw = await gateway({ maxConnectionsPerIp: 2, trustProxy: true });
    const from = (address: string): { headers: Record<string, string> } => ({ headers: { 'x-forwarded-for': address } });
    for (const address of ['2001:db8::1', '2001:DB8:0:0:0:0:0:2']) {
      const c = await RawWsClient.connect(gw.wsUrl, from(address));
      cleanup.push(() => c.terminate());
    }
    expect(await attemptSubscribe(gw.url, 'websocket', 'news', { forwardedFor: '2001:db8::ffff:3' })).toEqual({ result: 'close', code: 4503 });
    expect(await attemptSubscribe(gw.url, 'poll', 'news', { forwardedFor: '2001:0db8:0000:0000:1:2:3:4' })).toEqual({ result: 'http', status: 429, code: 'limit_exceeded' });
    expect(await attemptSubscribe(gw.url, 'websocket', 'news', { forwardedFor: '2001:db8:0:1::1' })).toEqual({ result: 'subscribed' });
  });

  it('per user: past maxConnectionsPerUser, 429 for that user only', async () => {
    const gw = await gateway({ auth: { jwt: { secret: TEST_SECRET } }, maxConnectionsPerUser: 2 });
    const alice = await tokenFor('alice');
    const first = await hold(gw, `?token=${alice}`);
    await hold(gw, `?token=${alice}`);
    await expect.poll(() => attemptSubscribe(gw.url, 'sse', 'user:alice', { token: alice }), { timeout: 3000 }).toEqual({ result: 'error', code: 'limit_exceeded' });
    expect(await attemptSubscribe(gw.url, 'websocket', 'user:alice', { token: alice })).toEqual({ result: 'close', code: 4503 });
    // Long polls are not held connections: they are not counted per user.
    expect(await attemptSubscribe(gw.url, 'poll', 'user:alice', { token: alice })).toEqual({ result: 'subscribed' });
    expect(await attemptSubscribe(gw.url, 'sse', 'user:bob', { token: await tokenFor('bob') })).toEqual({ result: 'subscribed' });
    first.terminate();
    await expect.poll(() => attemptSubscribe(gw.url, 'sse', 'user:alice', { token: alice }), { timeout: 3000 }).toEqual({ result: 'subscribed' });
  });
});

describe('a client that leaves while its credentials are checked', () => {
  it('holds no slot afterwards, per node or per user (WebSocket and SSE)', async () => {
    // A slow hook: each client below is gone before it answers.
    const auth: Authenticator = {
      connect: () => new Promise((resolve) => setTimeout(() => resolve({ user: 'alice', anonymous: false }), 300)),
      canSubscribe: () => true,
      canPublish: () => true,
    };
    const gw = await startGateway({ channelLinger: 0, maxConnections: 1, maxConnectionsPerUser: 1 }, { auth });
    cleanup.push(() => gw.close());
    const opening = {
      websocket: 'GET /ws HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
      sse: 'GET /sse?channel=news HTTP/1.1\r\nHost: gw\r\n\r\n',
    };
    for (const transport of ['websocket', 'sse'] as const) {
      const socket = connect(gw.port, '127.0.0.1');
      socket.on('error', () => undefined);
      socket.write(opening[transport]);
      await new Promise((resolve) => setTimeout(resolve, 100));
      socket.resetAndDestroy();
      // The hook answers for the client that left.
      await new Promise((resolve) => setTimeout(resolve, 400));
      expect(await attemptSubscribe(gw.url, transport, 'news'), transport).toEqual({ result: 'subscribed' });
      expect(await attemptSubscribe(gw.url, transport === 'sse' ? 'websocket' : 'sse', 'news'), transport).toEqual({ result: 'subscribed' });
    }
  });
});

describe('per user across a cluster', () => {
  const redis = suiteRedis();

  it('holds maxConnectionsPerUser on one node for connections of a user that arrive at once', async () => {
    const gw = await gateway({ auth: { jwt: { secret: TEST_SECRET } }, maxConnectionsPerUser: 2, broker: redis.url, nodeId: 'n1' });
    const bob = await tokenFor('bob');
    // Thirty at the same instant, each kept open: welcomed, or closed 4503.
    const opened = await Promise.all(
      Array.from(
        { length: 30 },
        () =>
          new Promise<{ ws: WebSocket; welcomed: boolean }>((resolve) => {
            const ws = new WebSocket(`${gw.wsUrl}?token=${bob}`);
            cleanup.push(() => ws.terminate());
            ws.on('message', (data: Buffer) => {
              if ((JSON.parse(data.toString()) as { type: string }).type === 'welcome') resolve({ ws, welcomed: true });
            });
            ws.on('close', () => resolve({ ws, welcomed: false }));
            ws.on('error', () => undefined);
          }),
      ),
    );
    await new Promise((r) => setTimeout(r, 300));
    expect(opened.filter((o) => o.welcomed && o.ws.readyState === WebSocket.OPEN).length).toBe(2);
  }, 20_000);

  it('holds maxConnectionsPerUser over two nodes on one Redis', async () => {
    const config: GatewayConfig = { auth: { jwt: { secret: TEST_SECRET } }, maxConnectionsPerUser: 2, broker: redis.url, nodeId: 'n1' };
    const one = await gateway(config);
    const two = await gateway({ ...config, nodeId: 'n2' });
    const alice = await tokenFor('alice');
    const held = await hold(one, `?token=${alice}`);
    await hold(two, `?token=${alice}`);
    for (const gw of [one, two]) {
      await expect.poll(() => attemptSubscribe(gw.url, 'sse', 'user:alice', { token: alice }), { timeout: 3000 }).toEqual({ result: 'error', code: 'limit_exceeded' });
    }
    held.terminate();
    await expect.poll(() => attemptSubscribe(two.url, 'sse', 'user:alice', { token: alice }), { timeout: 3000 }).toEqual({ result: 'subscribed' });
  }, 20_000);
});

describe('rates', () => {
  it('inbound frames per connection: the excess gets limit_exceeded, the connection stays', async () => {
    const gw = await gateway({ maxFrameRate: 10 });
    const c = await hold(gw);
    for (let i = 1; i <= 60; i++) c.send({ type: 'ping', id: i });
    await c.until((x) => x.ofType('pong').length + x.ofType('error').length === 60, 5000);
    const pongs = c.ofType('pong').length;
    expect(pongs).toBeGreaterThanOrEqual(20);
    expect(pongs).toBeLessThanOrEqual(25);
    expect(new Set(c.ofType('error').map((f) => f.error.code))).toEqual(new Set(['limit_exceeded']));
    await new Promise((r) => setTimeout(r, 1000));
    expect(await c.request({ type: 'ping' })).toMatchObject({ type: 'pong' });
  });

  it('publishes per connection (WebSocket) and per user (POST /send)', async () => {
    const gw = await gateway({ maxPublishRate: 5 });
    const c = await hold(gw);
    const replies = await Promise.all(Array.from({ length: 30 }, (_, i) => c.request({ type: 'publish', message: { channel: 'chat:a', data: i } })));
    const published = replies.filter((r) => r.type === 'reply').length;
    expect(published).toBeGreaterThanOrEqual(10);
    expect(published).toBeLessThanOrEqual(12);
    expect(replies.filter((r) => r.type === 'error').every((r) => r.type === 'error' && r.error.code === 'limit_exceeded')).toBe(true);
    // Another connection has its own budget.
    const d = await hold(gw);
    expect(await d.request({ type: 'publish', message: { channel: 'chat:a', data: 'other' } })).toMatchObject({ type: 'reply' });
    // POST /send: one budget per address for anonymous clients.
    const sends = await Promise.all(
      Array.from({ length: 30 }, () => fetch(`${gw.url}/send`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"channel":"chat:b","data":1}' })),
    );
    const statuses = sends.map((r) => r.status);
    expect(statuses.filter((s) => s === 200).length).toBeLessThanOrEqual(12);
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThanOrEqual(18);
    expect(sends.find((r) => r.status === 429)?.headers.get('retry-after')).toBe('1');
  });

  it('publishes per channel, whoever publishes', async () => {
    const gw = await gateway({ maxChannelPublishRate: 5 });
    const clients = await Promise.all([hold(gw), hold(gw), hold(gw)]);
    const replies = await Promise.all(Array.from({ length: 30 }, (_, i) => (clients[i % 3] as RawWsClient).request({ type: 'publish', message: { channel: 'chat:hot', data: i } })));
    const published = replies.filter((r) => r.type === 'reply').length;
    expect(published).toBeGreaterThanOrEqual(10);
    expect(published).toBeLessThanOrEqual(12);
    // Another channel is not affected, and the server API is never limited by it.
    expect(await clients[0]?.request({ type: 'publish', message: { channel: 'chat:cold', data: 1 } })).toMatchObject({ type: 'reply' });
    await gw.publish('chat:hot', 'from the backend');
  });
});

describe('the SDK under admission control', () => {
  it('waits the delay a 4503 close names, plus jitter, however short its own backoff', async () => {
    const gw = await gateway({ maxConnectRate: 1 });
    await hold(gw);
    const client = testClient(gw.url, 'websocket', { backoff: { min: 10, max: 20 } });
    cleanup.push(() => client.close());
    const waits: Array<{ named: number; waited: number }> = [];
    let refusedAt: { at: number; named: number } | undefined;
    client.on('state', (s) => {
      const named = /retry after (\d+) ms/.exec(s.reason)?.[1];
      if (s.to.status === 'waiting' && named !== undefined) refusedAt = { at: Date.now(), named: Number(named) };
      if (s.to.status === 'connecting' && refusedAt !== undefined) {
        waits.push({ named: refusedAt.named, waited: Date.now() - refusedAt.at });
        refusedAt = undefined;
      }
    });
    client.subscribe('news');
    await until(() => client.state.status === 'connected', 10_000, 'connected once the bucket refilled');
    expect(waits.length).toBeGreaterThan(0);
    for (const { named, waited } of waits) {
      expect(waited).toBeGreaterThanOrEqual(named - 5);
      expect(waited).toBeLessThanOrEqual(named * 1.3 + 200);
    }
  }, 15_000);
});
