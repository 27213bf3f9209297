/**
 * Presence end to end, on real gateways over the memory broker: `join` / `leave` frames on WebSocket
 * and `tidings:join` / `tidings:leave` events on SSE (which never move the stream's id), the listing
 * through `GET /api/presence`, `GET /presence` and the `presence` frame (with `info`, and the
 * permission to subscribe), entries removed on unsubscribe, disconnect and shutdown, long polls not
 * listed, namespaces without presence silent, and the entries of a node that stops refreshing them
 * expiring within the TTL with their leave announced on the other nodes.
 */
import { describe, expect, it } from 'vitest';
import type { Channel, PresenceChange, PresenceClient, PresenceResult, ServerFrame } from '@tidings/protocol';
import { MemoryBroker, type Authenticator, type GatewayConfig, type GatewayParts, type Identity } from '@tidings/server';
import { cleanupAfterEach, RawSseClient, RawWsClient, startGateway, TEST_API_KEY, until, type TestGateway } from '@tidings/testing';
import { memoryCluster } from './cluster.js';

const cleanup = cleanupAfterEach();

/**
 * Who a client is comes from its token (`token` query, or a bearer header): the user is the token,
 * and its public info is `{ name: TOKEN }`. `room:vip*` is for `admin` only.
 */
const auth: Authenticator = {
  connect: (info) => {
    const token = info.url.searchParams.get('token') ?? info.headers.authorization?.replace(/^Bearer /, '');
    const identity: Identity = token === undefined ? { user: '', anonymous: true } : { user: token, anonymous: false, info: { name: token.toUpperCase() } };
    return Promise.resolve(identity);
  },
  canSubscribe: (identity, channel) => !channel.startsWith('room:vip') || identity.user === 'admin',
  canPublish: () => true,
};

const CONFIG: GatewayConfig = {
  nodeId: 'node-a',
  pollTimeout: 1000,
  channelLinger: 0,
  namespaces: { room: { presence: true }, plain: {} },
};

async function gateway(config: GatewayConfig = {}, parts: GatewayParts = {}): Promise<TestGateway> {
  const gw = await startGateway({ ...CONFIG, ...config }, { auth, ...parts });
  cleanup.push(() => gw.close());
  return gw;
}

async function ws(gw: TestGateway, token?: string): Promise<RawWsClient & { session: string }> {
  const c = await RawWsClient.connect(token === undefined ? gw.wsUrl : `${gw.wsUrl}?token=${token}`);
  cleanup.push(() => c.terminate());
  const welcome = c.ofType('welcome')[0];
  return Object.assign(c, { session: welcome?.session ?? '' });
}

async function sse(gw: TestGateway, query: string): Promise<RawSseClient> {
  const c = await RawSseClient.open(`${gw.url}/sse?${query}`);
  cleanup.push(() => c.close());
  return c;
}

/** A GET with `Authorization: Bearer <bearer>` (the API key by default; null: none). */
async function get(gw: TestGateway, path: string, bearer: string | null = TEST_API_KEY): Promise<{ status: number; body: unknown; headers: Headers }> {
  const res = await fetch(`${gw.url}${path}`, { headers: bearer === null ? {} : { authorization: `Bearer ${bearer}` } });
  return { status: res.status, body: (await res.json()) as unknown, headers: res.headers };
}

async function listed(gw: TestGateway, channel: Channel): Promise<PresenceClient[]> {
  const { status, body } = await get(gw, `/api/presence?channel=${encodeURIComponent(channel)}`);
  expect(status).toBe(200);
  const result = body as PresenceResult;
  expect(result.channel).toBe(channel);
  return [...result.clients].sort((a, b) => a.user.localeCompare(b.user));
}

const joins = (c: RawWsClient): Array<Extract<ServerFrame, { type: 'join' }>> => c.ofType('join');
const leaves = (c: RawWsClient): Array<Extract<ServerFrame, { type: 'leave' }>> => c.ofType('leave');
const entryOf = (session: string, user: string, node = 'node-a'): PresenceClient => ({ client: session, user, info: { name: user.toUpperCase() }, node });

describe('WebSocket', () => {
  it('announces joins and leaves to subscribers and lists who is present, with info, across unsubscribe and disconnect', async () => {
    const gw = await gateway();
    const alice = await ws(gw, 'alice');
    const bob = await ws(gw, 'bob');
    const aliceEntry = entryOf(alice.session, 'alice');
    const bobEntry = entryOf(bob.session, 'bob');

    expect(await alice.request({ type: 'subscribe', channel: 'room:1' })).toMatchObject({ type: 'reply', result: { channel: 'room:1' } });
    // Its own join follows the reply: it is listed from when its subscription is live.
    await alice.until(() => joins(alice).length === 1);
    expect(joins(alice)[0]).toEqual({ type: 'join', channel: 'room:1', client: aliceEntry });
    const replyAt = alice.frames.findIndex((f) => f.type === 'reply');
    expect(alice.frames.findIndex((f) => f.type === 'join')).toBeGreaterThan(replyAt);

    await bob.request({ type: 'subscribe', channel: 'room:1' });
    await alice.until(() => joins(alice).length === 2);
    expect(joins(alice)[1]).toEqual({ type: 'join', channel: 'room:1', client: bobEntry });
    await bob.until(() => joins(bob).length === 1);
    // Bob hears his own join, not Alice's (she joined before he subscribed: the listing has her).
    expect(joins(bob)[0]?.client).toEqual(bobEntry);
    expect(await listed(gw, 'room:1')).toEqual([aliceEntry, bobEntry]);
    expect(gw.gateway.stats().presence).toBe(2);

    // The wire text: info is JSON, not a string.
    const text = JSON.stringify(joins(alice)[1]);
    expect(text).toBe(`{"type":"join","channel":"room:1","client":{"client":"${bob.session}","user":"bob","info":{"name":"BOB"},"node":"node-a"}}`);

    expect(await bob.request({ type: 'unsubscribe', channel: 'room:1' })).toMatchObject({ type: 'reply' });
    await alice.until(() => leaves(alice).length === 1);
    expect(leaves(alice)[0]).toEqual({ type: 'leave', channel: 'room:1', client: bobEntry });
    expect(await listed(gw, 'room:1')).toEqual([aliceEntry]);

    // Back in, then gone without a word: the connection's close removes the entry.
    await bob.request({ type: 'subscribe', channel: 'room:1' });
    await alice.until(() => joins(alice).length === 3);
    bob.terminate();
    await alice.until(() => leaves(alice).length === 2);
    expect(leaves(alice)[1]?.client).toEqual(bobEntry);
    expect(await listed(gw, 'room:1')).toEqual([aliceEntry]);
    await until(() => gw.gateway.stats().presence === 1, 3000, 'bob released');
  });

  it('lists anonymous clients without info', async () => {
    const gw = await gateway();
    const anon = await ws(gw);
    await anon.request({ type: 'subscribe', channel: 'room:anon' });
    await anon.until(() => joins(anon).length === 1);
    const entry: PresenceClient = { client: anon.session, user: '', node: 'node-a' };
    expect(joins(anon)[0]?.client).toEqual(entry);
    expect(await listed(gw, 'room:anon')).toEqual([entry]);
  });

  it('answers the presence frame for channels the client may subscribe to, whether subscribed or not', async () => {
    const gw = await gateway();
    const alice = await ws(gw, 'alice');
    const admin = await ws(gw, 'admin');
    await admin.request({ type: 'subscribe', channel: 'room:vip' });
    await alice.request({ type: 'subscribe', channel: 'room:2' });

    expect(await alice.request({ type: 'presence', channel: 'room:2' })).toEqual({
      type: 'reply',
      id: 2,
      result: { channel: 'room:2', clients: [entryOf(alice.session, 'alice')] },
    });
    // Not subscribed there, but allowed to: answered.
    expect(await admin.request({ type: 'presence', channel: 'room:2' })).toMatchObject({ type: 'reply', result: { clients: [entryOf(alice.session, 'alice')] } });
    expect(await admin.request({ type: 'presence', channel: 'room:vip' })).toMatchObject({ type: 'reply', result: { channel: 'room:vip', clients: [entryOf(admin.session, 'admin')] } });

    // Not allowed to subscribe: not allowed to see who is there either.
    expect(await alice.request({ type: 'presence', channel: 'room:vip' })).toMatchObject({ type: 'error', error: { code: 'forbidden' } });
    expect(await alice.request({ type: 'presence', channel: 'plain:x' })).toMatchObject({ type: 'error', error: { code: 'presence_disabled' } });
    expect(await alice.request({ type: 'presence', channel: 'nope:x' })).toMatchObject({ type: 'error', error: { code: 'unknown_namespace' } });
    expect(await alice.request({ type: 'presence', channel: 'bad channel' } as never)).toMatchObject({ type: 'error', error: { code: 'bad_channel' } });
    // A presence frame needs an id: the answer is its reply.
    alice.send({ type: 'presence', channel: 'room:2' } as never);
    await alice.until(() => alice.ofType('error').some((f) => f.id === undefined && f.error.code === 'bad_frame'));
    expect(alice.closed).toBe(false);
  });

  it('asks the authorization hooks as a subscribe does: a client they refuse the channel to sees nobody there, by frame or GET /presence', async () => {
    // The token grants every room; the host's hook keeps room:secret for alice.
    const gw = await gateway({}, { authorize: { subscribe: (identity, channel) => channel !== 'room:secret' || identity.user === 'alice' } });
    const alice = await ws(gw, 'alice');
    const bob = await ws(gw, 'bob');
    expect(await alice.request({ type: 'subscribe', channel: 'room:secret' })).toMatchObject({ type: 'reply' });
    expect(await bob.request({ type: 'subscribe', channel: 'room:secret' })).toMatchObject({ type: 'error', error: { code: 'forbidden' } });
    expect(await bob.request({ type: 'presence', channel: 'room:secret' })).toMatchObject({ type: 'error', error: { code: 'forbidden' } });
    expect(await get(gw, '/presence?channel=room:secret', 'bob')).toMatchObject({ status: 403, body: { error: { code: 'forbidden' } } });
    expect(await alice.request({ type: 'presence', channel: 'room:secret' })).toMatchObject({ type: 'reply', result: { clients: [entryOf(alice.session, 'alice')] } });
    expect(await get(gw, '/presence?channel=room:secret', 'alice')).toMatchObject({ status: 200, body: { clients: [entryOf(alice.session, 'alice')] } });
    // The server API is not a client: no hook is asked.
    expect(await listed(gw, 'room:secret')).toEqual([entryOf(alice.session, 'alice')]);
  });

  it('namespaces without presence list nobody and announce nothing', async () => {
    const gw = await gateway();
    const a = await ws(gw, 'alice');
    const b = await ws(gw, 'bob');
    await a.request({ type: 'subscribe', channel: 'plain:x' });
    await b.request({ type: 'subscribe', channel: 'plain:x' });
    await b.request({ type: 'unsubscribe', channel: 'plain:x' });
    await gw.publish('plain:x', 1);
    await a.until(() => a.ofType('message').length === 1);
    expect(joins(a)).toEqual([]);
    expect(leaves(a)).toEqual([]);
    expect(gw.gateway.stats().presence).toBe(0);
    expect(await get(gw, '/api/presence?channel=plain:x')).toMatchObject({ status: 400, body: { error: { code: 'presence_disabled' } } });
  });
});

describe('SSE', () => {
  it('sends tidings:join and tidings:leave events that leave the stream id where it was', async () => {
    const gw = await gateway();
    const carol = await sse(gw, 'channel=room:3&channel=plain:y&token=carol');
    expect(carol.status).toBe(200);
    await carol.until((c) => c.named('tidings:join').length === 1);
    const own = JSON.parse(carol.named('tidings:join')[0]?.data ?? '') as PresenceChange;
    expect(own).toEqual({ channel: 'room:3', client: { client: expect.any(String) as unknown, user: 'carol', info: { name: 'CAROL' }, node: 'node-a' } });
    // The stream's own join comes after the welcome (held until the stream starts).
    expect(carol.events.map((e) => e.event).slice(0, 2)).toEqual(['tidings:welcome', 'tidings:join']);
    expect(await listed(gw, 'room:3')).toEqual([own.client]);

    await gw.publish('room:3', { n: 1 });
    await carol.until((c) => c.named('message').length === 1);
    const idBefore = carol.lastEventId;
    expect(idBefore).toContain('room:3=');

    const dave = await ws(gw, 'dave');
    await dave.request({ type: 'subscribe', channel: 'room:3' });
    await carol.until((c) => c.named('tidings:join').length === 2);
    await dave.request({ type: 'unsubscribe', channel: 'room:3' });
    await carol.until((c) => c.named('tidings:leave').length === 1);

    const joined = carol.named('tidings:join')[1];
    const left = carol.named('tidings:leave')[0];
    expect(JSON.parse(joined?.data ?? '')).toEqual({ channel: 'room:3', client: entryOf(dave.session, 'dave') });
    expect(JSON.parse(left?.data ?? '')).toEqual({ channel: 'room:3', client: entryOf(dave.session, 'dave') });
    // No id: line, so the browser's Last-Event-ID stays the cursor of the last message.
    expect(joined?.id).toBe(idBefore);
    expect(left?.id).toBe(idBefore);
    expect(carol.lastEventId).toBe(idBefore);
    expect(carol.body).toContain(`event: tidings:join\ndata: ${JSON.stringify({ channel: 'room:3', client: entryOf(dave.session, 'dave') })}\n\n`);

    // Its id still resumes exactly: the next message follows the first.
    await gw.publish('room:3', { n: 2 });
    await carol.until((c) => c.named('message').length === 2);
    expect(carol.lastEventId).not.toBe(idBefore);

    carol.close();
    await until(() => gw.gateway.stats().presence === 0, 3000, 'stream entry removed');
    expect(await listed(gw, 'room:3')).toEqual([]);
  });

  it('answers GET /presence with the permission to subscribe', async () => {
    const gw = await gateway();
    const admin = await ws(gw, 'admin');
    await admin.request({ type: 'subscribe', channel: 'room:vip' });
    const ok = await get(gw, '/presence?channel=room:vip', 'admin');
    expect(ok.status).toBe(200);
    expect(ok.body).toEqual({ channel: 'room:vip', clients: [entryOf(admin.session, 'admin')] });
    expect(ok.headers.get('access-control-allow-origin')).toBe('*');
    expect(await get(gw, '/presence?channel=room:vip', 'alice')).toMatchObject({ status: 403, body: { error: { code: 'forbidden' } } });
    expect(await get(gw, '/presence?channel=room:vip', null)).toMatchObject({ status: 403, body: { error: { code: 'forbidden' } } });
    expect(await get(gw, '/presence?channel=room:open', null)).toMatchObject({ status: 200, body: { channel: 'room:open', clients: [] } });
    expect(await get(gw, '/presence?channel=plain:x', 'alice')).toMatchObject({ status: 400, body: { error: { code: 'presence_disabled' } } });
  });
});

describe('long polling', () => {
  it('is not listed as present and hears no joins', async () => {
    const gw = await gateway();
    const started = Date.now();
    const polling = fetch(`${gw.url}/poll?channel=room:4&timeout=600&token=erin`).then(async (res) => ({ status: res.status, body: (await res.json()) as { messages: unknown[] } }));
    await until(() => gw.gateway.stats().connections.poll === 1, 3000, 'poll held');
    const frank = await ws(gw, 'frank');
    await frank.request({ type: 'subscribe', channel: 'room:4' });
    expect(await listed(gw, 'room:4')).toEqual([entryOf(frank.session, 'frank')]);
    // Frank's join does not answer the poll: it is held to its timeout with nothing in it.
    const poll = await polling;
    expect(poll).toMatchObject({ status: 200, body: { messages: [], gaps: [] } });
    expect(Date.now() - started).toBeGreaterThanOrEqual(500);
  });
});

describe('GET /api/presence', () => {
  it('needs the API key, one good channel, a known namespace with presence', async () => {
    const gw = await gateway();
    expect(await get(gw, '/api/presence?channel=room:1', null)).toMatchObject({ status: 401, body: { error: { code: 'unauthorized' } } });
    expect(await get(gw, '/api/presence?channel=room:1', 'wrong-key-0123456789')).toMatchObject({ status: 401 });
    expect(await get(gw, '/api/presence?channel=room:1')).toMatchObject({ status: 200, body: { channel: 'room:1', clients: [] } });
    expect(await get(gw, '/api/presence?channel=nope:1')).toMatchObject({ status: 404, body: { error: { code: 'unknown_namespace' } } });
    expect(await get(gw, '/api/presence?channel=plain:1')).toMatchObject({ status: 400, body: { error: { code: 'presence_disabled' } } });
    expect(await get(gw, '/api/presence?channel=bad%20channel')).toMatchObject({ status: 400, body: { error: { code: 'bad_channel' } } });
    expect(await get(gw, '/api/presence')).toMatchObject({ status: 400, body: { error: { code: 'bad_request' } } });
    expect(await get(gw, '/api/presence?channel=room:1&channel=room:2')).toMatchObject({ status: 400, body: { error: { code: 'bad_request' } } });
    const post = await fetch(`${gw.url}/api/presence?channel=room:1`, { method: 'POST', headers: { authorization: `Bearer ${TEST_API_KEY}` } });
    expect(post.status).toBe(405);
    await post.body?.cancel();
  });
});

describe('across nodes', () => {
  const TTL = 600;
  /** The memory broker's sweep period: an entry not refreshed is gone within the TTL plus this. */
  const SWEEP = 50;

  it('lists every node, keeps a live node present past its TTL, and expires the entries of a node that stops refreshing, announcing the leave', async () => {
    const shared = new MemoryBroker({ maxChannels: 1000, dedupMaxKeys: 100, sweepInterval: SWEEP });
    cleanup.push(() => shared.close());
    const cluster = memoryCluster(shared);
    const nodeA = cluster.node();
    const nodeB = cluster.node();
    const a = await gateway({ nodeId: 'node-a', presenceTtl: TTL }, { broker: nodeA });
    const b = await gateway({ nodeId: 'node-b', presenceTtl: TTL }, { broker: nodeB });

    const observer = await ws(b, 'olga');
    await observer.request({ type: 'subscribe', channel: 'room:9' });
    const walter = await ws(a, 'walter');
    await walter.request({ type: 'subscribe', channel: 'room:9' });
    const walterEntry = entryOf(walter.session, 'walter', 'node-a');
    const olgaEntry = entryOf(observer.session, 'olga', 'node-b');
    // A join on node A reaches the subscribers on node B.
    await observer.until(() => joins(observer).some((f) => f.client.client === walter.session));
    expect(await listed(b, 'room:9')).toEqual([olgaEntry, walterEntry]);
    expect(await listed(a, 'room:9')).toEqual([olgaEntry, walterEntry]);

    // Each node refreshes its own entries: both stay listed well past the TTL.
    await new Promise((r) => setTimeout(r, TTL * 2.5));
    expect(nodeA.touches).toBeGreaterThanOrEqual(4);
    expect(await listed(b, 'room:9')).toEqual([olgaEntry, walterEntry]);
    expect(leaves(observer)).toEqual([]);

    // Node A's refreshes stop reaching the broker (it died without a goodbye): its entry expires
    // within the TTL and the leave is announced on node B.
    const stopped = Date.now();
    nodeA.stopRefreshing();
    await observer.until(() => leaves(observer).length === 1, TTL * 3);
    const elapsed = Date.now() - stopped;
    expect(leaves(observer)[0]).toEqual({ type: 'leave', channel: 'room:9', client: walterEntry });
    expect(elapsed).toBeLessThanOrEqual(TTL + SWEEP + 250);
    expect(await listed(b, 'room:9')).toEqual([olgaEntry]);
    // Node B's own entry is still refreshed.
    await new Promise((r) => setTimeout(r, TTL * 1.5));
    expect(await listed(b, 'room:9')).toEqual([olgaEntry]);
  });

  it('says goodbye on close: the entries of a closed gateway are removed at once and its refresh stops', async () => {
    const shared = new MemoryBroker({ maxChannels: 1000, dedupMaxKeys: 100, sweepInterval: SWEEP });
    cleanup.push(() => shared.close());
    const cluster = memoryCluster(shared);
    const nodeA = cluster.node();
    const a = await startGateway({ ...CONFIG, nodeId: 'node-a', presenceTtl: 300 }, { auth, broker: nodeA });
    const b = await gateway({ nodeId: 'node-b' }, { broker: cluster.node() });
    const observer = await ws(b, 'olga');
    await observer.request({ type: 'subscribe', channel: 'room:10' });
    const walter = await ws(a, 'walter');
    await walter.request({ type: 'subscribe', channel: 'room:10' });
    await observer.until(() => joins(observer).length === 2);

    await a.close();
    // Removed at close, not left to expire: the leave is already out.
    await observer.until(() => leaves(observer).length === 1, 200);
    // (The broker holds info as JSON text.)
    expect(await shared.presence('room:10')).toEqual([{ client: observer.session, user: 'olga', info: '{"name":"OLGA"}', node: 'node-b' }]);
    const touches = nodeA.touches;
    await new Promise((r) => setTimeout(r, 400));
    expect(nodeA.touches).toBe(touches);
  });
});

describe('options', () => {
  it('validates presence and presenceTtl like the other options', async () => {
    const { resolveOptions, ConfigError } = await import('@tidings/server');
    expect(resolveOptions().presenceTtl).toBe(30_000);
    expect(resolveOptions().namespaces['']?.presence).toBe(false);
    expect(resolveOptions({ namespaces: { room: { presence: true } } }).namespaces.room?.presence).toBe(true);
    let problems: readonly string[] = [];
    try {
      resolveOptions({ presenceTtl: 10, namespaces: { room: { presence: 'yes' as unknown as boolean } } });
    } catch (err) {
      if (err instanceof ConfigError) problems = err.problems;
    }
    expect(problems).toEqual(['presenceTtl must be an integer from 300 to 3600000 (got 10)', 'namespaces.room.presence must be true or false']);
  });
});
