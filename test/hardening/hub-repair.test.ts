/**
 * Finding 11: when the hub repairs a hole in the live feed and the history read fails, it retries with
 * backoff instead of inventing a gap; if history stays down it gives up with a clear signal (the
 * connection closes with 1013 "try again later", so clients resume from their position) and never
 * reports a gap for data that is still in history. The queue of publications held during a repair
 * is bounded.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CloseCode, type Position } from '@tidings/protocol';
import { MemoryBroker, RedisBroker } from '@tidings/server';
import { cleanupAfterEach, faultyBroker, RawWsClient, startGateway, startRedis, until, type RedisServer, type TestGateway } from '@tidings/testing';

const cleanup = cleanupAfterEach();

async function setup(failing: { on: boolean }, config: Parameters<typeof startGateway>[0] = {}): Promise<{ gw: TestGateway; c: RawWsClient }> {
  const broker = faultyBroker(new MemoryBroker({ maxChannels: 1000, dedupMaxKeys: 10 }), {
    dropLiveEvery: 3,
    // Only repair reads (with a position) fail; subscribing still works.
    failHistory: (_channel, since) => failing.on && since !== undefined,
  });
  const gw = await startGateway({ namespaces: { r: { historySize: 10_000 } }, positionCheck: 60_000, ...config }, { broker });
  cleanup.push(() => gw.close());
  const c = await RawWsClient.connect(gw.wsUrl);
  cleanup.push(() => c.terminate());
  expect((await c.request({ type: 'subscribe', channel: 'r:a' })).type).toBe('reply');
  return { gw, c };
}

describe('a failed repair read', () => {
  it('is retried until history answers: every publication arrives, in order, with no gap', async () => {
    const failing = { on: true };
    const { gw, c } = await setup(failing);
    for (let i = 1; i <= 12; i++) await gw.publish('r:a', i);
    setTimeout(() => (failing.on = false), 400);
    await c.until((x) => x.ofType('message').length === 12 || x.closed, 8000);
    expect(c.ofType('gap')).toEqual([]);
    expect(c.ofType('message').map((f) => f.message.position.seq)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
  });

  it('that keeps failing ends in a clear close (1013), never in a gap', async () => {
    const { gw, c } = await setup({ on: true });
    for (let i = 1; i <= 6; i++) await gw.publish('r:a', i);
    await c.until((x) => x.closed, 20_000);
    expect(c.closeCode).toBe(CloseCode.unavailable.code);
    expect(c.ofType('gap')).toEqual([]);
    expect(c.ofType('message').map((f) => f.message.position.seq)).toEqual([1, 2]);
  });

  it('holds a bounded number of publications while repairing', async () => {
    const { gw, c } = await setup({ on: true }, { maxResumeBuffer: 100 });
    for (let i = 1; i <= 400 && !c.closed; i++) await gw.publish('r:a', i);
    await c.until((x) => x.closed, 5000);
    expect(c.closeCode).toBe(CloseCode.unavailable.code);
    expect(c.ofType('gap')).toEqual([]);
    await until(() => gw.gateway.connections().websocket === 0, 3000, 'released');
  });
});

describe('publications lost from the live feed while a repair reads history', () => {
  it('are read again from history, not reported as a gap', async () => {
    // 2 is lost (a hole: the repair reads history, and its answer takes 300 ms); 4 is published and
    // lost after that read, so the repair's page ends at 3 and 5 waits in its queue behind a new hole.
    const lost = new Set(['2', '4']);
    const broker = faultyBroker(new MemoryBroker({ maxChannels: 1000, dedupMaxKeys: 10 }), { dropLive: (pub) => lost.has(pub.data), historyAnswerDelayMs: 300 });
    const gw = await startGateway({ namespaces: { r: { historySize: 10_000 } }, positionCheck: 60_000 }, { broker });
    cleanup.push(() => gw.close());
    const c = await RawWsClient.connect(gw.wsUrl);
    cleanup.push(() => c.terminate());
    expect((await c.request({ type: 'subscribe', channel: 'r:a' })).type).toBe('reply');
    for (let i = 1; i <= 5; i++) await gw.publish('r:a', i);
    await c.until((x) => x.ofType('message').length === 5 || x.ofType('gap').length > 0, 5000);
    expect(c.ofType('gap')).toEqual([]);
    expect(c.ofType('message').map((f) => f.message.data)).toEqual([1, 2, 3, 4, 5]);
  });
});

describe('a new epoch whose first publications the live feed lost', () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(() => redis.stop());

  /** A subscriber of `r:a` that has seen 1 and 2; then the store is wiped (a new life: every epoch changes). */
  async function wiped(positionCheck: number): Promise<{ gw: TestGateway; c: RawWsClient; old: Position; drop: Set<number> }> {
    await redis.command('FLUSHALL');
    const drop = new Set<number>();
    // Publications of the epoch after the wipe whose seq is in `drop` are lost from the live feed.
    const seen: { old?: Position } = {};
    const broker = faultyBroker(new RedisBroker({ url: redis.url }), { dropLive: (pub) => seen.old !== undefined && pub.position.epoch !== seen.old.epoch && drop.has(pub.position.seq) });
    const gw = await startGateway({ namespaces: { r: { historySize: 100 } }, positionCheck }, { broker });
    cleanup.push(() => gw.close());
    const c = await RawWsClient.connect(gw.wsUrl);
    cleanup.push(() => c.terminate());
    expect((await c.request({ type: 'subscribe', channel: 'r:a' })).type).toBe('reply');
    await gw.publish('r:a', 1);
    const old = (seen.old = (await gw.publish('r:a', 2)).position);
    await c.until((x) => x.ofType('message').length === 2, 3000);
    await redis.command('FLUSHALL');
    return { gw, c, old, drop };
  }

  it('are read from history once a later one shows the epoch: an epoch gap, then all of them', async () => {
    const { gw, c, old, drop } = await wiped(60_000);
    drop.add(1).add(2);
    for (let i = 3; i <= 5; i++) await gw.publish('r:a', i);
    await c.until((x) => x.ofType('message').length === 5, 5000);
    const [gap] = c.ofType('gap');
    expect(gap?.gap).toMatchObject({ channel: 'r:a', reason: 'epoch', from: old, to: { seq: 0 } });
    expect(gap?.gap.to.epoch).not.toBe(old.epoch);
    expect(c.ofType('gap')).toHaveLength(1);
    expect(c.ofType('message').map((f) => [f.message.position.epoch === old.epoch, f.message.data])).toEqual([
      [true, 1],
      [true, 2],
      [false, 3],
      [false, 4],
      [false, 5],
    ]);
  });

  it('are found by the position check when nothing follows them', async () => {
    const { gw, c, old, drop } = await wiped(100);
    drop.add(1);
    await gw.publish('r:a', 3);
    await c.until((x) => x.ofType('message').length === 3, 5000);
    expect(c.ofType('gap').map((f) => f.gap)).toMatchObject([{ channel: 'r:a', reason: 'epoch', from: old, to: { seq: 0 } }]);
    expect(c.ofType('message').map((f) => f.message.data)).toEqual([1, 2, 3]);
  });
});
