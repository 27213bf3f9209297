/**
 * Cluster control orders over the broker: `POST /api/disconnect` (API key) closes every connection of
 * a user on every node (close 4401 / `tidings:error unauthorized`), and no one else's; `POST /refresh`
 * landing on a node other than the SSE stream's is forwarded to the node that holds it (202), which
 * applies it, so the stream outlives its first token. Two gateways on one real Redis.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { postOnce, RawSseClient, RawWsClient, signToken, startGateway, suiteRedis, TEST_SECRET, type TestGateway } from '@tidings/testing';
import type { GatewayConfig } from '@tidings/server';

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});
const redis = suiteRedis();

const token = (sub: string, seconds = 3600): Promise<string> =>
  signToken({ sub, channels: [`user:${sub}`] }, { expiresIn: seconds });

async function twoNodes(): Promise<[TestGateway, TestGateway]> {
  const config: GatewayConfig = { auth: { jwt: { secret: TEST_SECRET } }, namespaces: { user: {} }, broker: redis.url, channelLinger: 0 };
  const one = await startGateway({ ...config, nodeId: 'n1' });
  cleanup.push(() => one.close());
  const two = await startGateway({ ...config, nodeId: 'n2' });
  cleanup.push(() => two.close());
  return [one, two];
}

describe('POST /api/disconnect', () => {
  it("closes every connection of the user on every node, and no one else's", async () => {
    const [one, two] = await twoNodes();
    const alice = await token('alice');
    const ws = await RawWsClient.connect(`${one.wsUrl}?token=${alice}`);
    cleanup.push(() => ws.terminate());
    const sse = await RawSseClient.open(`${two.url}/sse?channel=user:alice&token=${alice}`);
    cleanup.push(() => sse.close());
    const bob = await RawWsClient.connect(`${one.wsUrl}?token=${await token('bob')}`);
    cleanup.push(() => bob.terminate());
    await sse.until((s) => s.events.some((e) => e.event === 'tidings:welcome'));

    const noKey = await postOnce(`${two.url}/api/disconnect`, JSON.stringify({ user: 'alice' }), {});
    expect(noKey.status).toBe(401);
    const bad = await postOnce(`${two.url}/api/disconnect`, JSON.stringify({ who: 'alice' }));
    expect(bad.status).toBe(400);
    const res = await postOnce(`${two.url}/api/disconnect`, JSON.stringify({ user: 'alice', reason: 'account suspended' }));
    expect(res.status).toBe(200);
    await ws.until((c) => c.closed, 3000);
    expect([ws.closeCode, ws.closeReason]).toEqual([4401, 'account suspended']);
    await sse.until((s) => s.ended, 3000);
    expect(JSON.parse(sse.events.find((e) => e.event === 'tidings:error')?.data ?? '{}')).toMatchObject({ code: 'unauthorized' });
    await new Promise((r) => setTimeout(r, 300));
    expect(bob.closed).toBe(false);
    expect(await bob.request({ type: 'ping' })).toMatchObject({ type: 'pong' });
  }, 15_000);
});

describe('a close reason', () => {
  it('is cut to 123 bytes at a character boundary, however long and wherever it came from', async () => {
    const [one] = await twoNodes();
    const ws = await RawWsClient.connect(`${one.wsUrl}?token=${await token('alice')}`);
    cleanup.push(() => ws.terminate());
    const res = await postOnce(`${one.url}/api/disconnect`, JSON.stringify({ user: 'alice', reason: 'ü'.repeat(100) }));
    expect(res.status).toBe(200);
    await ws.until((c) => c.closed, 3000);
    expect([ws.closeCode, ws.closeReason]).toEqual([4401, 'ü'.repeat(61)]);
    expect((await fetch(`${one.url}/healthz`)).status).toBe(200);
  });
});

describe('POST /refresh on another node', () => {
  it('is forwarded to the node holding the stream (202), which applies it', async () => {
    const [one, two] = await twoNodes();
    const sse = await RawSseClient.open(`${one.url}/sse?channel=user:alice&token=${await token('alice', 2)}`);
    cleanup.push(() => sse.close());
    await sse.until((s) => s.events.some((e) => e.event === 'tidings:welcome'));
    const session = (JSON.parse(sse.events.find((e) => e.event === 'tidings:welcome')?.data ?? '{}') as { session: string }).session;
    expect(session.startsWith('n1-')).toBe(true);
    const garbage = await postOnce(`${two.url}/refresh`, JSON.stringify({ session, token: 'garbage' }), {});
    expect(garbage.status).toBe(401);
    const res = await postOnce(`${two.url}/refresh`, JSON.stringify({ session, token: await token('alice') }), {});
    expect(res.status).toBe(202);
    // Well past the first token's exp, the stream is still open.
    await new Promise((r) => setTimeout(r, 3500));
    expect(sse.ended).toBe(false);
    await one.publish('user:alice', 'still here');
    await sse.until((s) => s.events.some((e) => e.event === 'message'), 3000);
    // An unknown session id of a node that does not exist is still not found, not forwarded blindly.
    const none = await postOnce(`${one.url}/refresh`, JSON.stringify({ session: 'nonode', token: await token('alice') }), {});
    expect(none.status).toBe(404);
  }, 15_000);

  it('is rationed per user and for the node (every node reads every forwarded order): 429 with Retry-After past it', async () => {
    const [, two] = await twoNodes();
    const tokens = new Map<string, string>();
    const forward = async (user: string): Promise<{ status: number; retryAfter: string | undefined }> => {
      if (!tokens.has(user)) tokens.set(user, await token(user));
      const body = JSON.stringify({ session: 'n1-zzzz', token: tokens.get(user) });
      const res = await fetch(`${two.url}/refresh`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      await res.body?.cancel();
      return { status: res.status, retryAfter: res.headers.get('retry-after') ?? undefined };
    };
    const alice: number[] = [];
    for (let i = 0; i < 13; i++) alice.push((await forward('alice')).status);
    // A burst of 10 per user, then refused; another user is not held back by alice.
    expect(alice).toEqual([...Array<number>(10).fill(202), 429, 429, 429]);
    const refused = await forward('alice');
    expect(refused.status).toBe(429);
    expect(Number(refused.retryAfter)).toBeGreaterThan(0);
    expect((await forward('bob')).status).toBe(202);
    // 200 at once for the node (alice's 10 and bob's 1 count too): 25 more users send 10 each at once,
    // each within its own burst, and some are refused all the same.
    const users = Array.from({ length: 25 }, (_, u) => `user${u}`);
    for (const user of users) tokens.set(user, await token(user));
    const statuses = (await Promise.all(users.flatMap((user) => Array.from({ length: 10 }, () => forward(user))))).map((r) => r.status);
    expect(statuses.filter((st) => st !== 202 && st !== 429)).toEqual([]);
    expect(statuses.filter((st) => st === 429).length).toBeGreaterThan(0);
  }, 30_000);
});
