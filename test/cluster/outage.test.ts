/**
 * A broker outage, on every shared broker: the node keeps its client connections open and answers
 * `/readyz` 503 with the reason; publishes answer 503 `unavailable` with a retry hint; once the broker
 * is back the node resubscribes, repairs from history, and nothing is delivered twice or out of order.
 */
import { describe, expect, it } from 'vitest';
import { cleanupAfterEach, RawWsClient, startGateway, startNats, startRedis, TEST_API_KEY } from '@tidings/testing';

interface Outage {
  readonly url: string;
  /** Takes the broker down at once (SIGKILL), keeping its data. */
  down(): Promise<void>;
  /** Brings it back on the same address with its data. */
  up(): Promise<void>;
  stop(): Promise<void>;
}

const BROKERS: Array<[string, () => Promise<Outage>]> = [
  [
    'redis',
    async () => {
      const r = await startRedis({ persist: true });
      return { url: r.url, down: () => r.kill(), up: () => r.restart(), stop: () => r.stop() };
    },
  ],
  [
    'nats',
    async () => {
      const n = await startNats();
      return { url: n.url, down: () => n.kill(), up: () => n.restart({ keepStore: true }), stop: () => n.stop() };
    },
  ],
];

const cleanup = cleanupAfterEach();

async function publish(url: string, channel: string, data: unknown): Promise<Response> {
  return fetch(`${url}/api/publish`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${TEST_API_KEY}` },
    body: JSON.stringify({ channel, data, idempotencyKey: `outage-${String(data)}` }),
  });
}

describe.each(BROKERS)('a broker outage on %s', (_kind, start) => {
  it('keeps clients connected, answers 503 with a reason, then delivers everything once and in order', async () => {
    const broker = await start();
    cleanup.push(() => broker.stop());
    const gw = await startGateway({ broker: broker.url, positionCheck: 500 });
    cleanup.push(() => gw.close());
    const client = await RawWsClient.connect(gw.wsUrl);
    cleanup.push(() => client.terminate());
    expect((await client.request({ type: 'subscribe', channel: 'live' })).type).toBe('reply');
    for (let i = 1; i <= 10; i++) expect((await publish(gw.url, 'live', i)).status).toBe(200);
    await client.until((c) => c.ofType('message').length === 10);

    await broker.down();
    let ready: Response | undefined;
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      ready = await fetch(`${gw.url}/readyz`);
      if (ready.status === 503) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(ready?.status).toBe(503);
    expect(((await ready?.json()) as { reason: string }).reason).toMatch(/broker/);
    const refused = await publish(gw.url, 'live', 11);
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).not.toBeNull();
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('unavailable');
    expect(client.closed).toBe(false);

    await broker.up();
    for (let i = 11; i <= 20; i++) {
      for (let tries = 0; ; tries++) {
        const res = await publish(gw.url, 'live', i);
        if (res.status === 200) break;
        if (tries > 200) throw new Error(`publish ${i} kept failing: ${res.status}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    await client.until((c) => c.ofType('message').length >= 20, 15_000);
    expect(client.closed).toBe(false);
    expect(client.ofType('message').map((f) => f.message.data)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    expect(client.ofType('message').map((f) => f.message.position.seq)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    expect(client.ofType('gap')).toEqual([]);
    // Ready again once both the commands and the live feed are back.
    let readyAgain = 0;
    for (const stop = Date.now() + 10_000; readyAgain !== 200 && Date.now() < stop; await new Promise((r) => setTimeout(r, 100))) {
      readyAgain = (await fetch(`${gw.url}/readyz`)).status;
    }
    expect(readyAgain).toBe(200);
  }, 60_000);
});
