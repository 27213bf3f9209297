/**
 * The Redis broker against a real redis-server (started on a free port, no persistence): the shared
 * contract suite, plus what only a shared broker promises: two nodes on one Redis (one order, one
 * idempotent publish, resume anywhere, presence across nodes), data loss as an explicit epoch
 * change (FLUSHALL, a restart without persistence), outages (down, 503s, reset, nothing twice),
 * the GC of idle streams, sharded and plain pub/sub, and the storage and eviction checks.
 */
import { describe, expect, it } from 'vitest';
import { TidingsError, type Position } from '@tidings/protocol';
import {
  planResume,
  RedisBroker,
  type BrokerSettings,
  type BrokerStatus,
  type PresenceEntry,
  type PresenceEvent,
  type Publication,
  type RedisBrokerOptions,
} from '@tidings/server';
import { brokerSettings, cleanupAfterEach, publishCommand as command, startRedis, suiteRedis, until } from '@tidings/testing';
import { bucketOf, deriveEpoch } from '../../packages/server/src/brokers/epochs.js';
import { brokerSuite, SUITE_NAMESPACES } from './broker-suite.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const range = (from: number, to: number): number[] => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
const seqs = (pubs: readonly Publication[]): number[] => pubs.map((p) => p.position.seq);

/** The presence sweep period the suite's brokers run with. */
const SWEEP = 200;

const redis = suiteRedis();

brokerSuite('redis', () => Promise.resolve(new RedisBroker({ url: redis.url, presenceSweep: SWEEP, gcInterval: 0 })), { presenceSweep: SWEEP });

/** A started broker (a gateway node) and everything it reported. */
interface Node {
  readonly broker: RedisBroker;
  readonly publications: Publication[];
  readonly presence: PresenceEvent[];
  readonly statuses: BrokerStatus[];
}

const releases = cleanupAfterEach();
let run = 0;
const tag = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
/** A channel no other test used, in namespace `ns` of the settings below. */
const fresh = (label: string, ns = 'big'): string => `${ns}:redis-${tag}-${++run}-${label}`;

const SETTINGS: BrokerSettings = brokerSettings(SUITE_NAMESPACES, 60_000);

async function node(options: Partial<RedisBrokerOptions> = {}, settings: BrokerSettings = SETTINGS): Promise<Node> {
  const broker = new RedisBroker({ url: redis.url, presenceSweep: SWEEP, gcInterval: 0, ...options });
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

const of = (channel: string, n: Node): Publication[] => n.publications.filter((p) => p.channel === channel);
const codeOf = async (promise: Promise<unknown>): Promise<string | undefined> =>
  promise.then(
    () => undefined,
    (err: unknown) => (err instanceof TidingsError ? err.code : String(err)),
  );

describe('redis broker: two nodes on one Redis', () => {
  it('publishing concurrently to one channel gives one order: seqs 1..n, no duplicate, the same feed on both nodes', async () => {
    const a = await node();
    const b = await node();
    const c = fresh('race');
    await Promise.all([a.broker.subscribe(c), b.broker.subscribe(c)]);
    const outcomes = await Promise.all(range(1, 200).map((i) => (i % 2 === 0 ? a : b).broker.publish(command(c, `{"i":${i}}`))));
    const assigned = outcomes.map((o) => o.position.seq).sort((x, y) => x - y);
    expect(assigned).toEqual(range(1, 200));
    expect(new Set(outcomes.map((o) => o.position.epoch)).size).toBe(1);
    await until(() => of(c, a).length >= 200 && of(c, b).length >= 200, 5000, 'both feeds');
    await sleep(50);
    expect(seqs(of(c, a))).toEqual(range(1, 200));
    expect(of(c, b)).toEqual(of(c, a));
    // Each position carries the payload its publisher was told it got.
    const byData = new Map(outcomes.map((o, i) => [`{"i":${i + 1}}`, o.position.seq]));
    for (const pub of of(c, a)) expect(byData.get(pub.data)).toBe(pub.position.seq);
    const page = await b.broker.history(c, undefined, 1000);
    expect(page.publications).toEqual(of(c, a));
  });

  it("delivers a publication to a subscriber on the other node, every field intact, and not to one that isn't subscribed", async () => {
    const a = await node();
    const b = await node();
    const c = fresh('fanout');
    await b.broker.subscribe(c);
    const { position } = await a.broker.publish(command(c, '"é😀\\n"', { type: 'chat.message' }));
    await until(() => of(c, b).length === 1, 2000, 'delivery on the other node');
    expect(of(c, b)).toEqual([{ channel: c, position, type: 'chat.message', data: '"é😀\\n"', ephemeral: false }]);
    expect(of(c, a)).toEqual([]);
    const e = fresh('fanout-eph', 'eph');
    await b.broker.subscribe(e);
    await a.broker.publish(command(e, '1'));
    await until(() => of(e, b).length === 1, 2000, 'ephemeral delivery');
    expect(of(e, b)[0]?.ephemeral).toBe(true);
  });

  it('publishes a key raced by two nodes once, both answering the same position', async () => {
    const a = await node();
    const b = await node();
    const c = fresh('race-key');
    await a.broker.subscribe(c);
    const results = await Promise.all(range(1, 20).flatMap((k) => [a, b].map((n) => n.broker.publish(command(c, `"${k}"`, { idempotencyKey: `k${k}` })))));
    for (let k = 0; k < 20; k++) {
      const pair = [results[2 * k], results[2 * k + 1]];
      expect(pair.filter((r) => r?.duplicate === false)).toHaveLength(1);
      expect(pair[0]?.position).toEqual(pair[1]?.position);
    }
    expect((await b.broker.history(c, undefined, 0)).top.seq).toBe(20);
    await until(() => of(c, a).length === 20, 2000, '20 deliveries');
    await sleep(50);
    expect(seqs(of(c, a))).toEqual(range(1, 20));
  });

  it('resumes on the other node from history', async () => {
    const a = await node();
    const b = await node();
    const c = fresh('resume');
    const positions: Position[] = [];
    for (let i = 1; i <= 10; i++) positions.push((await a.broker.publish(command(c, `{"i":${i}}`))).position);
    const held = positions[3] as Position;
    const page = await b.broker.history(c, held, 100);
    expect(page.top).toEqual(positions[9]);
    expect(page.publications.map((p) => [p.position, p.data])).toEqual(range(5, 10).map((i) => [positions[i - 1], `{"i":${i}}`]));
    const plan = planResume(c, held, page, [], false);
    expect(plan.recovered).toBe(true);
    expect(plan.steps).toHaveLength(6);
  });

  it('agrees on the epoch of a channel without a stream, which is the contract formula over the bucket life', async () => {
    const a = await node();
    const b = await node();
    const c = fresh('derived');
    const onA = (await a.broker.history(c, undefined, 10)).top;
    const onB = (await b.broker.tops([c])).get(c);
    expect(onB).toEqual(onA);
    const { life, generation } = await a.broker.lifetime(c);
    expect(onA).toEqual({ epoch: deriveEpoch(life as string, generation, c), seq: 0 });
    expect(await a.broker.hasStream(c)).toBe(false);
    expect((await b.broker.publish(command(c, '1'))).position).toEqual({ epoch: onA.epoch, seq: 1 });
  });
});

describe('redis broker: data lost in Redis', () => {
  it('FLUSHALL mid-stream: the next read shows another epoch (an explicit gap) and no position is reused', async () => {
    const a = await node();
    const b = await node();
    const c = fresh('flush');
    await b.broker.subscribe(c);
    const before: Position[] = [];
    for (let i = 1; i <= 5; i++) before.push((await a.broker.publish(command(c, `{"i":${i}}`))).position);
    const held = before[4] as Position;
    await redis.command('FLUSHALL');
    // A read right after the loss: seq 0 of a new epoch, which the next publish continues.
    const read = await b.broker.history(c, held, 100);
    expect(read.top.epoch).not.toBe(held.epoch);
    expect(read.top.seq).toBe(0);
    expect(read.publications).toEqual([]);
    expect(planResume(c, held, read, [], false).steps).toEqual([{ gap: { channel: c, from: held, to: read.top, reason: 'epoch' } }]);
    // Node a still remembers the old life of the bucket: its publish must not reuse it.
    const next = await a.broker.publish(command(c, '"after"'));
    expect(next.position).toEqual({ epoch: read.top.epoch, seq: 1 });
    expect(before.some((p) => p.epoch === next.position.epoch)).toBe(false);
    await until(() => of(c, b).length === 6, 2000, 'the publication after the flush');
    expect(of(c, b)[5]?.position).toEqual(next.position);
    // An idempotency key of the lost stream is gone with it: the key publishes anew in the new epoch.
    const k = fresh('flush-key');
    const first = await a.broker.publish(command(k, '1', { idempotencyKey: 'once' }));
    await redis.command('FLUSHALL');
    const again = await b.broker.publish(command(k, '1', { idempotencyKey: 'once' }));
    expect(again.duplicate).toBe(false);
    expect(again.position.epoch).not.toBe(first.position.epoch);
  });
});

describe('redis broker: outages', () => {
  it('a restart without persistence: down, 503 meanwhile, then reset; afterwards everything works in a new epoch', async () => {
    const own = await startRedis();
    releases.push(() => own.stop());
    const a = await node({ url: own.url, maxReconnectDelay: 100, commandTimeout: 1000 });
    const c = fresh('restart');
    await a.broker.subscribe(c);
    const first = await a.broker.publish(command(c, '1'));
    await until(() => of(c, a).length === 1, 2000, 'the first delivery');
    await own.kill();
    await until(() => a.statuses.includes('down'), 5000, "status 'down'");
    // Every call's refusal is taken at once: awaited one by one, a later call's could go unhandled meanwhile.
    const codes = await Promise.all(
      [a.broker.publish(command(c, '2')), a.broker.history(c, undefined, 10), a.broker.tops([c]), a.broker.subscribe(fresh('while-down')), a.broker.presence(c)].map(codeOf),
    );
    expect(codes).toEqual(['unavailable', 'unavailable', 'unavailable', 'unavailable', 'unavailable']);
    const err = await a.broker.publish(command(c, '2')).catch((e: unknown) => e);
    expect((err as TidingsError).status).toBe(503);
    await own.restart();
    await until(() => a.statuses.includes('reset'), 5000, "status 'reset'");
    expect(a.statuses).toEqual(['up', 'down', 'reset']);
    // The data is gone: a new epoch, never the old positions.
    const after = await a.broker.publish(command(c, '3'));
    expect(after.position.seq).toBe(1);
    expect(after.position.epoch).not.toBe(first.position.epoch);
    // The channel subscribed before the outage was subscribed again.
    await until(() => of(c, a).length === 2, 2000, 'delivery after the restart');
    expect(of(c, a).map((p) => p.data)).toEqual(['1', '3']);
  });

  it('a dropped subscriber connection: down, then reset once every wanted channel is subscribed again', async () => {
    const a = await node({ maxReconnectDelay: 100 });
    const b = await node({ maxReconnectDelay: 100 });
    const c = fresh('sub-drop');
    const gone = fresh('sub-drop-gone');
    await a.broker.subscribe(c);
    await a.broker.subscribe(gone);
    await a.broker.unsubscribe(gone);
    await b.broker.publish(command(c, '1'));
    await until(() => of(c, a).length === 1, 2000, 'the first delivery');
    await redis.command('CLIENT', 'KILL', 'TYPE', 'pubsub');
    await until(() => a.statuses.includes('reset'), 5000, "status 'reset'");
    expect(a.statuses).toEqual(['up', 'down', 'reset']);
    // b subscribed to nothing: its subscriber connection was not a pub/sub client, and stayed.
    expect(b.statuses).toEqual(['up']);
    // Commands went on meanwhile; the feed is back for what is wanted, and only that.
    await b.broker.publish(command(gone, '1'));
    await b.broker.publish(command(c, '2'));
    await until(() => of(c, a).length === 2, 2000, 'delivery after the reconnect');
    expect(seqs(of(c, a))).toEqual([1, 2]);
    expect(of(gone, a)).toEqual([]);
  });

  it('an outage with persistence: nothing delivered twice or out of order, positions continue', async () => {
    const own = await startRedis({ persist: true });
    releases.push(() => own.stop());
    const a = await node({ url: own.url, maxReconnectDelay: 100, commandTimeout: 1000 });
    const b = await node({ url: own.url, maxReconnectDelay: 100, commandTimeout: 1000 });
    const c = fresh('persist');
    await b.broker.subscribe(c);
    // Publishes keep coming from a while Redis goes away and comes back; some fail with unavailable.
    let stop = false;
    const outcomes: Array<{ seq: number } | 'unavailable'> = [];
    const publisher = (async () => {
      for (let i = 0; !stop; i++) {
        const r = await a.broker.publish(command(c, String(i))).then(
          (o) => ({ seq: o.position.seq }),
          (e: unknown) => {
            expect((e as TidingsError).code).toBe('unavailable');
            return 'unavailable' as const;
          },
        );
        outcomes.push(r);
        if (r === 'unavailable') await sleep(20);
      }
    })();
    await until(() => outcomes.length >= 20, 5000, 'publishes before the outage');
    await own.kill();
    await until(() => b.statuses.includes('down') && a.statuses.includes('down'), 5000, "both nodes 'down'");
    await own.restart();
    await until(() => b.statuses.includes('reset') && a.statuses.includes('reset'), 5000, "both nodes 'reset'");
    const count = outcomes.length;
    await until(() => outcomes.length >= count + 20, 5000, 'publishes after the outage');
    stop = true;
    await publisher;
    expect(outcomes).toContain('unavailable');
    const page = await b.broker.history(c, undefined, 10_000);
    const epoch = page.top.epoch;
    // Every publish acknowledged before the kill survived (fsync always), and seqs never repeat.
    const acked = outcomes.filter((o): o is { seq: number } => o !== 'unavailable').map((o) => o.seq);
    expect(new Set(acked).size).toBe(acked.length);
    for (const seq of acked) expect(seq).toBeLessThanOrEqual(page.top.seq);
    expect(seqs(page.publications)).toEqual(range(1, page.top.seq));
    // The live feed, which may miss what was published while it was down, never repeats or goes back.
    await until(() => (of(c, b).at(-1)?.position.seq ?? 0) === page.top.seq, 2000, 'the last publication live');
    const live = seqs(of(c, b));
    for (let i = 1; i < live.length; i++) expect(live[i]).toBeGreaterThan(live[i - 1] as number);
    expect(of(c, b).every((p) => p.position.epoch === epoch)).toBe(true);
  });
});

describe('redis broker: presence across nodes', () => {
  const entry = (client: string, node: string): PresenceEntry => ({ client, user: `user-${client}`, info: '{"role":"tester"}', node });

  it('joins and leaves reach every subscribed node; a dead node’s entries expire and their leave is announced', async () => {
    const a = await node();
    const b = await node();
    const c = fresh('presence');
    await a.broker.subscribe(c);
    await b.broker.subscribe(c);
    const onA = entry(`a-${tag}`, 'node-a');
    const onB = entry(`b-${tag}`, 'node-b');
    await a.broker.presenceAdd(c, onA, 60_000);
    await b.broker.presenceAdd(c, onB, 600);
    await until(() => a.presence.length === 2 && b.presence.length === 2, 2000, 'both joins on both nodes');
    expect(a.presence).toEqual([
      { kind: 'join', channel: c, entry: onA },
      { kind: 'join', channel: c, entry: onB },
    ]);
    expect(b.presence).toEqual(a.presence);
    // Adding again refreshes, and announces nothing.
    await b.broker.presenceAdd(c, onB, 600);
    expect((await a.broker.presence(c)).sort((x, y) => x.client.localeCompare(y.client))).toEqual([onA, onB]);
    // b refreshes for a while, then dies (stops refreshing): its entry leaves within ttl + two sweeps.
    await sleep(400);
    await b.broker.presenceTouch([{ channel: c, client: onB.client }], 600);
    await sleep(400);
    expect((await a.broker.presence(c)).map((e) => e.client).sort()).toEqual([onA.client, onB.client].sort());
    const died = Date.now();
    await b.broker.close();
    await until(() => a.presence.length === 3, 600 + 3 * SWEEP + 500, "the dead node's leave");
    expect(Date.now() - died).toBeLessThan(600 + 3 * SWEEP + 500);
    expect(a.presence[2]).toEqual({ kind: 'leave', channel: c, entry: onB });
    expect(await a.broker.presence(c)).toEqual([onA]);
    await a.broker.presenceRemove(c, onA);
    await until(() => a.presence.length === 4, 2000, 'the leave of a removed entry');
    expect(a.presence[3]).toEqual({ kind: 'leave', channel: c, entry: onA });
    expect(await a.broker.presence(c)).toEqual([]);
  });
});

describe('redis broker: GC of idle streams', () => {
  it('drops idle streams holding nothing protected and bumps their bucket generation; history, keys and subscribers protect', async () => {
    const settings = brokerSettings(SUITE_NAMESPACES, 300);
    const a = await node({ gcAfter: 100 }, settings);
    const b = await node({ gcAfter: 100 }, settings);
    const idle = fresh('gc-idle', 'brief'); // history kept BRIEF_TTL (300 ms)
    const keyed = fresh('gc-keyed', 'eph'); // no history, an idempotency key for 300 ms
    const watched = fresh('gc-watched', 'none'); // no history, but a node subscribes
    const busy = fresh('gc-busy', 'big'); // history for a minute
    const idleBefore = (await a.broker.publish(command(idle, '1'))).position;
    await a.broker.publish(command(keyed, '1', { idempotencyKey: 'k' }));
    await a.broker.publish(command(watched, '1'));
    await a.broker.publish(command(busy, '1'));
    await b.broker.subscribe(watched);
    const gen = async (c: string): Promise<number> => (await a.broker.lifetime(c)).generation;
    const generations = await Promise.all([idle, keyed, watched, busy].map(gen));
    await sleep(150);
    // Past gcAfter, but history and the key are still unexpired.
    await a.broker.collect();
    for (const c of [idle, keyed, watched, busy]) expect(await a.broker.hasStream(c)).toBe(true);
    await sleep(350);
    await a.broker.collect();
    expect(await a.broker.hasStream(idle)).toBe(false);
    expect(await a.broker.hasStream(keyed)).toBe(false);
    expect(await a.broker.hasStream(watched)).toBe(true);
    expect(await a.broker.hasStream(busy)).toBe(true);
    expect(await gen(idle)).toBe((generations[0] as number) + (bucketOf(idle) === bucketOf(keyed) ? 2 : 1));
    // The channel comes back in a new epoch: a client holding the old one gets an explicit gap.
    const page = await b.broker.history(idle, idleBefore, 100);
    expect(page.top.seq).toBe(0);
    expect(page.top.epoch).not.toBe(idleBefore.epoch);
    expect(planResume(idle, idleBefore, page, [], false).steps).toEqual([{ gap: { channel: idle, from: idleBefore, to: page.top, reason: 'epoch' } }]);
    expect((await a.broker.publish(command(idle, '2'))).position).toEqual({ epoch: page.top.epoch, seq: 1 });
    // Once nobody subscribes, the watched channel goes too (it is looked at again later, or now).
    await b.broker.unsubscribe(watched);
    await redis.command('ZADD', `tidings:{b${bucketOf(watched)}}:a`, 0, watched);
    await a.broker.collect();
    expect(await a.broker.hasStream(watched)).toBe(false);
  });

  it('runs on a timer on one node at a time', async () => {
    const a = await node({ gcAfter: 0, gcInterval: 100 }, brokerSettings(SUITE_NAMESPACES, 0));
    const c = fresh('gc-timer', 'none');
    await a.broker.publish(command(c, '1'));
    const deadline = Date.now() + 3000;
    while ((await a.broker.hasStream(c)) && Date.now() < deadline) await sleep(50);
    expect(await a.broker.hasStream(c)).toBe(false);
  });
});

describe('redis broker: pub/sub, storage and configuration', () => {
  it('works over plain pub/sub too (servers before Redis 7)', async () => {
    const a = await node({ sharded: false, prefix: 'tidings-plain' });
    const b = await node({ sharded: false, prefix: 'tidings-plain' });
    expect(a.broker.sharded).toBe(false);
    const c = fresh('plain');
    await b.broker.subscribe(c);
    const positions = await Promise.all(range(1, 20).map((i) => a.broker.publish(command(c, String(i)))));
    await until(() => of(c, b).length === 20, 2000, '20 deliveries');
    expect(seqs(of(c, b))).toEqual(range(1, 20));
    expect(positions.map((p) => p.position.seq).sort((x, y) => x - y)).toEqual(range(1, 20));
    await b.broker.presenceAdd(c, { client: 'p1', user: 'u', info: undefined, node: 'n' }, 10_000);
    await until(() => b.presence.length === 1, 2000, 'the join');
    expect(b.presence[0]).toEqual({ kind: 'join', channel: c, entry: { client: 'p1', user: 'u', info: undefined, node: 'n' } });
  });

  it('coalesces the subscribes of one tick into one command', async () => {
    const a = await node();
    const stats = async (): Promise<number> => {
      const info = String(await redis.command('INFO', 'commandstats'));
      return Number(/cmdstat_ssubscribe:calls=(\d+)/.exec(info)?.[1] ?? 0);
    };
    const channels = range(1, 300).map((i) => fresh(`many-${i}`));
    const before = await stats();
    await Promise.all(channels.map((c) => a.broker.subscribe(c)));
    expect((await stats()) - before).toBe(1);
    const count = (await redis.command('PUBSUB', 'SHARDNUMSUB', ...channels.map((c) => `tidings:{b${bucketOf(c)}}:p:${c}`))) as Array<string | number>;
    expect(count.filter((_, i) => i % 2 === 1).every((n) => n === 1)).toBe(true);
    await Promise.all(channels.map((c) => a.broker.unsubscribe(c)));
    const after = (await redis.command('PUBSUB', 'SHARDNUMSUB', ...channels.map((c) => `tidings:{b${bucketOf(c)}}:p:${c}`))) as Array<string | number>;
    expect(after.filter((_, i) => i % 2 === 1).every((n) => n === 0)).toBe(true);
  });

  it('refuses a publish with storage_full when Redis is out of memory, changing nothing', async () => {
    const a = await node();
    const c = fresh('oom');
    const first = await a.broker.publish(command(c, '1'));
    await redis.command('CONFIG', 'SET', 'maxmemory', '1');
    try {
      const err = await a.broker.publish(command(c, '2')).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TidingsError);
      expect((err as TidingsError).code).toBe('storage_full');
    } finally {
      await redis.command('CONFIG', 'SET', 'maxmemory', '0');
    }
    expect((await a.broker.history(c, undefined, 10)).top).toEqual(first.position);
    expect((await a.broker.publish(command(c, '3'))).position.seq).toBe(2);
  });

  it('warns when Redis may evict keys without a TTL (maxmemory-policy allkeys-*)', async () => {
    const warnings: string[] = [];
    const logger = { warn: (_: object, msg: string) => warnings.push(msg), info: () => undefined };
    await node({ logger });
    expect(warnings).toEqual([]);
    await redis.command('CONFIG', 'SET', 'maxmemory-policy', 'allkeys-lru');
    try {
      await node({ logger });
    } finally {
      await redis.command('CONFIG', 'SET', 'maxmemory-policy', 'noeviction');
    }
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/allkeys/);
  });

  it('fails to start, with unavailable, when Redis is unreachable', async () => {
    const gone = await startRedis();
    const url = gone.url;
    await gone.stop();
    const broker = new RedisBroker({ url, connectTimeout: 500 });
    const started = broker.start({ publication: () => undefined, presence: () => undefined, status: () => undefined }, SETTINGS);
    expect(await codeOf(started)).toBe('unavailable');
    await broker.close();
  });
});
