/**
 * Finding 3, end to end: one anonymous WebSocket subscribing to and unsubscribing from fresh channel
 * names, and polls naming fresh channels, create no durable state and never push a real channel's
 * history out; a resuming client gets exactly what it missed, with no `epoch` gap.
 */
import { describe, expect, it } from 'vitest';
import { MemoryBroker } from '@tidings/server';
import { cleanupAfterEach, RawWsClient, startGateway } from '@tidings/testing';

const cleanup = cleanupAfterEach();

describe('subscribe/unsubscribe churn on fresh channel names', () => {
  it('leaves real channels and their history untouched', async () => {
    const broker = new MemoryBroker({ maxChannels: 50, dedupMaxKeys: 10 });
    const gw = await startGateway({ maxChannels: 50, namespaces: { keep: { historySize: 100 } } }, { broker });
    cleanup.push(() => gw.close());
    const first = await gw.publish('keep:real', 1);
    await gw.publish('keep:real', 2);
    const churn = await RawWsClient.connect(gw.wsUrl);
    cleanup.push(() => churn.terminate());
    const socket = (churn.ws as unknown as { _socket: { cork(): void; uncork(): void } })._socket;
    // Twenty times the broker's channel bound, in batches, each pair answered before the next batch.
    for (let batch = 0; batch < 10; batch++) {
      socket.cork();
      for (let i = 0; i < 100; i++) {
        const channel = `keep:fresh-${batch}-${i}`;
        churn.send({ type: 'subscribe', id: `s${batch}-${i}`, channel });
        churn.send({ type: 'unsubscribe', id: `u${batch}-${i}`, channel });
      }
      socket.uncork();
      await churn.until((c) => c.ofType('reply').length + c.ofType('error').length === (batch + 1) * 200, 5000);
      for (let i = 0; i < 20; i++) await fetch(`${gw.url}/poll?channel=keep:polled-${batch}-${i}&timeout=0`);
    }
    const resumer = await RawWsClient.connect(gw.wsUrl);
    cleanup.push(() => resumer.terminate());
    await resumer.request({ type: 'subscribe', channel: 'keep:real', since: { epoch: first.position.epoch, seq: 0 } });
    await resumer.until((c) => c.ofType('message').length === 2);
    expect(resumer.ofType('gap')).toEqual([]);
    expect(resumer.ofType('message').map((f) => f.message.position)).toEqual([first.position, { epoch: first.position.epoch, seq: 2 }]);
    // Nothing but the real channel was stored, and every churn request was answered as asked.
    expect(broker.size).toBe(1);
    expect(churn.ofType('error')).toEqual([]);
  });
});
