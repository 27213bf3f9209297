/**
 * The NATS JetStream broker against a real nats-server (2.9, started on a free port with a throwaway
 * store): the shared contract suite, plus what only a shared broker on JetStream promises: two nodes
 * on one server (one order under concurrent publishes, one idempotent publish, resume anywhere,
 * presence across nodes and a dead node's entries leaving), positions that survive the expiry of a
 * whole channel and a node dying between its two writes, data loss (a deleted stream, a server that
 * lost its store) as an explicit epoch change, and outages (down, 503s, reset).
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { TidingsError, type Position } from '@tidings/protocol';
import { NatsBroker, type BrokerSettings, type BrokerStatus, type NatsBrokerOptions, type PresenceEntry, type PresenceEvent, type Publication } from '@tidings/server';
import { brokerSettings, cleanupAfterEach, publishCommand as command, startGateway, startNats, until, type NatsServer } from '@tidings/testing';
import { serversOf } from '../../packages/server/src/brokers/nats.js';
import { decodeToken, encodeToken, Names } from '../../packages/server/src/brokers/nats-codec.js';
import { brokerSuite, SUITE_NAMESPACES } from './broker-suite.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const range = (from: number, to: number): number[] => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
const seqs = (pubs: readonly Publication[]): number[] => pubs.map((p) => p.position.seq);

/** Polls an asynchronous condition until it holds; throws naming `what` after `timeoutMs`. */
async function eventually(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} not met within ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** The presence sweep period the brokers run with. */
const SWEEP = 200;

let nats: NatsServer;
let raw: NatsConnection;
let jsm: JetStreamManager;
beforeAll(async () => {
  nats = await startNats();
  raw = await connect({ servers: nats.url });
  jsm = await jetstreamManager(raw);
}, 20_000);
afterAll(async () => {
  await raw?.close();
  await nats?.stop();
});

const suitePrefix = `suite${Date.now().toString(36)}`;
brokerSuite('nats', () => Promise.resolve(new NatsBroker({ url: nats.url, prefix: suitePrefix, presenceSweep: SWEEP })), { presenceSweep: SWEEP });

/** A started broker (a gateway node) and everything it reported. */
interface Node {
  readonly broker: NatsBroker;
  readonly publications: Publication[];
  readonly presence: PresenceEvent[];
  readonly statuses: BrokerStatus[];
}

const releases = cleanupAfterEach();
let run = 0;
const tag = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
/** A channel no other test used, in namespace `ns` of the settings below (names with `.`, `/`, `@` and `:`). */
const fresh = (label: string, ns = 'big'): string => `${ns}:room.${tag}/${++run}@${label}:x`;

/** Retention that expires within a test: kept 300 ms, and on the server at least `minRetention`. */
const SETTINGS: BrokerSettings = brokerSettings({ ...SUITE_NAMESPACES, brief: { historySize: 100, historyTtl: 300, ephemeral: false } }, 60_000);

/** Each describe block below gets its own prefix (its own streams) unless it passes one. */
let prefix = `t${tag}`;

async function node(options: Partial<NatsBrokerOptions> = {}, settings: BrokerSettings = SETTINGS, server: NatsServer = nats): Promise<Node> {
  const broker = new NatsBroker({ url: server.url, prefix, presenceSweep: SWEEP, ...options });
  const made: Node = { broker, publications: [], presence: [], statuses: [] };
  releases.push(() => broker.close());
  await broker.start(
    {
      publication: (pub) => made.publications.push(pub),
      presence: (event) => made.presence.push(event),
      status: (status) => made.statuses.push(status),
    },
    settings,
  );
  return made;
}

const deliveredTo = (channel: string, to: Node): Publication[] => to.publications.filter((p) => p.channel === channel);
const eventsOf = (channel: string, to: Node): PresenceEvent[] => to.presence.filter((e) => e.channel === channel);

async function refused(code: string, promise: Promise<unknown>): Promise<TidingsError> {
  const err: unknown = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TidingsError);
  expect((err as TidingsError).code).toBe(code);
  return err as TidingsError;
}

describe('subject encoding', () => {
  it('turns any channel name into one subject token and back', () => {
    for (const name of ['room.1', 'a/b@c:d.e', '~tilde~', 'x*>y z', 'é😀', 'plain_name-1']) {
      const token = encodeToken(name);
      expect(token).toMatch(/^[A-Za-z0-9_\-@/:~]+$/);
      expect(decodeToken(token)).toBe(name);
    }
    const names = new Names('p');
    expect(names.history('chat:room.1')).toBe('p.h.chat.room~2E1');
    expect(names.history('room.1')).toBe('p.h.~.room~2E1');
    expect(names.channelOfSubject(names.live('chat:a.b/c@d:e'))).toBe('chat:a.b/c@d:e');
    expect(names.channelOfSubject(names.live('a.b'))).toBe('a.b');
    expect(names.channelOfSubject(names.presence('n1', 'chat:a.b', 'client.1'))).toBe('chat:a.b');
  });

  it('takes credentials out of broker URLs into the client options', () => {
    expect(serversOf('nats://127.0.0.1:4222')).toEqual({ servers: ['nats://127.0.0.1:4222'] });
    expect(serversOf('nats://al:s3cr%40t@a:4222, nats://al:s3cr%40t@b:4222')).toEqual({ servers: ['nats://a:4222', 'nats://b:4222'], user: 'al', pass: 's3cr@t' });
    expect(serversOf('nats://tok@a:4222')).toEqual({ servers: ['nats://a:4222'], token: 'tok' });
    expect(() => new NatsBroker({ url: 'redis://a:1' })).toThrow(TidingsError);
    expect(() => new NatsBroker({ url: nats.url, prefix: 'a.b' })).toThrow(TidingsError);
  });
});

describe('the gateway', () => {
  it('uses the NATS broker for a nats:// URL, and two gateways share positions', async () => {
    const a = await startGateway({ broker: nats.url });
    releases.push(() => a.close());
    const b = await startGateway({ broker: nats.url });
    releases.push(() => b.close());
    expect(a.gateway.stats().broker).toBe('up');
    const c = `gw.${tag}`;
    const first = await a.publish(c, { n: 1 });
    const second = await b.publish(c, { n: 2 });
    expect(second.position).toEqual({ epoch: first.position.epoch, seq: first.position.seq + 1 });
  });
});

describe('two nodes on one server', () => {
  it('give concurrent publishes to one channel seqs 1..n exactly once, stored and delivered in one order', async () => {
    const a = await node();
    const b = await node();
    const c = fresh('race');
    await a.broker.subscribe(c);
    await b.broker.subscribe(c);
    const n = 60;
    const results = await Promise.all([
      ...range(1, n).map((i) => a.broker.publish(command(c, JSON.stringify(`a${i}`)))),
      ...range(1, n).map((i) => b.broker.publish(command(c, JSON.stringify(`b${i}`)))),
    ]);
    const epoch = results[0]?.position.epoch;
    expect(results.every((r) => r.position.epoch === epoch && !r.duplicate)).toBe(true);
    expect(results.map((r) => r.position.seq).sort((x, y) => x - y)).toEqual(range(1, 2 * n));
    const page = await a.broker.history(c, undefined, 1000);
    expect(seqs(page.publications)).toEqual(range(1, 2 * n));
    // The payload stored at each position is the one whose publish was told that position.
    const told = new Map(results.map((r, i) => [r.position.seq, JSON.stringify(i < n ? `a${i + 1}` : `b${i - n + 1}`)]));
    expect(page.publications.every((p) => told.get(p.position.seq) === p.data)).toBe(true);
    // Each node's own publishes keep their order.
    const order = (prefixChar: string): number[] => page.publications.filter((p) => p.data.startsWith(`"${prefixChar}`)).map((p) => Number(p.data.slice(2, -1)));
    expect(order('a')).toEqual(range(1, n));
    expect(order('b')).toEqual(range(1, n));
    await until(() => deliveredTo(c, a).length === 2 * n && deliveredTo(c, b).length === 2 * n, 5000, 'every publication on both nodes');
    expect(deliveredTo(c, a)).toEqual(page.publications);
    expect(deliveredTo(c, b)).toEqual(page.publications);
  });

  it("deliver one node's publications to the other, and resume there from history", async () => {
    const a = await node();
    const b = await node();
    const c = fresh('cross');
    await b.broker.subscribe(c);
    const published: Position[] = [];
    for (let i = 1; i <= 10; i++) published.push((await a.broker.publish(command(c, `{"i":${i}}`, { type: 'chat.message' }))).position);
    await until(() => deliveredTo(c, b).length === 10, 3000, 'ten deliveries on the other node');
    expect(deliveredTo(c, b).map((p) => [p.position, p.type, p.data])).toEqual(published.map((p, i) => [p, 'chat.message', `{"i":${i + 1}}`]));
    expect(deliveredTo(c, a)).toEqual([]);
    // A client that saw up to 4 on node a resumes on node b.
    const resumed = await b.broker.history(c, published[3], 100);
    expect(resumed.top).toEqual(published[9]);
    expect(resumed.publications.map((p) => p.position)).toEqual(published.slice(4));
    expect(resumed.evicted).toBeUndefined();
    // The long way (a consumer read) agrees with the short one (a walk back).
    expect((await b.broker.history(c, undefined, 100)).publications.map((p) => p.position)).toEqual(published);
    expect((await b.broker.history(c, published[8], 100)).publications.map((p) => p.position)).toEqual(published.slice(9));
  });

  it('publish an idempotency key raced by both nodes once', async () => {
    const a = await node();
    const b = await node();
    const c = fresh('key-race');
    await a.broker.subscribe(c);
    const keys = range(1, 20).map((i) => `k${i}`);
    const outcomes = await Promise.all(
      keys.flatMap((k) => [a.broker.publish(command(c, JSON.stringify(`a-${k}`), { idempotencyKey: k })), b.broker.publish(command(c, JSON.stringify(`b-${k}`), { idempotencyKey: k }))]),
    );
    for (let i = 0; i < keys.length; i++) {
      const [x, y] = [outcomes[2 * i], outcomes[2 * i + 1]];
      expect(x?.position).toEqual(y?.position);
      expect([x?.duplicate, y?.duplicate].sort()).toEqual([false, true]);
    }
    const page = await a.broker.history(c, undefined, 100);
    expect(seqs(page.publications)).toEqual(range(1, keys.length));
    await until(() => deliveredTo(c, a).length === keys.length, 3000, 'one delivery per key');
    await sleep(50);
    expect(deliveredTo(c, a)).toHaveLength(keys.length);
  });

  it("finds a duplicate's position after the original was trimmed, from its receipt, on either node", async () => {
    const a = await node();
    const b = await node();
    const c = fresh('receipt', 'small'); // keeps 3
    const e = fresh('receipt', 'eph'); // keeps only the latest, for its position
    const first = await a.broker.publish(command(c, '"first"', { idempotencyKey: 'once' }));
    const firstEph = await a.broker.publish(command(e, '"first"', { idempotencyKey: 'once' }));
    for (let i = 0; i < 5; i++) {
      await a.broker.publish(command(c, String(i)));
      await a.broker.publish(command(e, String(i)));
    }
    expect(seqs((await a.broker.history(c, undefined, 100)).publications)).toEqual([4, 5, 6]);
    expect(await b.broker.publish(command(c, '"again"', { idempotencyKey: 'once' }))).toEqual({ position: first.position, duplicate: true });
    expect(await a.broker.publish(command(e, '"again"', { idempotencyKey: 'once' }))).toEqual({ position: firstEph.position, duplicate: true });
    expect((await b.broker.history(c, undefined, 0)).top.seq).toBe(6);
  });

  it("share presence, and announce the leave of a dead node's entries within their ttl plus a sweep", async () => {
    const a = await node();
    const b = await node();
    const c = fresh('presence', 'eph');
    const ttl = 600;
    const ann: PresenceEntry = { client: `ann-${tag}`, user: 'ann', info: '{"name":"Ann"}', node: 'node-a' };
    const bob: PresenceEntry = { client: `bob-${tag}`, user: 'bob', info: undefined, node: 'node-b' };
    await b.broker.subscribe(c);
    await a.broker.subscribe(c);
    await a.broker.presenceAdd(c, ann, ttl);
    await b.broker.presenceAdd(c, bob, 60_000);
    await until(() => eventsOf(c, b).length === 2 && eventsOf(c, a).length === 2, 2000, 'both joins on both nodes');
    expect(eventsOf(c, b)).toEqual([
      { kind: 'join', channel: c, entry: ann },
      { kind: 'join', channel: c, entry: bob },
    ]);
    const sorted = (entries: PresenceEntry[]): PresenceEntry[] => entries.sort((x, y) => x.client.localeCompare(y.client));
    expect(sorted(await a.broker.presence(c))).toEqual(sorted([ann, bob]));
    expect(sorted(await b.broker.presence(c))).toEqual(sorted([ann, bob]));
    // Node a dies: nothing removes or refreshes its entry any more; node b's sweep notices.
    const died = Date.now();
    await a.broker.close();
    await until(() => eventsOf(c, b).length === 3, ttl + 2 * SWEEP + 1000, "the leave of the dead node's entry");
    expect(Date.now() - died).toBeGreaterThanOrEqual(ttl - 100);
    expect(eventsOf(c, b)[2]).toEqual({ kind: 'leave', channel: c, entry: ann });
    expect(await b.broker.presence(c)).toEqual([bob]);
    // Announced once, though every node sweeps.
    const c2 = await node();
    await c2.broker.sweep();
    await b.broker.sweep();
    await sleep(100);
    expect(eventsOf(c, b)).toHaveLength(3);
    await b.broker.presenceRemove(c, bob);
  });

  it("report an entry gone when the node was taken for dead and swept, then touches it: it is not resurrected silently, and adding it again announces its join", async () => {
    const a = await node({ presenceSweep: 0 });
    const b = await node();
    const c = fresh('presence-back', 'eph');
    const ann: PresenceEntry = { client: `back-${tag}`, user: 'ann', info: undefined, node: 'node-a' };
    await b.broker.subscribe(c);
    await a.broker.presenceAdd(c, ann, 300);
    await until(() => eventsOf(c, b).length === 2, 2000, 'the join, then the leave by the other node');
    expect(eventsOf(c, b).map((e) => e.kind)).toEqual(['join', 'leave']);
    expect(await a.broker.presenceTouch([{ channel: c, client: ann.client }], 60_000)).toEqual([{ channel: c, client: ann.client }]);
    expect(await b.broker.presence(c)).toEqual([]);
    await a.broker.presenceAdd(c, ann, 60_000);
    await until(() => eventsOf(c, b).length === 3, 2000, 'the join again');
    expect(eventsOf(c, b)[2]).toEqual({ kind: 'join', channel: c, entry: ann });
    expect(await b.broker.presence(c)).toEqual([ann]);
    await a.broker.presenceRemove(c, ann);
  });
});

describe('presence across skewed clocks', () => {
  /** The node started in {@link aheadBy}'s context reads a clock this many ms ahead (the other nodes and the server read the true one). */
  const SKEW = 2000;
  const TTL = 1200;
  /**
   * Per-node clocks in one process: `Date.now` reads the true clock plus the skew of the node whose
   * work runs (a node started in `ahead.run` keeps it in its timers and calls), as if that node's
   * host clock were ahead.
   */
  const ahead = new AsyncLocalStorage<number>();
  const trueNow = Date.now;
  beforeAll(() => {
    Date.now = () => trueNow() + (ahead.getStore() ?? 0);
  });
  afterAll(() => {
    Date.now = trueNow;
  });
  const aheadBy = <T>(f: () => Promise<T>): Promise<T> => ahead.run(SKEW, f);

  it("keeps a live node's entries when another node's clock is ahead: not swept, listed everywhere, no leave", async () => {
    prefix = `s${tag}`;
    const fast = await aheadBy(() => node());
    const slow = await node();
    const c = fresh('skew-live', 'eph');
    const bob: PresenceEntry = { client: `skew-live-${tag}`, user: 'bob', info: undefined, node: 'node-slow' };
    await fast.broker.subscribe(c);
    await slow.broker.presenceAdd(c, bob, TTL);
    await until(() => eventsOf(c, fast).length === 1, 2000, 'the join');
    // The node behind refreshes every third of the ttl, as a gateway does, for a few ttls; the node
    // ahead sweeps every SWEEP ms meanwhile.
    const started = Date.now();
    while (Date.now() - started < 3 * TTL) {
      await sleep(TTL / 3);
      await slow.broker.presenceTouch([{ channel: c, client: bob.client }], TTL);
      expect(await aheadBy(() => fast.broker.presence(c))).toEqual([bob]);
      expect(await slow.broker.presence(c)).toEqual([bob]);
    }
    expect(eventsOf(c, fast)).toEqual([{ kind: 'join', channel: c, entry: bob }]);
    await slow.broker.presenceRemove(c, bob);
  });

  it('expires the entries of a dead node whose clock was ahead within their ttl plus the sweep, not the skew later', async () => {
    prefix = `s${tag}`;
    const fast = await aheadBy(() => node({ presenceSweep: 0 }));
    const other = await node();
    const c = fresh('skew-dead', 'eph');
    const ann: PresenceEntry = { client: `skew-dead-${tag}`, user: 'ann', info: undefined, node: 'node-fast' };
    await other.broker.subscribe(c);
    const added = Date.now();
    await aheadBy(() => fast.broker.presenceAdd(c, ann, 500));
    // Never touched again (the node died): the other node's sweep takes it.
    await until(() => eventsOf(c, other).length === 2, 500 + 2 * SWEEP + SKEW + 2000, 'the leave');
    expect(Date.now() - added).toBeLessThan(500 + 2 * SWEEP + 700);
    expect(eventsOf(c, other)[1]).toEqual({ kind: 'leave', channel: c, entry: ann });
  });
});

describe('positions survive what JetStream forgets', () => {
  /** History kept 300 ms, and on the server 1.5 s (keys for 500 ms), so a whole channel expires within a test. */
  const short: Partial<NatsBrokerOptions> = { minRetention: 1500, reserveGrace: 500 };
  const expiring = brokerSettings(SETTINGS.namespaces, 500);
  const held = async (channel: string): Promise<boolean> => (await jsm.direct.getMessage(`${prefix}_H_brief`, { last_by_subj: new Names(prefix).history(channel) })) !== null;

  it('continues the seq of a channel whose every publication expired, in the same epoch, on any node', async () => {
    prefix = `x${tag}`;
    const a = await node(short, expiring);
    const b = await node(short, expiring);
    const c = fresh('all-expired', 'brief');
    const before = await a.broker.publish(command(c, '1'));
    await a.broker.publish(command(c, '2'));
    const third = await a.broker.publish(command(c, '3'));
    await eventually(async () => !(await held(c)), 8000, 'the server to expire the channel');
    const page = await b.broker.history(c, { epoch: before.position.epoch, seq: 1 }, 100);
    expect(page).toEqual({ top: third.position, publications: [], evicted: 'expired' });
    expect((await b.broker.tops([c])).get(c)).toEqual(third.position);
    // Both nodes continue after 3; neither reuses a position.
    expect((await b.broker.publish(command(c, '4'))).position).toEqual({ epoch: third.position.epoch, seq: 4 });
    expect((await a.broker.publish(command(c, '5'))).position).toEqual({ epoch: third.position.epoch, seq: 5 });
  });

  it('never reuses a position when a node dies between reserving and storing, whether history still holds the channel or not', async () => {
    prefix = `x${tag}`;
    const dying = new Set<string>();
    const a = await node({
      ...short,
      faults: {
        afterReserve: (channel) => {
          if (dying.has(channel)) throw new Error('the node died here');
        },
      },
    }, expiring);
    const b = await node(short, expiring);

    // History holds the channel: the next publisher continues right after what is stored.
    const held1 = fresh('died-held', 'brief');
    await b.broker.subscribe(held1);
    const p1 = await a.broker.publish(command(held1, '1'));
    dying.add(held1);
    await expect(a.broker.publish(command(held1, '2'))).rejects.toBeInstanceOf(TidingsError);
    const p2 = await b.broker.publish(command(held1, '2'));
    expect(p2.position).toEqual({ epoch: p1.position.epoch, seq: 2 });
    await until(() => deliveredTo(held1, b).length === 2, 2000, 'both publications');
    expect(seqs(deliveredTo(held1, b))).toEqual([1, 2]);

    // A new channel whose first publish died in flight: the other node starts it at 1, in the epoch readers saw.
    const first = fresh('died-first', 'brief');
    const empty = (await b.broker.history(first, undefined, 0)).top;
    dying.add(first);
    await expect(a.broker.publish(command(first, '1'))).rejects.toBeInstanceOf(TidingsError);
    expect((await b.broker.history(first, undefined, 0)).top).toEqual(empty);
    expect((await b.broker.publish(command(first, '1'))).position).toEqual({ epoch: empty.epoch, seq: 1 });

    // The reservation outlives history: once everything expired, the seq jumps past it (an explicit gap), never back.
    const expired = fresh('died-expired', 'brief');
    const e1 = await a.broker.publish(command(expired, '1'));
    dying.add(expired);
    await expect(a.broker.publish(command(expired, '2'))).rejects.toBeInstanceOf(TidingsError);
    await eventually(async () => !(await held(expired)), 8000, 'the server to expire the channel');
    const top = (await b.broker.history(expired, undefined, 0)).top;
    expect(top.epoch).toBe(e1.position.epoch);
    expect(top.seq).toBe(2);
    const next = await b.broker.publish(command(expired, '3'));
    expect(next.position).toEqual({ epoch: e1.position.epoch, seq: 3 });
    const resumed = await b.broker.history(expired, e1.position, 100);
    expect(seqs(resumed.publications)).toEqual([3]);
    expect(resumed.evicted).toBe('expired');
  });

  it('answers a key whose publish died before its receipt from the original while held, and refuses it (internal) once trimmed', async () => {
    prefix = `k${tag}`;
    const dying = new Set<string>();
    const a = await node({
      faults: {
        afterStore: (channel) => {
          if (dying.has(channel)) throw new Error('the node died here');
        },
      },
    });
    const b = await node();
    const c = fresh('no-receipt', 'small'); // keeps 3
    dying.add(c);
    await expect(a.broker.publish(command(c, '"first"', { idempotencyKey: 'k' }))).rejects.toBeInstanceOf(TidingsError);
    dying.delete(c);
    const page = await b.broker.history(c, undefined, 10);
    expect(page.publications.map((p) => p.data)).toEqual(['"first"']);
    const original = page.publications[0]?.position;
    // The client retries on another node: the publication is there, so the key finds it.
    expect(await b.broker.publish(command(c, '"retry"', { idempotencyKey: 'k' }))).toEqual({ position: original, duplicate: true });
    for (let i = 0; i < 3; i++) await b.broker.publish(command(c, String(i)));
    // Trimmed, and no receipt: where it landed is unknown; publishing it again would break at-most-once.
    await refused('internal', b.broker.publish(command(c, '"late retry"', { idempotencyKey: 'k' })));
    expect((await b.broker.history(c, undefined, 0)).top.seq).toBe(4);
  });

  it('refuses a new channel past maxChannels with storage_full, and keeps publishing to the others', async () => {
    prefix = `m${tag}`;
    const a = await node({ maxChannels: 2 });
    const [x, y, z] = [fresh('bound-x'), fresh('bound-y'), fresh('bound-z')];
    await a.broker.publish(command(x, '1'));
    await a.broker.publish(command(y, '1'));
    await refused('storage_full', a.broker.publish(command(z, '1')));
    expect((await a.broker.history(z, undefined, 0)).top.seq).toBe(0);
    expect((await a.broker.publish(command(x, '2'))).position.seq).toBe(2);
    expect((await a.broker.publish(command(y, '2'))).position.seq).toBe(2);
  });

  it("refuses a publish past a namespace stream's maxBytes with storage_full, keeping what it holds", async () => {
    prefix = `b${tag}`;
    const a = await node({ maxBytes: 16 * 1024 });
    const c = fresh('bytes');
    const kilobyte = JSON.stringify('x'.repeat(1000));
    const accepted: Position[] = [];
    let err: unknown;
    for (let i = 0; i < 40 && err === undefined; i++) {
      await a.broker.publish(command(c, kilobyte)).then(
        (o) => accepted.push(o.position),
        (e: unknown) => (err = e),
      );
    }
    expect(err).toBeInstanceOf(TidingsError);
    expect((err as TidingsError).code).toBe('storage_full');
    expect(accepted.length).toBeGreaterThanOrEqual(8);
    const page = await a.broker.history(c, undefined, 100);
    expect(page.publications.map((p) => p.position)).toEqual(accepted);
    expect(page.top).toEqual(accepted.at(-1));
  });

  it('goes down when a history stream is deleted (data loss), re-creates it, and moves its channels to new epochs on every node', async () => {
    prefix = `d${tag}`;
    const a = await node({ recreateDelay: 300 });
    const b = await node({ recreateDelay: 300 });
    const c = fresh('lost');
    const never = fresh('lost-never');
    const kept = fresh('lost-other-namespace', 'small');
    await b.broker.subscribe(c);
    const old: Position[] = [];
    for (let i = 1; i <= 3; i++) old.push((await a.broker.publish(command(c, String(i)))).position);
    old.push((await b.broker.publish(command(c, '4'))).position); // b remembers the channel
    const keptBefore = (await a.broker.publish(command(kept, '1'))).position;
    const neverBefore = (await a.broker.tops([never])).get(never);
    await jsm.streams.delete(`${prefix}_H_big`);
    // Meanwhile: refused, never published into a stream being deleted.
    await refused('unavailable', b.broker.publish(command(c, 'meanwhile')));
    await until(() => [a, b].every((n) => n.statuses.at(-1) === 'reset'), 5000, 'down, then reset, on both nodes');
    expect(a.statuses).toEqual(['up', 'down', 'reset']);
    expect(b.statuses).toEqual(['up', 'down', 'reset']);
    // The first publish after the loss lands in a new epoch at 1, and both nodes continue it.
    const after = await b.broker.publish(command(c, 'after'));
    expect(after.position.seq).toBe(1);
    expect(after.position.epoch).not.toBe(old[0]?.epoch);
    expect((await a.broker.publish(command(c, 'again'))).position).toEqual({ epoch: after.position.epoch, seq: 2 });
    // A client holding an old position gets an explicit epoch change, never old seqs in the new epoch.
    const page = await a.broker.history(c, old[3], 100);
    expect(page.publications).toEqual([]);
    expect(page.top).toEqual({ epoch: after.position.epoch, seq: 2 });
    expect(seqs((await b.broker.history(c, undefined, 100)).publications)).toEqual([1, 2]);
    // A channel never published moved too (its derived epoch comes from the lost stream), the same on both nodes.
    const neverAfter = (await a.broker.tops([never])).get(never);
    expect(neverAfter?.epoch).not.toBe(neverBefore?.epoch);
    expect((await b.broker.tops([never])).get(never)).toEqual(neverAfter);
    // Another namespace's stream kept its data and its epochs.
    expect((await b.broker.publish(command(kept, '2'))).position).toEqual({ epoch: keptBefore.epoch, seq: 2 });
    await until(() => deliveredTo(c, b).length === 6, 3000, 'the new publications live');
    expect(deliveredTo(c, b).map((p) => p.position.seq)).toEqual([1, 2, 3, 4, 1, 2]);
  });
});

describe('outages', () => {
  let own: NatsServer;
  beforeAll(async () => {
    own = await startNats();
  });
  afterAll(async () => {
    await own?.stop();
  });

  it('publishes a key once within its window across a server restart, though history no longer holds the original', async () => {
    prefix = `d${tag}`;
    const a = await node({}, SETTINGS, own);
    const c = fresh('restart-key', 'small'); // keeps 3
    const first = await a.broker.publish(command(c, '"order"', { idempotencyKey: 'order-1' }));
    for (let i = 0; i < 4; i++) await a.broker.publish(command(c, String(i)));
    // The server rebuilds the ids it deduplicates from the messages it holds: the original is not one.
    await own.restart({ keepStore: true });
    await until(() => a.statuses.at(-1) === 'reset', 10_000, 'status reset');
    expect(await a.broker.publish(command(c, '"order"', { idempotencyKey: 'order-1' }))).toEqual({ position: first.position, duplicate: true });
    expect((await a.broker.history(c, undefined, 0)).top.seq).toBe(5);
  });

  it('reports down while the server restarts, refuses with 503 meanwhile, then reports reset and continues', async () => {
    prefix = `o${tag}`;
    const a = await node({}, SETTINGS, own);
    const b = await node({}, SETTINGS, own);
    const c = fresh('restart');
    await b.broker.subscribe(c);
    const p1 = await a.broker.publish(command(c, '1', { idempotencyKey: 'k1' }));
    await own.kill();
    await until(() => a.statuses.includes('down') && b.statuses.includes('down'), 5000, 'status down on both nodes');
    const err = await refused('unavailable', a.broker.publish(command(c, '2')));
    expect(err.status).toBe(503);
    await refused('unavailable', a.broker.history(c, undefined, 10));
    await refused('unavailable', a.broker.tops([c]));
    await refused('unavailable', b.broker.subscribe(fresh('while-down')));
    await refused('unavailable', a.broker.presence(c));
    await own.restart();
    await until(() => a.statuses.at(-1) === 'reset' && b.statuses.at(-1) === 'reset', 10_000, 'status reset on both nodes');
    expect(a.statuses).toEqual(['up', 'down', 'reset']);
    // The store was kept: positions, keys and the live feed continue.
    expect(await b.broker.publish(command(c, 'dup', { idempotencyKey: 'k1' }))).toEqual({ position: p1.position, duplicate: true });
    const p2 = await a.broker.publish(command(c, '2'));
    expect(p2.position).toEqual({ epoch: p1.position.epoch, seq: 2 });
    await until(() => deliveredTo(c, b).length === 2, 3000, 'live delivery after the restart');
    expect(seqs(deliveredTo(c, b))).toEqual([1, 2]);
  });

  it('moves to new epochs when the server comes back without its store', async () => {
    prefix = `w${tag}`;
    const a = await node({}, SETTINGS, own);
    const c = fresh('wiped');
    const before = (await a.broker.publish(command(c, '1'))).position;
    const neverBefore = (await a.broker.tops([fresh('wiped-never')])).size;
    expect(neverBefore).toBe(1);
    await own.restart({ keepStore: false });
    await until(() => a.statuses.at(-1) === 'reset', 10_000, 'status reset');
    const after = await a.broker.publish(command(c, '1 again'));
    expect(after.position.seq).toBe(1);
    expect(after.position.epoch).not.toBe(before.epoch);
    const page = await a.broker.history(c, before, 100);
    expect(page.publications).toEqual([]);
    expect(page.top).toEqual(after.position);
  });

  it('fails to start with unavailable when the server is unreachable', async () => {
    const broker = new NatsBroker({ url: 'nats://127.0.0.1:1', connectTimeout: 500 });
    await refused('unavailable', broker.start({ publication: () => undefined, presence: () => undefined, status: () => undefined }, SETTINGS));
  });
});
