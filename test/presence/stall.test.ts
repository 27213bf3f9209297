/**
 * A node that lives on after the cluster took it for dead: two gateways on one real broker (Redis,
 * NATS), and node A's presence refreshes fail for longer than the TTL (a stall, or calls timing out
 * while its broker connection stays up). Its entries are swept and their leaves announced; once its
 * refreshes get through again, its clients are listed again with a join, and the per-user connection
 * entries (the same store) count again, so the per-user limit still holds.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Channel, type PresenceClient, type PresenceResult, type ServerFrame } from '@tidings/protocol';
import { NatsBroker, RedisBroker, type Authenticator, type Broker, type Identity } from '@tidings/server';
import {
  attemptSubscribe,
  cleanupAfterEach,
  faultyBroker,
  RawWsClient,
  startGateway,
  startNats,
  startRedis,
  TEST_API_KEY,
  type NatsServer,
  type RedisServer,
  type TestGateway,
} from '@tidings/testing';

const cleanup = cleanupAfterEach();

/** The user is the `token` query parameter. */
const auth: Authenticator = {
  connect: (info) => {
    const token = info.url.searchParams.get('token');
    const identity: Identity = token === null ? { user: '', anonymous: true } : { user: token, anonymous: false };
    return Promise.resolve(identity);
  },
  canSubscribe: () => true,
  canPublish: () => true,
};

const TTL = 600;
/** The brokers' presence sweep period. */
const SWEEP = 100;

let redis: RedisServer;
let nats: NatsServer;
beforeAll(async () => {
  [redis, nats] = await Promise.all([startRedis(), startNats()]);
}, 30_000);
afterAll(async () => {
  await redis?.stop();
  await nats?.stop();
});

const prefix = `stall${Date.now().toString(36)}`;
const brokers: Record<string, () => Broker> = {
  redis: () => new RedisBroker({ url: redis.url, presenceSweep: SWEEP, gcInterval: 0 }),
  nats: () => new NatsBroker({ url: nats.url, prefix, presenceSweep: SWEEP }),
};

async function gateway(nodeId: string, broker: Broker): Promise<TestGateway> {
  const gw = await startGateway(
    { nodeId, presenceTtl: TTL, channelLinger: 0, maxConnectionsPerUser: 2, namespaces: { room: { presence: true } } },
    { auth, broker },
  );
  cleanup.push(async () => {
    await gw.close();
    await broker.close();
  });
  return gw;
}

async function ws(gw: TestGateway, user: string): Promise<RawWsClient & { session: string }> {
  const c = await RawWsClient.connect(`${gw.wsUrl}?token=${user}`);
  cleanup.push(() => c.terminate());
  return Object.assign(c, { session: c.ofType('welcome')[0]?.session ?? '' });
}

async function listed(gw: TestGateway, channel: Channel): Promise<string[]> {
  const res = await fetch(`${gw.url}/api/presence?channel=${encodeURIComponent(channel)}`, { headers: { authorization: `Bearer ${TEST_API_KEY}` } });
  const body = (await res.json()) as PresenceResult;
  return body.clients.map((c: PresenceClient) => c.user).sort();
}

const events = (c: RawWsClient): string[] =>
  c.frames.filter((f: ServerFrame) => f.type === 'join' || f.type === 'leave').map((f) => (f.type === 'join' || f.type === 'leave' ? `${f.type} ${f.client.user}` : ''));

describe.each(Object.keys(brokers))('a node taken for dead while it lives (%s)', (name) => {
  it('is listed again, with a join, once its refreshes get through, and its connections count again per user', async () => {
    const make = brokers[name] as () => Broker;
    // Node A's presence refreshes fail while it is stalled (the rest of its broker works).
    let stalled = false;
    const brokerA = faultyBroker(make(), { failPresenceTouch: () => stalled });
    const a = await gateway('node-a', brokerA);
    const b = await gateway('node-b', make());
    const channel = `room:${name}-${Date.now().toString(36)}`;
    const olga = await ws(b, 'olga');
    await olga.request({ type: 'subscribe', channel });
    const walter = await ws(a, 'walter');
    await walter.request({ type: 'subscribe', channel });
    await ws(a, 'walter'); // walter's second connection: at his limit of 2
    await olga.until(() => events(olga).includes('join walter'));
    expect(await listed(b, channel)).toEqual(['olga', 'walter']);
    expect(await attemptSubscribe(b.url, 'websocket', 'room:x', { token: 'walter' })).toEqual({ result: 'close', code: 4503 });

    // Node A stalls past the TTL: its entries are swept, walter's leave is announced.
    stalled = true;
    await olga.until(() => events(olga).includes('leave walter'), TTL * 4);
    expect(await listed(b, channel)).toEqual(['olga']);

    // It goes on: its next refreshes find the entries gone and add them again.
    stalled = false;
    await olga.until(() => events(olga).filter((e) => e === 'join walter').length === 2, TTL * 2);
    await expect.poll(() => listed(b, channel), { timeout: TTL * 2 }).toEqual(['olga', 'walter']);
    // And they stay: no further leave.
    await new Promise((r) => setTimeout(r, TTL * 2));
    expect(await listed(b, channel)).toEqual(['olga', 'walter']);
    expect(events(olga)).toEqual(['join olga', 'join walter', 'leave walter', 'join walter']);
    // Walter's two connections on node A count again on node B.
    expect(await attemptSubscribe(b.url, 'websocket', 'room:x', { token: 'walter' })).toEqual({ result: 'close', code: 4503 });
  });
});
