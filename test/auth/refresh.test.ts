/**
 * Token expiry and refresh without reconnecting, at the protocol level. Tokens here live 3 s (JWT
 * `exp` has whole seconds): the server warns before `exp` (`expiring` frame on WebSocket,
 * `tidings:expiring` on SSE); a connection refreshed three times (a `refresh` frame, `POST /refresh`)
 * outlives every old token with its subscriptions, losing nothing; one that does not refresh is closed
 * at `exp` with 4403 / `tidings:error token_expired`; a long poll with an expired token gets 401
 * `token_expired`; a refresh for another user, or with a bad token, is refused and changes nothing.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Message } from '@tidings/protocol';
import { attemptSubscribe, postOnce, RawSseClient, RawWsClient, signToken, startGateway, TEST_SECRET, testClient, type TestGateway } from '@tidings/testing';

const LIFETIME = 3;
const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function gateway(): Promise<TestGateway> {
  const gw = await startGateway({ auth: { jwt: { secret: TEST_SECRET } }, namespaces: { user: {} }, channelLinger: 0 });
  cleanup.push(() => gw.close());
  return gw;
}
const token = (sub = 'alice', seconds = LIFETIME): Promise<string> =>
  signToken({ sub, channels: [`user:${sub}`] }, { expiresIn: seconds });

/** Publishes 1, 2, 3, ... to `channel` every `every` ms until stopped; resolves with how many. */
function steadily(gw: TestGateway, channel: string, every = 100): { stop: () => Promise<number> } {
  let n = 0;
  let stopped = false;
  const loop = (async (): Promise<void> => {
    while (!stopped) {
      await gw.publish(channel, ++n);
      await new Promise((r) => setTimeout(r, every));
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await loop;
      return n;
    },
  };
}
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i + 1);

describe('WebSocket', () => {
  it('warns before exp; refreshed three times, the connection outlives every token and loses nothing', async () => {
    const gw = await gateway();
    const c = await RawWsClient.connect(`${gw.wsUrl}?token=${await token()}`);
    cleanup.push(() => c.terminate());
    expect(await c.request({ type: 'subscribe', channel: 'user:alice' })).toMatchObject({ type: 'reply' });
    const feed = steadily(gw, 'user:alice');
    for (let round = 1; round <= 3; round++) {
      await c.until((x) => x.ofType('expiring').length === round, 5000);
      const warned = c.ofType('expiring')[round - 1]?.expiresAt as number;
      expect(warned - Date.now()).toBeGreaterThan(0);
      const reply = await c.request({ type: 'refresh', token: await token() });
      expect(reply).toMatchObject({ type: 'reply', result: { expiresAt: expect.any(Number) as unknown } });
    }
    const total = await feed.stop();
    await c.until((x) => x.ofType('message').length === total, 5000);
    expect(c.closed).toBe(false);
    expect(c.ofType('message').map((f) => (f.message).data)).toEqual(range(total));
    // More than three lifetimes of the first token have passed.
    expect(total).toBeGreaterThan(20);
  }, 30_000);

  it('closes with 4403 at exp when not refreshed', async () => {
    const gw = await gateway();
    const c = await RawWsClient.connect(`${gw.wsUrl}?token=${await token('alice', 2)}`);
    cleanup.push(() => c.terminate());
    await c.request({ type: 'subscribe', channel: 'user:alice' });
    await c.until((x) => x.closed, 5000);
    expect(c.closeCode).toBe(4403);
    expect(c.ofType('expiring')).toHaveLength(1);
    await expect.poll(() => gw.gateway.stats().sessions, { timeout: 3000 }).toBe(0);
  }, 10_000);

  it("refuses a refresh for another user or with a bad token, keeping the connection and its expiry", async () => {
    const gw = await gateway();
    const c = await RawWsClient.connect(`${gw.wsUrl}?token=${await token()}`);
    cleanup.push(() => c.terminate());
    await c.request({ type: 'subscribe', channel: 'user:alice' });
    expect(await c.request({ type: 'refresh', token: await token('bob') })).toMatchObject({ type: 'error', error: { code: 'forbidden' } });
    expect(await c.request({ type: 'refresh', token: 'garbage' })).toMatchObject({ type: 'error', error: { code: 'unauthorized' } });
    expect(await c.request({ type: 'refresh', token: await token('alice', -10) })).toMatchObject({ type: 'error', error: { code: 'token_expired' } });
    expect(await c.request({ type: 'refresh' } as never)).toMatchObject({ type: 'error', error: { code: 'bad_frame' } });
    await gw.publish('user:alice', 'still here');
    await c.until((x) => x.ofType('message').length === 1);
    // The refusals did not extend the token: the connection still ends at the first exp.
    await c.until((x) => x.closed, 6000);
    expect(c.closeCode).toBe(4403);
  }, 15_000);
});

describe('a token that grants less', () => {
  it('is refused while the connection is subscribed to what it does not grant: nothing outlives the tokens that granted it', async () => {
    const gw = await startGateway({ auth: { jwt: { secret: TEST_SECRET } }, namespaces: { user: {}, chat: {} }, channelLinger: 0 });
    cleanup.push(() => gw.close());
    const wide = (seconds: number): Promise<string> => signToken({ sub: 'alice', channels: ['user:alice', 'chat:*'] }, { expiresIn: seconds });
    const c = await RawWsClient.connect(`${gw.wsUrl}?token=${await wide(2)}`);
    cleanup.push(() => c.terminate());
    await c.request({ type: 'subscribe', channel: 'chat:room1' });
    await c.request({ type: 'subscribe', channel: 'user:alice' });
    const narrow = await token('alice');
    expect(await c.request({ type: 'refresh', token: narrow })).toMatchObject({ type: 'error', error: { code: 'forbidden', reason: expect.stringContaining('chat:room1') as unknown } });
    // Without the channel it does not grant, it is taken; one that grants it all is taken too.
    expect(await c.request({ type: 'unsubscribe', channel: 'chat:room1' })).toMatchObject({ type: 'reply' });
    expect(await c.request({ type: 'refresh', token: narrow })).toMatchObject({ type: 'reply' });
    expect(await c.request({ type: 'subscribe', channel: 'chat:room1' })).toMatchObject({ type: 'error', error: { code: 'forbidden' } });
    expect(await c.request({ type: 'refresh', token: await wide(3600) })).toMatchObject({ type: 'reply' });
    expect(await c.request({ type: 'subscribe', channel: 'chat:room1' })).toMatchObject({ type: 'reply' });
    // Over SSE, POST /refresh is refused the same way.
    const sse = await RawSseClient.open(`${gw.url}/sse?channel=chat:room2&token=${await wide(3600)}`);
    cleanup.push(() => sse.close());
    await sse.until((s) => s.events.some((e) => e.event === 'tidings:welcome'));
    const session = (JSON.parse(sse.events.find((e) => e.event === 'tidings:welcome')?.data ?? '{}') as { session: string }).session;
    const refused = await postOnce(`${gw.url}/refresh`, JSON.stringify({ session, token: narrow }), {});
    expect([refused.status, (JSON.parse(refused.body) as { error: { code: string } }).error.code]).toEqual([403, 'forbidden']);
  });
});

describe('SSE', () => {
  it('warns with tidings:expiring; POST /refresh three times keeps the stream past every exp with nothing lost', async () => {
    const gw = await gateway();
    const sse = await RawSseClient.open(`${gw.url}/sse?channel=user:alice&token=${await token()}`);
    cleanup.push(() => sse.close());
    await sse.until((s) => s.events.some((e) => e.event === 'tidings:welcome'));
    const session = (JSON.parse(sse.events.find((e) => e.event === 'tidings:welcome')?.data ?? '{}') as { session: string }).session;
    const feed = steadily(gw, 'user:alice');
    for (let round = 1; round <= 3; round++) {
      await sse.until((s) => s.events.filter((e) => e.event === 'tidings:expiring').length === round, 5000);
      const res = await postOnce(`${gw.url}/refresh`, JSON.stringify({ session, token: await token() }), {});
      expect(res.status).toBe(200);
      expect((JSON.parse(res.body) as { expiresAt: number }).expiresAt).toBeGreaterThan(Date.now());
    }
    const total = await feed.stop();
    const messages = (): number[] => sse.events.filter((e) => e.event === 'message').map((e) => (JSON.parse(e.data) as Message).data as number);
    await sse.until(() => messages().length === total, 5000);
    expect(messages()).toEqual(range(total));
    expect(sse.ended).toBe(false);
    expect(sse.events.some((e) => e.event === 'tidings:error')).toBe(false);
  }, 30_000);

  it('ends with tidings:error token_expired at exp when not refreshed; POST /refresh checks the user and the session', async () => {
    const gw = await gateway();
    const sse = await RawSseClient.open(`${gw.url}/sse?channel=user:alice&token=${await token('alice', 2)}`);
    cleanup.push(() => sse.close());
    await sse.until((s) => s.events.some((e) => e.event === 'tidings:welcome'));
    const session = (JSON.parse(sse.events.find((e) => e.event === 'tidings:welcome')?.data ?? '{}') as { session: string }).session;
    const answer = async (id: string, with_: string): Promise<[number, string]> => {
      const res = await postOnce(`${gw.url}/refresh`, JSON.stringify({ session: id, token: with_ }), {});
      return [res.status, (JSON.parse(res.body) as { error: { code: string } }).error.code];
    };
    // Another user's session is answered as none, and a bad token is refused whatever the session:
    // which sessions are live is told to nobody.
    const unknown = `${session.slice(0, session.lastIndexOf('-'))}-zzzz`;
    expect(await answer(session, await token('bob'))).toEqual([404, 'not_found']);
    expect(await answer(unknown, await token('bob'))).toEqual([404, 'not_found']);
    expect(await answer(session, 'garbage')).toEqual([401, 'unauthorized']);
    expect(await answer(unknown, 'garbage')).toEqual([401, 'unauthorized']);
    expect(await answer('x-1', await token())).toEqual([404, 'not_found']);
    await sse.until((s) => s.ended, 6000);
    const error = sse.events.find((e) => e.event === 'tidings:error');
    expect(JSON.parse(error?.data ?? '{}')).toMatchObject({ code: 'token_expired' });
  }, 15_000);
});

describe('long polling', () => {
  it('refuses a poll with an expired token with 401 token_expired; the next poll with a new token works', async () => {
    const gw = await gateway();
    const old = await token('alice', 1);
    expect(await attemptSubscribe(gw.url, 'poll', 'user:alice', { token: old })).toEqual({ result: 'subscribed' });
    await new Promise((r) => setTimeout(r, 2100));
    expect(await attemptSubscribe(gw.url, 'poll', 'user:alice', { token: old })).toEqual({ result: 'http', status: 401, code: 'token_expired' });
    expect(await attemptSubscribe(gw.url, 'poll', 'user:alice', { token: await token() })).toEqual({ result: 'subscribed' });
  }, 10_000);
});

describe('the SDK', () => {
  it.each(['websocket', 'sse', 'poll'] as const)(
    '%s: a token provider of short-lived tokens keeps the client subscribed across several lifetimes, nothing lost or repeated',
    async (transport) => {
      const gw = await gateway();
      let issued = 0;
      const client = testClient(gw.url, transport, {
        token: async () => {
          issued += 1;
          return token();
        },
      });
      cleanup.push(() => client.close());
      const states: string[] = [];
      client.on('state', (s) => states.push(s.to.status));
      const seen: number[] = [];
      const sub = client.subscribe('user:alice');
      sub.on('message', (m) => seen.push(m.data as number));
      await expect.poll(() => gw.gateway.stats().hub.subscribers, { timeout: 5000 }).toBe(1);
      const feed = steadily(gw, 'user:alice');
      // Three lifetimes of a token and then some (room for a refresh at the third expiry under load).
      await new Promise((r) => setTimeout(r, LIFETIME * 3000 + 1500));
      const total = await feed.stop();
      await expect.poll(() => seen.length, { timeout: 5000 }).toBe(total);
      expect(seen).toEqual(range(total));
      expect(issued).toBeGreaterThanOrEqual(4);
      // WebSocket and SSE refresh in place; a long poll just carries the new token on its next request.
      if (transport !== 'poll') expect(states.filter((s) => s === 'connected')).toHaveLength(1);
    },
    30_000,
  );

  it('reconnects at once with a fresh token when the connection is closed for an expired one', async () => {
    const gw = await gateway();
    let issued = 0;
    // The first token expires before the server's warning can be acted on (refresh is refused).
    const client = testClient(gw.url, 'websocket', { token: async () => (++issued === 2 ? 'not-a-token' : token('alice', issued === 1 ? 2 : 30)) });
    cleanup.push(() => client.close());
    const seen: number[] = [];
    client.subscribe('user:alice').on('message', (m) => seen.push(m.data as number));
    const states: string[] = [];
    client.on('state', (s) => states.push(`${s.to.status}:${s.reason}`));
    client.on('error', (e) => states.push(`error:${e.code}`));
    await expect.poll(() => gw.gateway.stats().hub.subscribers, { timeout: 5000 }).toBe(1);
    const feed = steadily(gw, 'user:alice');
    await new Promise((r) => setTimeout(r, 3500));
    const total = await feed.stop();
    await expect.poll(() => seen.length, { timeout: 5000 }).toBe(total);
    // The refused refresh was reported; the close for the expired token brought a reconnect, not a failure.
    expect(states.filter((s) => s.startsWith('connected'))).toHaveLength(2);
    expect(states).toContain('error:unauthorized');
    expect(seen).toEqual(range(total));
    expect(issued).toBeGreaterThanOrEqual(3);
  }, 15_000);
});
