/**
 * The client SDK's presence on each transport, against a real gateway: `sub.presence()` lists who is
 * there (itself included on WebSocket and SSE; a long-polling client is not listed), `join` and
 * `leave` events follow (WebSocket and SSE; long polling carries none), a namespace without presence
 * is refused with `presence_disabled`, and closing the client removes its entry.
 */
import { describe, expect, it } from 'vitest';
import type { Client, ClientOptions, PresenceClient, TransportName } from '@tidings/client';
import type { ServerFrame } from '@tidings/protocol';
import type { Authenticator, Identity } from '@tidings/server';
import { cleanupAfterEach, ownedTestClient, RawWsClient, startGateway, until, type TestGateway } from '@tidings/testing';

const KINDS: readonly TransportName[] = ['websocket', 'sse', 'poll'];
const cleanup = cleanupAfterEach();

/** The user is the token (`token` query on WebSocket, bearer header on HTTP); its public info is `{ name: TOKEN }`. */
const auth: Authenticator = {
  connect: (info) => {
    const token = info.url.searchParams.get('token') ?? info.headers.authorization?.replace(/^Bearer /, '');
    const identity: Identity = token === undefined ? { user: '', anonymous: true } : { user: token, anonymous: false, info: { name: token.toUpperCase() } };
    return Promise.resolve(identity);
  },
  canSubscribe: () => true,
  canPublish: () => true,
};

async function gateway(): Promise<TestGateway> {
  const gw = await startGateway(
    { nodeId: 'node-a', pollTimeout: 1000, sseHeartbeat: 500, pingInterval: 500, channelLinger: 0, namespaces: { room: { presence: true }, plain: {} } },
    { auth },
  );
  cleanup.push(() => gw.close());
  return gw;
}

const client = (url: string, kind: TransportName, options: ClientOptions = {}): Client => ownedTestClient(cleanup, url, kind, options);

async function ws(gw: TestGateway, token: string, channel: string): Promise<RawWsClient & { session: string }> {
  const c = await RawWsClient.connect(`${gw.wsUrl}?token=${token}`);
  cleanup.push(() => c.terminate());
  expect(await c.request({ type: 'subscribe', channel })).toMatchObject({ type: 'reply' });
  return Object.assign(c, { session: c.ofType('welcome')[0]?.session ?? '' });
}

const byUser = (list: readonly PresenceClient[]): PresenceClient[] => [...list].sort((a, b) => a.user.localeCompare(b.user));
const leavesOf = (c: RawWsClient): Array<Extract<ServerFrame, { type: 'leave' }>> => c.ofType('leave');

describe.each(KINDS)('client over %s', (kind) => {
  const hearsPresence = kind !== 'poll';

  it('sub.presence() lists who is there, and join / leave events keep up with it', async () => {
    const gw = await gateway();
    const olga = await ws(gw, 'olga', 'room:sdk');
    const olgaEntry: PresenceClient = { client: olga.session, user: 'olga', info: { name: 'OLGA' }, node: 'node-a' };

    const c = client(gw.url, kind, { token: 'erin' });
    const sub = c.subscribe('room:sdk');
    const joined: PresenceClient[] = [];
    const left: PresenceClient[] = [];
    sub.on('join', (p) => joined.push(p));
    sub.on('leave', (p) => left.push(p));
    await until(() => sub.position !== undefined, 8000, 'subscribed');

    const present = byUser(await sub.presence());
    if (hearsPresence) {
      expect(present).toEqual([{ client: expect.any(String) as unknown, user: 'erin', info: { name: 'ERIN' }, node: 'node-a' }, olgaEntry]);
      // Its own join arrives too.
      await until(() => joined.some((p) => p.user === 'erin'), 3000, 'own join');
    } else {
      // A long poll is not a present client.
      expect(present).toEqual([olgaEntry]);
    }

    const frank = await ws(gw, 'frank', 'room:sdk');
    const frankEntry: PresenceClient = { client: frank.session, user: 'frank', info: { name: 'FRANK' }, node: 'node-a' };
    expect(byUser(await sub.presence())).toContainEqual(frankEntry);
    frank.terminate();
    await olga.until(() => leavesOf(olga).some((f) => f.client.client === frank.session));
    if (hearsPresence) {
      await until(() => left.some((p) => p.client === frank.session), 3000, 'frank left');
      expect(joined).toContainEqual(frankEntry);
      expect(left).toEqual([frankEntry]);
    } else {
      // Let a poll cycle pass: nothing is announced over long polling.
      await new Promise((r) => setTimeout(r, 300));
      expect(joined).toEqual([]);
      expect(left).toEqual([]);
    }
    expect(byUser(await sub.presence()).map((p) => p.user)).toEqual(hearsPresence ? ['erin', 'olga'] : ['olga']);

    // A namespace without presence: refused with a clear code; an ended subscription has no presence.
    const plain = c.subscribe('plain:z');
    await until(() => plain.position !== undefined, 8000, 'plain subscribed');
    await expect(plain.presence()).rejects.toMatchObject({ code: 'presence_disabled' });
    plain.unsubscribe();
    await expect(plain.presence()).rejects.toMatchObject({ code: 'not_subscribed' });

    // Closing the client removes its entry: the others hear it leave.
    const before = leavesOf(olga).length;
    c.close();
    if (hearsPresence) await olga.until(() => leavesOf(olga).slice(before).some((f) => f.client.user === 'erin'));
    await until(() => gw.gateway.stats().presence === 1 && gw.gateway.stats().sessions === 1, 3000, 'only olga left');
  });
});
