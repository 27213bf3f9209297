/**
 * Presence in the session, without a network: joins and leaves are ephemeral signals under the
 * connection's bound (shed when the sink backs up, never a reason to disconnect); they reach a
 * subscription only once it is live; a sink that cannot carry them (a long poll) is not listed; an
 * add that failed is retried by the next refresh; a remove never overtakes its add.
 */
import { describe, expect, it } from 'vitest';
import type { CloseName, Gap, RequestId, SubscribeResult } from '@tidings/protocol';
import { CounterMetrics, MemoryBroker, openAuth, resolveOptions, type Broker, type PresenceEntry } from '@tidings/server';
import { brokerSettings } from '@tidings/testing';
import type { EncodedPresence, EncodedPublication } from '../../packages/server/src/encoded.js';
import { Hub } from '../../packages/server/src/hub.js';
import { Presence } from '../../packages/server/src/presence.js';
import { Session } from '../../packages/server/src/session.js';
import type { Sink } from '../../packages/server/src/sink.js';

class FakeSink implements Sink {
  bufferedBytes = 0;
  readonly events: string[] = [];
  closed: CloseName | undefined;
  subscribed(_result: SubscribeResult, _id: RequestId | undefined): void {}
  message(_enc: EncodedPublication): void {}
  gap(_gap: Gap): void {}
  close(name: CloseName): void {
    this.closed = name;
  }
}

class PresenceSink extends FakeSink {
  presence(enc: EncodedPresence): void {
    this.events.push(`${enc.event.kind} ${enc.event.entry.client}`);
  }
}

const other = (client: string): PresenceEntry => ({ client, user: client, info: undefined, node: 'n2' });

async function setup(broker: Broker = new MemoryBroker({ maxChannels: 100, dedupMaxKeys: 10 })) {
  const options = resolveOptions({ namespaces: { room: { presence: true } }, maxBufferedBytes: 1024, nodeId: 'n1' });
  const hub = new Hub(broker, { repairLimit: 100, maxRepairQueue: 100 }, () => undefined);
  const errors: unknown[] = [];
  const presence = new Presence(broker, 1000, (err) => errors.push(err));
  await broker.start({ publication: hub.onPublication, presence: hub.onPresence, status: () => undefined }, brokerSettings({ room: { historySize: 10, historyTtl: 60_000, ephemeral: false } }));
  const metrics = new CounterMetrics();
  const ctx = { hub, broker, options, auth: openAuth, metrics, nodeId: 'n1', idPrefix: 'n1-', presence };
  return { broker, hub, presence, metrics, errors, session: (sink: Sink) => new Session(ctx, sink, { user: 'me', anonymous: false, info: { a: 1 } }) };
}

describe('presence in the session', () => {
  it('sheds joins and leaves past the bound instead of disconnecting, and delivers them again once the sink drains', async () => {
    const { broker, metrics, session } = await setup();
    const sink = new PresenceSink();
    const s = session(sink);
    await s.subscribe('room:a', undefined);
    expect(sink.events).toEqual([`join ${s.id}`]);
    expect(await broker.presence('room:a')).toEqual([{ client: s.id, user: 'me', info: '{"a":1}', node: 'n1' }]);

    sink.bufferedBytes = 2048;
    await broker.presenceAdd('room:a', other('x'), 1000);
    await broker.presenceRemove('room:a', other('x'));
    expect(sink.events).toEqual([`join ${s.id}`]);
    expect(metrics.drops.ephemeral_backpressure).toBe(2);
    expect(s.closed).toBe(false);
    expect(sink.closed).toBeUndefined();

    sink.bufferedBytes = 0;
    await broker.presenceAdd('room:a', other('y'), 1000);
    expect(sink.events).toEqual([`join ${s.id}`, 'join y']);

    s.close('normal', 'bye');
    await new Promise((r) => setImmediate(r));
    expect(await broker.presence('room:a')).toEqual([other('y')]);
  });

  it('does not list a session whose sink cannot carry presence (a long poll), nor send it any', async () => {
    const { broker, presence, session } = await setup();
    const sink = new FakeSink();
    const s = session(sink);
    await s.subscribe('room:b', undefined);
    await broker.presenceAdd('room:b', other('x'), 1000);
    expect(presence.size).toBe(0);
    expect(await broker.presence('room:b')).toEqual([other('x')]);
    s.close('normal', 'bye');
  });

  it('retries a failed add at the next refresh, and chains a remove after its add', async () => {
    const inner = new MemoryBroker({ maxChannels: 100, dedupMaxKeys: 10 });
    let failAdds = 1;
    let releaseAdd: (() => void) | undefined;
    const broker: Broker = {
      capabilities: inner.capabilities,
      start: (handlers, settings) => inner.start(handlers, settings),
      publish: (cmd) => inner.publish(cmd),
      subscribe: (channel) => inner.subscribe(channel),
      unsubscribe: (channel) => inner.unsubscribe(channel),
      history: (channel, since, limit) => inner.history(channel, since, limit),
      tops: (channels) => inner.tops(channels),
      async presenceAdd(channel, entry, ttl) {
        if (failAdds > 0) {
          failAdds -= 1;
          throw new Error('broker down');
        }
        if (entry.client === 'slow') await new Promise<void>((r) => (releaseAdd = r));
        return inner.presenceAdd(channel, entry, ttl);
      },
      presenceRemove: (channel, entry) => inner.presenceRemove(channel, entry),
      presenceTouch: (items, ttl) => inner.presenceTouch(items, ttl),
      presence: (channel) => inner.presence(channel),
      close: () => inner.close(),
    };
    const { presence, errors } = await setup(broker);
    presence.add('room:c', other('a'));
    await new Promise((r) => setImmediate(r));
    expect(errors).toHaveLength(1);
    expect(await inner.presence('room:c')).toEqual([]);
    await presence.refresh();
    await new Promise((r) => setImmediate(r));
    expect(await inner.presence('room:c')).toEqual([other('a')]);

    // Removed while its add is still in flight: the remove waits, so no ghost entry is left.
    presence.add('room:c', other('slow'));
    presence.remove('room:c', 'slow');
    expect(presence.size).toBe(1);
    await new Promise((r) => setImmediate(r));
    releaseAdd?.();
    await presence.settled(1000);
    expect(await inner.presence('room:c')).toEqual([other('a')]);
    expect(errors).toHaveLength(1);
  });
});
