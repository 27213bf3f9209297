/**
 * The Redis broker on a real Redis Cluster (three masters started by the test kit): the shared
 * contract suite, then what a Cluster adds: channels spread over every master with one order each,
 * delivery across nodes through one sharded subscriber per master, subscribes coalesced per slot, a
 * master that restarts without its data changing the epochs of its own channels only, and a slot
 * that moves to another master (the feed follows it, reporting a reset).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Position } from '@tidings/protocol';
import { planResume, RedisBroker, type BrokerStatus, type Publication, type RedisBrokerOptions } from '@tidings/server';
import { brokerSettings, cleanupAfterEach, publishCommand as command, startRedisCluster, until, type RedisClusterServer, type RedisServer } from '@tidings/testing';
import { bucketOf } from '../../packages/server/src/brokers/epochs.js';
import { brokerSuite, SUITE_NAMESPACES } from './broker-suite.js';

const SWEEP = 200;
const range = (from: number, to: number): number[] => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
const seqs = (pubs: readonly Publication[]): number[] => pubs.map((p) => p.position.seq);

let cluster: RedisClusterServer;
beforeAll(async () => {
  cluster = await startRedisCluster(3);
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

brokerSuite('redis cluster', () => Promise.resolve(new RedisBroker({ url: cluster.url, presenceSweep: SWEEP, gcInterval: 0 })), { presenceSweep: SWEEP });

interface Node {
  readonly broker: RedisBroker;
  readonly publications: Publication[];
  readonly statuses: Array<{ status: BrokerStatus; detail: string }>;
}

const releases = cleanupAfterEach();
const tag = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
let run = 0;
const fresh = (label: string): string => `big:cl-${tag}-${++run}-${label}`;
const SETTINGS = brokerSettings(SUITE_NAMESPACES, 60_000);

async function node(options: Partial<RedisBrokerOptions> = {}): Promise<Node> {
  const broker = new RedisBroker({ url: cluster.url, presenceSweep: SWEEP, gcInterval: 0, maxReconnectDelay: 100, commandTimeout: 1000, ...options });
  const made: Node = { broker, publications: [], statuses: [] };
  releases.push(() => broker.close());
  await broker.start(
    {
      publication: (pub) => made.publications.push(pub),
      presence: () => undefined,
      status: (status, detail) => made.statuses.push({ status, detail }),
    },
    SETTINGS,
  );
  return made;
}

const of = (channel: string, n: Node): Publication[] => n.publications.filter((p) => p.channel === channel);
const statuses = (n: Node): BrokerStatus[] => n.statuses.map((s) => s.status);

/** A fresh channel whose bucket's slot `owner` holds. */
async function channelOn(owner: RedisServer, label: string): Promise<string> {
  for (;;) {
    const c = fresh(label);
    if ((await cluster.ownerOf(`{b${bucketOf(c)}}`)) === owner) return c;
  }
}

describe('redis broker on a Redis Cluster', () => {
  it('finds the cluster from one seed URL and spreads channels over every master, each with one order, delivered across nodes', async () => {
    const a = await node();
    const b = await node();
    expect(a.statuses[0]?.detail).toMatch(/cluster of 3 masters/);
    const channels = await Promise.all(cluster.nodes.map((owner, i) => channelOn(owner, `spread${i}`)));
    await Promise.all(channels.map((c) => b.broker.subscribe(c)));
    const outcomes = await Promise.all(channels.flatMap((c) => range(1, 60).map((i) => (i % 2 === 0 ? a : b).broker.publish(command(c, `{"i":${i}}`)))));
    for (const [k, c] of channels.entries()) {
      const mine = outcomes.slice(k * 60, (k + 1) * 60);
      expect(mine.map((o) => o.position.seq).sort((x, y) => x - y)).toEqual(range(1, 60));
      expect(new Set(mine.map((o) => o.position.epoch)).size).toBe(1);
      await until(() => of(c, b).length >= 60, 5000, `the feed of ${c}`);
      expect(seqs(of(c, b))).toEqual(range(1, 60));
      const page = await a.broker.history(c, undefined, 100);
      expect(page.publications).toEqual(of(c, b));
    }
    // Every master holds data of its own channels: the keys were spread, not pinned to one node.
    for (const owner of cluster.nodes) expect(Number(await owner.command('DBSIZE'))).toBeGreaterThan(0);
  });

  it('coalesces the subscribes of one tick into one SSUBSCRIBE per slot on the owning master', async () => {
    const a = await node();
    const channels = range(1, 300).map((i) => fresh(`many${i}`));
    await Promise.all(channels.map((c) => a.broker.subscribe(c)));
    const slots = new Set(await Promise.all(channels.map((c) => (cluster.nodes[0] as RedisServer).command('CLUSTER', 'KEYSLOT', `{b${bucketOf(c)}}`))));
    // Each master's subscriber connection: its shard channels are exactly the ones of its slots.
    let total = 0;
    for (const owner of cluster.nodes) {
      const listed = (await owner.command('PUBSUB', 'SHARDCHANNELS', `tidings:*cl-${tag}-*many*`)) as string[];
      for (const name of listed) {
        const c = name.slice(name.indexOf('}:p:') + 4);
        expect(await cluster.ownerOf(`{b${bucketOf(c)}}`)).toBe(owner);
      }
      total += listed.length;
      const stats = String(await owner.command('INFO', 'commandstats'));
      const calls = Number(/cmdstat_ssubscribe:calls=(\d+)/.exec(stats)?.[1] ?? 0);
      expect(calls).toBeGreaterThan(0);
    }
    expect(total).toBe(300);
    expect(slots.size).toBeGreaterThan(3);
    await Promise.all(channels.map((c) => a.broker.unsubscribe(c)));
    // Unsubscribes are confirmed by the server before they resolve: nothing is left on any master.
    const left = await Promise.all(cluster.nodes.map((o) => o.command('PUBSUB', 'SHARDCHANNELS', `tidings:*cl-${tag}-*many*`) as Promise<string[]>));
    expect(left.map((l) => l.length)).toEqual([0, 0, 0]);
  });

  it('a master restarting without its data: down, then reset; its channels get a new epoch (an explicit gap), the others continue', async () => {
    const a = await node();
    const [lost, kept] = [cluster.nodes[1] as RedisServer, cluster.nodes[2] as RedisServer];
    const onLost = await channelOn(lost, 'lost');
    const onKept = await channelOn(kept, 'kept');
    await a.broker.subscribe(onLost);
    await a.broker.subscribe(onKept);
    const before = new Map<string, Position>();
    for (const c of [onLost, onKept]) for (let i = 1; i <= 3; i++) before.set(c, (await a.broker.publish(command(c, `${i}`))).position);
    await until(() => of(onLost, a).length === 3 && of(onKept, a).length === 3, 3000, 'the first deliveries');
    await lost.restart();
    await cluster.ready();
    await until(() => statuses(a).includes('reset'), 15_000, "status 'reset'");
    expect(statuses(a)).toEqual(['up', 'down', 'reset']);
    const heldLost = before.get(onLost) as Position;
    const readLost = await a.broker.history(onLost, heldLost, 100);
    expect(readLost.top.epoch).not.toBe(heldLost.epoch);
    expect(planResume(onLost, heldLost, readLost, [], false).steps).toEqual([{ gap: { channel: onLost, from: heldLost, to: readLost.top, reason: 'epoch' } }]);
    const heldKept = before.get(onKept) as Position;
    const readKept = await a.broker.history(onKept, { epoch: heldKept.epoch, seq: 1 }, 100);
    expect(readKept.top).toEqual(heldKept);
    expect(seqs(readKept.publications)).toEqual([2, 3]);
    // Both feeds are live again, and positions are never reused.
    const nextLost = await a.broker.publish(command(onLost, '4'));
    const nextKept = await a.broker.publish(command(onKept, '4'));
    expect(nextLost.position).toEqual({ epoch: readLost.top.epoch, seq: 1 });
    expect(nextKept.position).toEqual({ epoch: heldKept.epoch, seq: 4 });
    await until(() => of(onLost, a).length === 4 && of(onKept, a).length === 4, 3000, 'deliveries after the restart');
  }, 40_000);

  it('a slot moving to another master: the feed follows it (down, reset) and delivers from the new owner', async () => {
    const a = await node();
    const b = await node();
    const from = cluster.nodes[0] as RedisServer;
    const to = cluster.nodes[2] as RedisServer;
    const c = await channelOn(from, 'moving');
    await a.broker.subscribe(c);
    await b.broker.publish(command(c, '1'));
    await until(() => of(c, a).length === 1, 3000, 'the first delivery');
    const slot = Number(await from.command('CLUSTER', 'KEYSLOT', `{b${bucketOf(c)}}`));
    const fromId = String(await from.command('CLUSTER', 'MYID'));
    const toId = String(await to.command('CLUSTER', 'MYID'));
    await to.command('CLUSTER', 'SETSLOT', slot, 'IMPORTING', fromId);
    await from.command('CLUSTER', 'SETSLOT', slot, 'MIGRATING', toId);
    const keys = (await from.command('CLUSTER', 'GETKEYSINSLOT', slot, 1000)) as string[];
    if (keys.length > 0) await from.command('MIGRATE', '127.0.0.1', to.port, '', 0, 5000, 'KEYS', ...keys);
    for (const n of cluster.nodes) await n.command('CLUSTER', 'SETSLOT', slot, 'NODE', toId);
    expect(await cluster.ownerOf(`{b${bucketOf(c)}}`)).toBe(to);
    await until(() => statuses(a).includes('reset'), 15_000, "status 'reset' after the move");
    expect(statuses(a)).toEqual(['up', 'down', 'reset']);
    // History moved with the slot; positions continue in the same epoch, and the feed comes from the new owner.
    const next = await b.broker.publish(command(c, '2'));
    expect(next.position).toEqual({ epoch: of(c, a)[0]?.position.epoch, seq: 2 });
    await until(() => of(c, a).length === 2, 5000, 'delivery from the new owner');
    expect(seqs(of(c, a))).toEqual([1, 2]);
    const listed = (await to.command('PUBSUB', 'SHARDCHANNELS', `*${c}`)) as string[];
    expect(listed).toHaveLength(1);
  }, 40_000);
});
