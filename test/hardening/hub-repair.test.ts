/**
 * Finding 11: when the hub repairs a hole in the live feed and the history read fails, it retries with
 * backoff instead of inventing a gap; if history stays down it gives up with a clear signal (the
 * connection closes with 1013 "try again later", so clients resume from their position) and never
 * reports a gap for data that is still in history. The queue of publications held during a repair
 * is bounded.
 */
import { describe, expect, it } from 'vitest';
import { CloseCode } from '@tidings/protocol';
import { MemoryBroker } from '@tidings/server';
import { cleanupAfterEach, faultyBroker, RawWsClient, startGateway, until, type TestGateway } from '@tidings/testing';

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
