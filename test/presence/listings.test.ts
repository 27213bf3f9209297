/**
 * Presence listings are shared: however many requests list one channel at once, a node reads it at the
 * broker at most twice at a time (one read in flight, one queued), so a large room listed in a loop
 * cannot make a shared Redis run its listing script once per request. Every request still sees what
 * happened before it asked. Real Redis; the reads are counted by Redis itself (`INFO commandstats`).
 */
import { describe, expect, it } from 'vitest';
import type { PresenceResult } from '@tidings/protocol';
import { cleanupAfterEach, RawWsClient, startGateway, suiteRedis, TEST_API_KEY } from '@tidings/testing';

const cleanup = cleanupAfterEach();
const redis = suiteRedis();

/** Scripts Redis has run (every broker call that is a script: listings, touches, publishes). */
async function scriptCalls(): Promise<number> {
  const info = String(await redis.command('INFO', 'commandstats'));
  let calls = 0;
  for (const m of info.matchAll(/^cmdstat_(?:evalsha|eval|fcall):calls=(\d+)/gm)) calls += Number(m[1]);
  return calls;
}

/** Polls an async check every 50 ms until it holds. */
async function eventually(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('presence listings', () => {
  it('read a channel at the broker at most twice at a time, however many ask, and each sees the joins before it', async () => {
    const gw = await startGateway({ broker: redis.url, apiKey: TEST_API_KEY, namespaces: { room: { presence: true } }, channelLinger: 0 });
    cleanup.push(() => gw.close());
    const channel = 'room:big';
    const members = await Promise.all(Array.from({ length: 20 }, () => RawWsClient.connect(gw.wsUrl)));
    for (const ws of members) cleanup.push(() => ws.terminate());
    for (const ws of members) expect((await ws.request({ type: 'subscribe', channel })).type).toBe('reply');
    const list = async (): Promise<PresenceResult> => {
      const res = await fetch(`${gw.url}/api/presence?channel=${encodeURIComponent(channel)}`, { headers: { authorization: `Bearer ${TEST_API_KEY}` } });
      expect(res.status).toBe(200);
      return (await res.json()) as PresenceResult;
    };
    // Settle: every member's add reached Redis.
    await eventually(async () => (await list()).clients.length === 20, 5000, 'all 20 listed');

    // Redis holds every client for 400 ms (a slow listing of a large room, seen from the node): the
    // 200 requests asked meanwhile wait on one read in flight and one queued, not on 200.
    const before = await scriptCalls();
    await redis.command('CLIENT', 'PAUSE', 400);
    const answers = await Promise.all(Array.from({ length: 200 }, list));
    const reads = (await scriptCalls()) - before;
    for (const answer of answers) expect(answer.clients).toHaveLength(20);
    // Two reads, plus the odd presence touch.
    expect(reads).toBeLessThanOrEqual(5);

    // A join made before a listing is asked for is in it, even while other listings are in flight.
    const late = await RawWsClient.connect(gw.wsUrl);
    cleanup.push(() => late.terminate());
    const busy = Promise.all(Array.from({ length: 50 }, list));
    expect((await late.request({ type: 'subscribe', channel })).type).toBe('reply');
    const session = late.ofType('welcome')[0]?.session;
    await eventually(async () => (await list()).clients.some((c) => c.client === session), 5000, 'the late member listed');
    await busy;
  });
});
