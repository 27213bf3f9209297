/**
 * The admin dashboard's pure parts: the cluster view (rates from two snapshots, latency merged from
 * every node's buckets, live / stale / gone / forgotten, the node bound, the busiest channels), the
 * login cookie (signed, expiring, bound to the secret that issued it), the hub's busiest channels,
 * and the stream bound (a reader too far behind is ended).
 */
import type { ServerResponse } from 'node:http';
import { describe, expect, it } from 'vitest';
import { MemoryBroker } from '@tidings/server';
import { AdminAuth, ADMIN_SESSION_MS } from '../../packages/server/src/admin/auth.js';
import { parseSnapshot, type NodeSnapshot } from '../../packages/server/src/admin/snapshot.js';
import { AdminStreams, MAX_BUFFERED, MAX_STREAMS } from '../../packages/server/src/admin/streams.js';
import { ClusterView, FORGET_AFTER, GONE_AFTER, MAX_NODES, STALE_AFTER } from '../../packages/server/src/admin/view.js';
import { DELIVERY_BUCKETS_MS } from '../../packages/server/src/metrics.js';
import { Hub, type Subscriber } from '../../packages/server/src/hub.js';

/** A snapshot of `node` at `at` with cumulative counters and latency buckets. */
function snap(node: string, at: number, over: Partial<NodeSnapshot> = {}): NodeSnapshot {
  return {
    v: 1,
    node,
    at,
    broker: 'up',
    connections: { websocket: 1, sse: 2, poll: 3 },
    channels: 1,
    watchers: 0,
    counters: { publications: 0, deliveries: 0, reconnects: 0, sheds: 0 },
    latency: null,
    loopDelay: { p99: 1, max: 2 },
    top: [],
    ...over,
  };
}

/** Bucket counts with `n` observations in bucket `i`. */
const buckets = (i: number, n: number): number[] => Array.from({ length: DELIVERY_BUCKETS_MS.length + 1 }, (_, j) => (j === i ? n : 0));

describe('ClusterView', () => {
  it('derives per-second rates from two snapshots of a node and sums them over live nodes', () => {
    const view = new ClusterView();
    view.receive(snap('a', 1000, { counters: { publications: 10, deliveries: 100, reconnects: 1, sheds: 0 } }), 0);
    view.receive(snap('a', 3000, { counters: { publications: 30, deliveries: 300, reconnects: 5, sheds: 2 } }), 2000);
    view.receive(snap('b', 1000, { counters: { publications: 0, deliveries: 0, reconnects: 0, sheds: 0 } }), 1500);
    view.receive(snap('b', 2000, { counters: { publications: 5, deliveries: 50, reconnects: 0, sheds: 0 } }), 2000);
    const tick = view.tick(2000, 'a');
    expect(tick.nodes.map((n) => [n.node, n.rates])).toEqual([
      ['a', { in: 10, out: 100, reconnects: 2, sheds: 1 }],
      ['b', { in: 5, out: 50, reconnects: 0, sheds: 0 }],
    ]);
    expect(tick.cluster).toMatchObject({ live: 2, connections: { websocket: 2, sse: 4, poll: 6 }, rates: { in: 15, out: 150, reconnects: 2, sheds: 1 } });
  });

  it('counts from zero when a node restarted (its counters went back), and shows no rates for a node without counters', () => {
    const view = new ClusterView();
    view.receive(snap('a', 1000, { counters: { publications: 500, deliveries: 500, reconnects: 0, sheds: 0 } }), 0);
    view.receive(snap('a', 2000, { counters: { publications: 4, deliveries: 8, reconnects: 0, sheds: 0 } }), 1000);
    view.receive(snap('h', 1000, { counters: null }), 1000);
    const tick = view.tick(1000, 'a');
    expect(tick.nodes.map((n) => n.rates)).toEqual([{ in: 4, out: 8, reconnects: 0, sheds: 0 }, null]);
    expect(tick.cluster.rates.in).toBe(4);
  });

  it('merges delivery latency from every live node by bucket, not by averaging quantiles', () => {
    const view = new ClusterView();
    // 99 fast deliveries on one node, one slow one on the other: the cluster p50 is fast, p99 is not the slow node's p50.
    view.receive(snap('a', 1000, { latency: { p50: 0.1, p99: 0.2, count: 99, buckets: buckets(0, 99) } }), 0);
    view.receive(snap('b', 1000, { latency: { p50: 3000, p99: 4900, count: 1, buckets: buckets(DELIVERY_BUCKETS_MS.length - 1, 1) } }), 0);
    const tick = view.tick(0, 'a');
    expect(tick.cluster.p50).toBeLessThanOrEqual(0.25);
    expect(tick.cluster.p99).toBeLessThanOrEqual(0.25);
    expect(tick.nodes.map((n) => n.p99)).toEqual([0.2, 4900]);
    // Nothing delivered: no latency at all rather than zero.
    expect(new ClusterView().tick(0, 'a').cluster.p50).toBeNull();
  });

  it('shows a silent node stale, then gone, then forgets it; a goodbye is gone at once; stale nodes are left out of the sums', () => {
    const view = new ClusterView();
    view.receive(snap('a', 1000), 0);
    view.receive(snap('b', 1000), 0);
    view.receive(snap('b', 2000, { bye: true }), 10);
    const state = (now: number): Array<[string, string]> => view.tick(now, 'x').nodes.map((n) => [n.node, n.state]);
    expect(state(STALE_AFTER)).toEqual([
      ['a', 'live'],
      ['b', 'gone'],
    ]);
    expect(view.tick(STALE_AFTER + 1, 'x').cluster.live).toBe(0);
    expect(state(STALE_AFTER + 1)).toEqual([
      ['a', 'stale'],
      ['b', 'gone'],
    ]);
    expect(view.tick(STALE_AFTER + 1, 'x').cluster.connections).toEqual({ websocket: 0, sse: 0, poll: 0 });
    expect(state(GONE_AFTER + 1)).toEqual([
      ['a', 'gone'],
      ['b', 'gone'],
    ]);
    expect(state(FORGET_AFTER + 11)).toEqual([]);
    expect(view.size).toBe(0);
  });

  it('keeps at most MAX_NODES nodes, replacing the one heard from longest ago', () => {
    const view = new ClusterView();
    for (let i = 0; i < MAX_NODES + 6; i++) view.receive(snap(`n${String(i).padStart(3, '0')}`, 1000), i);
    expect(view.size).toBe(MAX_NODES);
    const nodes = view.tick(MAX_NODES + 6, 'x').nodes.map((n) => n.node);
    expect(nodes).not.toContain('n000');
    expect(nodes).toContain(`n${String(MAX_NODES + 5).padStart(3, '0')}`);
  });

  it('lists the busiest channels over live nodes, subscribers summed, at most ten, and counts watchers', () => {
    const view = new ClusterView();
    const top = (names: string[], subs: number): NodeSnapshot['top'] => names.map((channel) => ({ channel, subscribers: subs, presence: channel === 'p:x' ? 7 : null }));
    view.receive(snap('a', 1000, { watchers: 2, top: top(['p:x', 'c:1', 'c:2'], 5) }), 0);
    view.receive(snap('b', 1000, { watchers: 1, top: top(['p:x', ...Array.from({ length: 9 }, (_, i) => `d:${i}`)], 1) }), 0);
    const tick = view.tick(0, 'a');
    expect(tick.channels).toHaveLength(10);
    expect(tick.channels.slice(0, 3)).toEqual([
      { channel: 'p:x', subscribers: 6, presence: 7 },
      { channel: 'c:1', subscribers: 5, presence: null },
      { channel: 'c:2', subscribers: 5, presence: null },
    ]);
    expect(view.watchers(0)).toBe(3);
    expect(view.watchers(STALE_AFTER + 1)).toBe(0);
  });

  it('ignores an older snapshot that arrives after a newer one, and anything that is not a snapshot', () => {
    const view = new ClusterView();
    view.receive(snap('a', 2000, { broker: 'down' }), 0);
    view.receive(snap('a', 1000, { broker: 'up' }), 1);
    expect(view.tick(1, 'a').nodes[0]?.broker).toBe('down');
    for (const text of ['nope', '{}', '{"v":2,"node":"a","at":1}', JSON.stringify({ ...snap('a', 1), connections: null }), 'x'.repeat(70_000)]) {
      expect(parseSnapshot(text)).toBeUndefined();
    }
    expect(parseSnapshot(JSON.stringify(snap('a', 1)))?.node).toBe('a');
  });
});

describe('AdminAuth cookies', () => {
  const key = 'an-api-key-0123456789abcdef';
  const token = 'an-admin-token-0123456789';

  it('accepts its own cookies until they expire, on any node holding the same secret', () => {
    let now = 1_000_000;
    const one = new AdminAuth({ apiKey: key, adminToken: token, trustProxy: false, now: () => now });
    const two = new AdminAuth({ apiKey: key, adminToken: token, trustProxy: false, now: () => now });
    const byKey = one.issue('k');
    const byToken = one.issue('t');
    expect(two.verify(byKey)).toBe(true);
    expect(two.verify(byToken)).toBe(true);
    now += ADMIN_SESSION_MS + 1;
    expect(two.verify(byKey)).toBe(false);
  });

  it('refuses tampered cookies, cookies signed with another secret, and a token cookie where no token is configured', () => {
    const one = new AdminAuth({ apiKey: key, adminToken: token, trustProxy: false });
    const cookie = one.issue('k');
    const [kind, expires, mac] = cookie.split('.') as [string, string, string];
    const later = (parseInt(expires, 36) + 10 ** 9).toString(36);
    for (const forged of [`${kind}.${later}.${mac}`, `t.${expires}.${mac}`, `${kind}.${expires}.${mac.slice(1)}`, `${cookie}.x`, '', 'k..', 'garbage']) {
      expect(one.verify(forged)).toBe(false);
    }
    expect(new AdminAuth({ apiKey: 'another-key-0123456789abcdef', adminToken: token, trustProxy: false }).verify(cookie)).toBe(false);
    expect(new AdminAuth({ apiKey: key, adminToken: undefined, trustProxy: false }).verify(one.issue('t'))).toBe(false);
  });
});

describe('Hub.busiest', () => {
  it('returns the channels with the most subscribers, most first, at most n, lingering ones left out', async () => {
    const broker = new MemoryBroker({ maxChannels: 100, dedupMaxKeys: 100 });
    await broker.start({ publication: () => undefined, presence: () => undefined, status: () => undefined }, { namespaces: { c: { historySize: 0, historyTtl: 0, ephemeral: false } }, dedupWindow: 1000 });
    const hub = new Hub(broker, { repairLimit: 10, maxRepairQueue: 10, linger: 60_000 }, () => undefined);
    const sub = (): Subscriber => ({ receive: () => undefined, presence: () => undefined, fail: () => undefined });
    const counts: Record<string, number> = { 'c:a': 3, 'c:b': 7, 'c:c': 1, 'c:d': 5, 'c:e': 2 };
    const subs: Array<[string, Subscriber]> = [];
    for (const [channel, n] of Object.entries(counts)) for (let i = 0; i < n; i++) subs.push([channel, sub()]);
    await Promise.all(subs.map(([channel, s]) => hub.join(channel, s)));
    expect(hub.busiest(3)).toEqual([
      { channel: 'c:b', subscribers: 7 },
      { channel: 'c:d', subscribers: 5 },
      { channel: 'c:a', subscribers: 3 },
    ]);
    for (const [channel, s] of subs) if (channel === 'c:b') hub.leave(channel, s);
    expect(hub.busiest(10).map((t) => t.channel)).toEqual(['c:d', 'c:a', 'c:e', 'c:c']);
    expect(hub.busiest(0)).toEqual([]);
    hub.close();
    await broker.close();
  });
});

describe('AdminStreams', () => {
  /** A response that records what it was given. */
  const response = (buffered = 0): ServerResponse & { text: string; destroyed: boolean } => {
    const res = {
      text: '',
      destroyed: false,
      writableLength: buffered,
      socket: null,
      writeHead: () => res,
      write: (t: string) => ((res.text += t), true),
      end: () => undefined,
      destroy: () => {
        res.destroyed = true;
      },
      once: () => res,
    };
    return res as unknown as ServerResponse & { text: string; destroyed: boolean };
  };

  it('ends a stream whose reader is too far behind and refuses streams past the bound', () => {
    const streams = new AdminStreams();
    const slow = response(MAX_BUFFERED + 1);
    const fast = response();
    streams.open(slow, 'hello\n\n');
    streams.open(fast, 'hello\n\n');
    streams.broadcast('tick\n\n');
    expect(slow.destroyed).toBe(true);
    expect(fast.text).toBe('retry: 2000\n\nhello\n\ntick\n\n');
    expect(streams.size).toBe(1);
    for (let i = 1; i < MAX_STREAMS; i++) streams.open(response(), '');
    expect(() => streams.open(response(), '')).toThrow(/at most 32 admin streams/);
    streams.closeAll();
    expect(streams.size).toBe(0);
  });
});
