/**
 * Token refresh across an hour of fake time (an injected clock, `GatewayParts.clock`), through the SDK,
 * on every transport. Tokens live 20 minutes: a client whose token provider gives fresh tokens is
 * warned and refreshes three times in the hour, keeps its subscription (WebSocket and SSE without
 * reconnecting; long polls carry the new token on their next request) and receives every publication
 * of the hour once, in order. A client whose provider keeps handing out the same token is closed at its
 * `exp` and gets nothing published after it.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { TransportName } from '@tidings/client';
import { ManualClock, signToken, startGateway, TEST_SECRET, testClient, until } from '@tidings/testing';

const LIFETIME_S = 20 * 60;
const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const tokenAt = (clock: ManualClock): Promise<string> =>
  signToken({ sub: 'alice', channels: ['user:alice'] }, { issued: true, expiresIn: LIFETIME_S, now: clock.now() });

describe.each(['websocket', 'sse', 'poll'] as TransportName[])('%s, an hour of fake time', (transport) => {
  it('refreshed three times, keeps its subscription and receives everything once, in order', async () => {
    const clock = new ManualClock();
    const gw = await startGateway({ auth: { jwt: { secret: TEST_SECRET } }, namespaces: { user: {} }, channelLinger: 0 }, { clock });
    cleanup.push(() => gw.close());
    let issued = 0;
    const client = testClient(gw.url, transport, {
      token: async () => {
        issued += 1;
        return tokenAt(clock);
      },
    });
    cleanup.push(() => client.close());
    const states: string[] = [];
    client.on('state', (s) => states.push(s.to.status));
    const seen: number[] = [];
    client.subscribe('user:alice').on('message', (m) => seen.push(m.data as number));
    await until(() => gw.gateway.stats().hub.subscribers === 1, 5000, 'subscribed');
    for (let minute = 1; minute <= 60; minute++) {
      clock.advance(60_000);
      // The warning (WebSocket, SSE) is acted on in real time: give the refresh its round trip.
      await sleep(30);
      await gw.publish('user:alice', minute);
      await until(() => seen.length === minute, 5000, `minute ${minute} delivered`);
    }
    expect(seen).toEqual(Array.from({ length: 60 }, (_, i) => i + 1));
    // The first token and at least three refreshes (20-minute tokens over an hour).
    expect(issued).toBeGreaterThanOrEqual(4);
    if (transport !== 'poll') expect(states.filter((s) => s === 'connected')).toHaveLength(1);
  }, 60_000);

  it('is closed at exp when its provider keeps giving the same token, and gets nothing after', async () => {
    const clock = new ManualClock();
    const gw = await startGateway({ auth: { jwt: { secret: TEST_SECRET } }, namespaces: { user: {} }, channelLinger: 0 }, { clock });
    cleanup.push(() => gw.close());
    const stale = await tokenAt(clock);
    const client = testClient(gw.url, transport, { token: () => stale });
    cleanup.push(() => client.close());
    const reasons: string[] = [];
    client.on('state', (s) => reasons.push(s.reason));
    const seen: number[] = [];
    client.subscribe('user:alice').on('message', (m) => seen.push(m.data as number));
    await until(() => gw.gateway.stats().hub.subscribers === 1, 5000, 'subscribed');
    clock.advance((LIFETIME_S - 30) * 1000);
    await gw.publish('user:alice', 'before exp');
    await until(() => seen.length === 1, 10_000, 'the publication before exp');
    clock.advance(31_000);
    // WebSocket and SSE are closed by the server at exp; a long poll is refused at its next request.
    await until(() => reasons.some((r) => /expired/.test(r)), 5000, 'a close for the expired token');
    await until(() => gw.gateway.stats().hub.subscribers === 0, 5000, 'nothing subscribed for it');
    await gw.publish('user:alice', 'after exp');
    await sleep(500);
    expect(seen).toEqual(['before exp']);
  }, 30_000);
});
