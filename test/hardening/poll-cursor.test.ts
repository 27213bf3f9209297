/**
 * Finding 2: a long poll over several channels whose first channels fill `maxPollMessages` must still
 * subscribe every channel before answering, return a cursor covering every requested channel, and
 * leave nothing subscribed once answered. Passing the cursor back, as documented, delivers every
 * publication of every channel exactly once, with no gap; the same when the answers are cut at about
 * `maxBufferedBytes`. SSE streams that end while subscribing
 * leave nothing behind either.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseCursor, type PollResponse } from '@tidings/protocol';
import { MemoryBroker } from '@tidings/server';
import { faultyBroker, startGateway, until, type TestGateway } from '@tidings/testing';

let gw: TestGateway;
const MAX = 10;
// A gateway per test, so what one test leaves behind cannot hide or fake another's result.
beforeEach(async () => {
  gw = await startGateway({ maxPollMessages: MAX, namespaces: { h: { historySize: 1000 } } });
});
afterEach(async () => {
  await gw.close();
});

async function hubChannels(): Promise<number> {
  const body = (await (await fetch(`${gw.url}/healthz`)).json()) as { channels: number };
  return body.channels;
}

async function poll(channels: string[], cursor: string): Promise<PollResponse> {
  const q = channels.map((c) => `channel=${c}`);
  if (cursor !== '') q.push(`cursor=${encodeURIComponent(cursor)}`);
  q.push('timeout=0');
  const res = await fetch(`${gw.url}/poll?${q.join('&')}`);
  expect(res.status).toBe(200);
  return (await res.json()) as PollResponse;
}

describe('a long poll whose messages fill maxBufferedBytes', () => {
  it('answers about that many bytes at a time (at least one message), and polling the cursor back loses nothing', async () => {
    await gw.close();
    const bound = 32 * 1024;
    gw = await startGateway({ maxBufferedBytes: bound, namespaces: { h: { historySize: 1000 } } });
    const channels = ['h:ba', 'h:bb'];
    let cursor = (await poll(channels, '')).cursor;
    const big = 'b'.repeat(8 * 1024);
    for (let n = 1; n <= 20; n++) for (const c of channels) await gw.publish(c, { n, big });
    const got = new Map<string, number[]>(channels.map((c) => [c, []]));
    let rounds = 0;
    for (; rounds < 40; rounds++) {
      const body = await poll(channels, cursor);
      expect(body.gaps).toEqual([]);
      const bytes = body.messages.reduce((n, m) => n + JSON.stringify(m).length, 0);
      if (body.messages.length > 1) expect(bytes).toBeLessThanOrEqual(bound);
      for (const m of body.messages) got.get(m.channel)?.push(m.position.seq);
      cursor = body.cursor;
      if (body.messages.length === 0) break;
    }
    // 320 KiB of messages, at most 32 KiB an answer.
    expect(rounds).toBeGreaterThanOrEqual(10);
    for (const c of channels) expect(got.get(c), c).toEqual(Array.from({ length: 20 }, (_, k) => k + 1));
  });
});

describe('a long poll whose first channels fill maxPollMessages', () => {
  it('returns a cursor for every requested channel, and polling it back loses nothing', async () => {
    const channels = ['h:pa', 'h:pb', 'h:pc', 'h:pd'];
    // Start every channel's cursor from before its first publication.
    let cursor = (await poll(channels, '')).cursor;
    expect([...parseCursor(cursor).keys()].sort()).toEqual([...channels].sort());
    const counts = [25, 7, 7, 7];
    for (const [i, c] of channels.entries()) for (let n = 1; n <= (counts[i] as number); n++) await gw.publish(c, n);
    const got = new Map<string, number[]>(channels.map((c) => [c, []]));
    for (let round = 0; round < 20; round++) {
      const body = await poll(channels, cursor);
      expect(body.gaps).toEqual([]);
      expect(body.messages.length).toBeLessThanOrEqual(MAX);
      expect([...parseCursor(body.cursor).keys()].sort()).toEqual([...channels].sort());
      for (const m of body.messages) got.get(m.channel)?.push(m.position.seq);
      cursor = body.cursor;
      if (body.messages.length === 0) break;
    }
    for (const [i, c] of channels.entries()) {
      expect(got.get(c), c).toEqual(Array.from({ length: counts[i] as number }, (_, k) => k + 1));
    }
  });

  it('leaves nothing subscribed on the node after many such polls but the poll groups they started', async () => {
    const channels = Array.from({ length: 12 }, (_, i) => `h:leak${i}`);
    const start = (await poll(channels, '')).cursor;
    for (let n = 1; n <= MAX + 5; n++) await gw.publish('h:leak0', n);
    for (let i = 0; i < 30; i++) await poll(channels, start);
    await until(() => false, 50).catch(() => undefined);
    const stats = gw.gateway.stats();
    expect(stats.sessions).toBe(0);
    expect(stats.polls.groups).toBe(12);
    // One subscriber per channel: its group.
    expect(stats.hub).toMatchObject({ channels: 12, subscribers: 12 });
  });

  it('leaves no channel subscribed on the node after many such polls on the ordinary path', async () => {
    await gw.close();
    // A subscribe hook is asked on the ordinary path only: every poll takes it, and no group starts.
    gw = await startGateway({ maxPollMessages: MAX, namespaces: { h: { historySize: 1000 } } }, { authorize: { subscribe: () => true } });
    const channels = Array.from({ length: 12 }, (_, i) => `h:leak${i}`);
    const start = (await poll(channels, '')).cursor;
    for (let n = 1; n <= MAX + 5; n++) await gw.publish('h:leak0', n);
    for (let i = 0; i < 30; i++) await poll(channels, start);
    await until(() => false, 50).catch(() => undefined);
    expect(gw.gateway.stats().polls.groups).toBe(0);
    expect(await hubChannels()).toBe(0);
  });
});

describe('streams that end while subscribing', () => {
  it('leave no channel subscribed on the node', async () => {
    // History reads take 10 ms, as over a network, so a stream of 40 channels takes a while to subscribe.
    await gw.close();
    gw = await startGateway({ namespaces: { h: { historySize: 1000 } } }, { broker: faultyBroker(new MemoryBroker({ maxChannels: 1000, dedupMaxKeys: 10 }), { historyDelayMs: 10 }) });
    const channels = Array.from({ length: 40 }, (_, i) => `h:sse${i}`).join(',');
    for (let i = 0; i < 5; i++) {
      const ctrl = new AbortController();
      const res = fetch(`${gw.url}/sse?channel=${channels}`, { signal: ctrl.signal }).catch(() => undefined);
      setTimeout(() => ctrl.abort(), 60);
      await res;
    }
    await until(() => false, 1000).catch(() => undefined);
    expect(await hubChannels()).toBe(0);
  });
});
