/**
 * How the node uses a networked broker: a channel lingers after its last subscriber left, so
 * consecutive long polls cost one broker subscribe, not one per poll; after the broker reports a
 * `reset` (its feed was interrupted), every joined channel is repaired from history before anything
 * live, so subscribers lose nothing; the periodic position check is one batched `tops()` read.
 */
import { describe, expect, it } from 'vitest';
import type { PollResponse } from '@tidings/protocol';
import { MemoryBroker, type Broker, type BrokerHandlers } from '@tidings/server';
import { cleanupAfterEach, faultyBroker, RawWsClient, startGateway, until } from '@tidings/testing';

const cleanup = cleanupAfterEach();

/** A memory broker that counts calls, can swallow live publications, and lets the test report a status. */
function observed(lossless = false): { broker: Broker; calls: Record<string, number>; mute: (on: boolean) => void; report: BrokerHandlers['status'] } {
  const inner = faultyBroker(new MemoryBroker({ maxChannels: 1000, dedupMaxKeys: 10 }), {});
  const calls: Record<string, number> = { subscribe: 0, unsubscribe: 0, tops: 0, history: 0 };
  let muted = false;
  let handlers: BrokerHandlers | undefined;
  const broker: Broker = {
    ...inner,
    // It swallows live publications when muted (unless a test says it does not).
    capabilities: { ...inner.capabilities, lossless },
    start: (h, settings) => {
      handlers = h;
      return inner.start({ ...h, publication: (pub) => (muted ? undefined : h.publication(pub)) }, settings);
    },
    // Counted for client channels: the gateway also subscribes its cluster control channel (`_ctl:all`) once.
    subscribe: (channel) => {
      if (!channel.startsWith('_')) calls.subscribe = (calls.subscribe ?? 0) + 1;
      return inner.subscribe(channel);
    },
    unsubscribe: (channel) => {
      if (!channel.startsWith('_')) calls.unsubscribe = (calls.unsubscribe ?? 0) + 1;
      return inner.unsubscribe(channel);
    },
    tops: (channels) => {
      calls.tops = (calls.tops ?? 0) + 1;
      return inner.tops(channels);
    },
  };
  return { broker, calls, mute: (on) => (muted = on), report: (status, reason) => handlers?.status(status, reason) };
}

describe('the hub on a networked broker', () => {
  it('lets a channel linger: consecutive long polls cost one broker subscribe', { timeout: 20_000 }, async () => {
    const { broker, calls } = observed();
    const gw = await startGateway({ channelLinger: 2000 }, { broker });
    cleanup.push(() => gw.close());
    let cursor = '';
    for (let i = 0; i < 20; i++) {
      const res = await fetch(`${gw.url}/poll?channel=lingering&timeout=0${cursor === '' ? '' : `&cursor=${encodeURIComponent(cursor)}`}`);
      cursor = ((await res.json()) as PollResponse).cursor;
    }
    expect(calls.subscribe).toBe(1);
    expect(calls.unsubscribe).toBe(0);
    // The channel's poll group holds it between polls.
    expect(gw.gateway.stats().polls.groups).toBe(1);
    expect(gw.gateway.stats().hub).toMatchObject({ channels: 1, subscribers: 1 });
    // Released once nobody came back for the linger time (the group's, then the channel's).
    await until(() => calls.unsubscribe === 1, 10_000, 'unsubscribed after lingering');
    expect(gw.gateway.stats().hub).toMatchObject({ channels: 0, lingering: 0 });
    expect(gw.gateway.stats().polls.groups).toBe(0);
  });

  it('repairs every joined channel from history after a reset, before anything live', async () => {
    const { broker, mute, report } = observed();
    const gw = await startGateway({ positionCheck: 60_000 }, { broker });
    cleanup.push(() => gw.close());
    const client = await RawWsClient.connect(gw.wsUrl);
    cleanup.push(() => client.terminate());
    for (const channel of ['r1', 'r2']) expect((await client.request({ type: 'subscribe', channel })).type).toBe('reply');
    await gw.publish('r1', 1);
    await client.until((c) => c.ofType('message').length === 1);
    // The feed goes quiet (an outage): these reach history but not the node.
    mute(true);
    report('down', 'test');
    for (let i = 2; i <= 5; i++) await gw.publish('r1', i);
    await gw.publish('r2', 1);
    mute(false);
    report('reset', 'test');
    await gw.publish('r1', 6);
    await client.until((c) => c.ofType('message').length === 7);
    const seqs = (channel: string): number[] => client.ofType('message').filter((f) => f.message.channel === channel).map((f) => f.message.position.seq);
    expect(seqs('r1')).toEqual([1, 2, 3, 4, 5, 6]);
    expect(seqs('r2')).toEqual([1]);
    expect(client.ofType('gap')).toEqual([]);
  });

  it('checks positions of every joined channel in one batched read', async () => {
    const { broker, calls } = observed();
    const gw = await startGateway({ positionCheck: 100 }, { broker });
    cleanup.push(() => gw.close());
    const client = await RawWsClient.connect(gw.wsUrl);
    cleanup.push(() => client.terminate());
    for (let i = 0; i < 30; i++) expect((await client.request({ type: 'subscribe', channel: `many-${i}` })).type).toBe('reply');
    const before = calls.tops ?? 0;
    await new Promise((r) => setTimeout(r, 550));
    const checks = (calls.tops ?? 0) - before;
    // About five checks of thirty channels each: one read per check, not one per channel.
    expect(checks).toBeGreaterThanOrEqual(3);
    expect(checks).toBeLessThanOrEqual(7);
  });

  it('does not check positions on a broker whose live feed cannot lose a publication', async () => {
    const { broker, calls } = observed(true);
    const gw = await startGateway({ positionCheck: 100 }, { broker });
    cleanup.push(() => gw.close());
    const client = await RawWsClient.connect(gw.wsUrl);
    cleanup.push(() => client.terminate());
    expect((await client.request({ type: 'subscribe', channel: 'one' })).type).toBe('reply');
    await gw.publish('one', 1);
    await new Promise((r) => setTimeout(r, 450));
    expect(calls.tops).toBe(0);
    expect(client.ofType('message').map((f) => f.message.data)).toEqual([1]);
  });
});
