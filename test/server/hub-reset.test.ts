/**
 * After the broker's feed was interrupted (`reset`), the hub repairs every joined channel from
 * history before anything live, on a real Redis: also when the broker lost its data meanwhile and the
 * channel went on in a new epoch, whose publications history holds and must be delivered, not
 * reported lost.
 */
import { expect, it } from 'vitest';
import { RedisBroker, type Broker, type BrokerStatus, type Publication } from '@tidings/server';
import { brokerSettings, cleanupAfterEach, faultyBroker, publishCommand, startProxy, startRedis, until } from '@tidings/testing';
import { Hub } from '../../packages/server/src/hub.js';

const cleanup = cleanupAfterEach();

async function started(broker: Broker, onPublication: (pub: Publication) => void, onStatus: (status: BrokerStatus) => void): Promise<Broker> {
  await broker.start({ publication: onPublication, presence: () => undefined, status: onStatus }, brokerSettings());
  cleanup.push(() => broker.close());
  return broker;
}

it('delivers what a new epoch published while the node was cut off, after the reset, though a publication arrives during the repair', async () => {
  const redis = await startRedis();
  cleanup.push(() => redis.stop());
  const proxy = await startProxy(redis.port);
  cleanup.push(() => proxy.close());
  const a = await started(new RedisBroker({ url: redis.url, gcInterval: 0, presenceSweep: 0 }), () => undefined, () => undefined);
  const statuses: BrokerStatus[] = [];
  // Node B reaches Redis through the proxy; its history reads take a round trip of 300 ms.
  const b = faultyBroker(new RedisBroker({ url: `redis://127.0.0.1:${proxy.port}`, gcInterval: 0, presenceSweep: 0 }), { historyDelayMs: 300 });
  const hub = new Hub(b, { repairLimit: 1000, maxRepairQueue: 1000 }, () => undefined);
  await started(
    b,
    (pub) => hub.onPublication(pub),
    (status) => {
      statuses.push(status);
      hub.onStatus(status);
    },
  );
  cleanup.push(() => hub.close());
  const got: string[] = [];
  await hub.join('news', { receive: (enc) => got.push(`${enc.pub.position.epoch}.${enc.pub.position.seq}`), presence: () => undefined, fail: () => undefined });
  const publish = async (data: string): Promise<string> => {
    const { position } = await a.publish(publishCommand('news', JSON.stringify(data)));
    return `${position.epoch}.${position.seq}`;
  };
  const before = [await publish('old 1'), await publish('old 2')];
  await until(() => got.length === 2, 5000, 'the first two');
  // B is cut off; Redis restarts without its data; A publishes three in the channel's new epoch.
  proxy.blackhole();
  proxy.cut();
  await redis.restart();
  const after: string[] = [];
  for (let i = 1; i <= 3; i++) {
    for (;;) {
      try {
        after.push(await publish(`new ${i}`));
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }
  // B comes back; while its repair read is on its way, A publishes a fourth.
  proxy.resume();
  proxy.cut();
  await until(() => statuses.includes('reset'), 10_000, 'the reset');
  await new Promise((r) => setTimeout(r, 50));
  after.push(await publish('new 4'));
  await until(() => got.length >= 6, 5000, () => `all six (got ${got.join(', ')})`);
  await new Promise((r) => setTimeout(r, 200));
  expect(got).toEqual([...before, ...after]);
});
