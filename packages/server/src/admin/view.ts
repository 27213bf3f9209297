/**
 * The cluster as one node hears it on the admin channel: the latest two snapshots of every node
 * (rates come from the pair, on the sending node's own clock), when each was heard (on this node's
 * clock), and the aggregate the dashboard draws: connections by transport, messages per second in
 * (publications accepted) and out (deliveries written), delivery latency p50/p99 merged from every
 * node's buckets, reconnect and shed rates, and the busiest channels. Bounded: at most
 * {@link MAX_NODES} nodes, and a node unheard for {@link FORGET_AFTER} ms is forgotten.
 * @module
 */
import type { Channel } from '@tidings/protocol';
import { Buckets, DELIVERY_BUCKETS_MS } from '../metrics.js';
import { TOP_CHANNELS, type ChannelLoad, type ConnectionCounts, type NodeSnapshot } from './snapshot.js';

/** How often each node publishes a snapshot, in ms. */
export const SNAPSHOT_INTERVAL = 1000;
/** A node unheard for longer is shown stale. */
export const STALE_AFTER = 3500;
/** A node unheard for longer (or that said goodbye) is shown gone. */
export const GONE_AFTER = 10_000;
/** A node unheard for longer is forgotten. */
export const FORGET_AFTER = 30_000;
/** Most nodes kept; a new one beyond it replaces the one heard from longest ago. */
export const MAX_NODES = 64;

export type NodeState = 'live' | 'stale' | 'gone';

/** Per-second rates between a node's last two snapshots. */
export interface Rates {
  readonly in: number;
  readonly out: number;
  readonly reconnects: number;
  readonly sheds: number;
}

/** One row of the nodes table. */
export interface NodeRow {
  readonly node: string;
  readonly state: NodeState;
  /** Ms since this node last heard from it. */
  readonly ageMs: number;
  readonly broker: string;
  readonly connections: ConnectionCounts;
  readonly channels: number;
  /** Null when the node keeps no counters (a host's own metrics, or `metrics: false`). */
  readonly rates: Rates | null;
  readonly p50: number | null;
  readonly p99: number | null;
  readonly loopDelay: { readonly p99: number; readonly max: number };
}

/** What the admin stream sends every second. */
export interface ClusterTick {
  readonly at: number;
  /** The node serving this stream. */
  readonly node: string;
  readonly nodes: readonly NodeRow[];
  /** Over live nodes; latency null when nothing was delivered in the last interval. */
  readonly cluster: {
    readonly live: number;
    readonly connections: ConnectionCounts;
    readonly rates: Rates;
    readonly p50: number | null;
    readonly p99: number | null;
  };
  /** The busiest channels over live nodes: subscribers summed over the nodes that list the channel. */
  readonly channels: readonly ChannelLoad[];
}

interface Heard {
  latest: NodeSnapshot;
  previous: NodeSnapshot | undefined;
  /** This node's clock when the latest arrived. */
  heardAt: number;
  rates: Rates | null;
}

const round2 = (n: number): number => Math.round(n * 100) / 100;
const round3 = (n: number): number => Math.round(n * 1000) / 1000;

/** Per-second rates from two snapshots of one node; counters that went back (a restart) count from zero. */
function ratesBetween(a: NodeSnapshot | undefined, b: NodeSnapshot): Rates | null {
  const x = a?.counters;
  const y = b.counters;
  if (y === null) return null;
  if (a === undefined || x === null || x === undefined || b.at <= a.at) return { in: 0, out: 0, reconnects: 0, sheds: 0 };
  const seconds = (b.at - a.at) / 1000;
  const per = (now: number, before: number): number => round2((now >= before ? now - before : now) / seconds);
  return {
    in: per(y.publications, x.publications),
    out: per(y.deliveries, x.deliveries),
    reconnects: per(y.reconnects, x.reconnects),
    sheds: per(y.sheds, x.sheds),
  };
}

export class ClusterView {
  readonly #nodes = new Map<string, Heard>();

  /** Takes a snapshot heard at `now` (this node's clock). */
  receive(s: NodeSnapshot, now: number): void {
    const known = this.#nodes.get(s.node);
    if (known === undefined) {
      this.forget(now);
      if (this.#nodes.size >= MAX_NODES) {
        let oldest: string | undefined;
        let at = Infinity;
        for (const [node, h] of this.#nodes) if (h.heardAt < at) [oldest, at] = [node, h.heardAt];
        if (oldest !== undefined) this.#nodes.delete(oldest);
      }
      this.#nodes.set(s.node, { latest: s, previous: undefined, heardAt: now, rates: ratesBetween(undefined, s) });
      return;
    }
    if (s.at < known.latest.at) return; // an older one, overtaken
    known.previous = known.latest;
    known.latest = s;
    known.heardAt = now;
    known.rates = ratesBetween(known.previous, s);
  }

  /** Forgets nodes unheard for FORGET_AFTER. */
  forget(now: number): void {
    for (const [node, h] of this.#nodes) if (now - h.heardAt > FORGET_AFTER) this.#nodes.delete(node);
  }

  get size(): number {
    return this.#nodes.size;
  }

  /** Admin streams open over live nodes (whether anyone watches the cluster). */
  watchers(now: number): number {
    let n = 0;
    for (const h of this.#nodes.values()) if (stateOf(h, now) === 'live') n += h.latest.watchers;
    return n;
  }

  /** The dashboard's view at `now`, as served by `node`. */
  tick(now: number, node: string): ClusterTick {
    this.forget(now);
    const rows: NodeRow[] = [];
    const connections = { websocket: 0, sse: 0, poll: 0 };
    const rates = { in: 0, out: 0, reconnects: 0, sheds: 0 };
    const latency = new Buckets(DELIVERY_BUCKETS_MS);
    const channels = new Map<Channel, { subscribers: number; presence: number | null }>();
    let live = 0;
    for (const h of [...this.#nodes.values()].sort((a, b) => (a.latest.node < b.latest.node ? -1 : 1))) {
      const s = h.latest;
      const state = stateOf(h, now);
      rows.push({
        node: s.node,
        state,
        ageMs: now - h.heardAt,
        broker: s.broker,
        connections: s.connections,
        channels: s.channels,
        rates: h.rates,
        p50: s.latency === null || s.latency.count === 0 ? null : s.latency.p50,
        p99: s.latency === null || s.latency.count === 0 ? null : s.latency.p99,
        loopDelay: s.loopDelay,
      });
      if (state !== 'live') continue;
      live += 1;
      for (const t of ['websocket', 'sse', 'poll'] as const) connections[t] += s.connections[t];
      if (h.rates !== null) for (const r of ['in', 'out', 'reconnects', 'sheds'] as const) rates[r] += h.rates[r];
      const buckets = s.latency?.buckets;
      if (buckets !== undefined && buckets.length === latency.counts.length) {
        for (let i = 0; i < buckets.length; i++) latency.counts[i] = (latency.counts[i] ?? 0) + (buckets[i] ?? 0);
        latency.count += s.latency?.count ?? 0;
      }
      for (const t of s.top) {
        const c = channels.get(t.channel);
        if (c === undefined) channels.set(t.channel, { subscribers: t.subscribers, presence: t.presence });
        else [c.subscribers, c.presence] = [c.subscribers + t.subscribers, c.presence ?? t.presence];
      }
    }
    const busiest = [...channels]
      .map(([channel, c]) => ({ channel, ...c }))
      .sort((a, b) => b.subscribers - a.subscribers || (a.channel < b.channel ? -1 : 1))
      .slice(0, TOP_CHANNELS);
    const quantile = (q: number): number | null => (latency.count === 0 ? null : round3(latency.quantile(q)));
    for (const r of ['in', 'out', 'reconnects', 'sheds'] as const) rates[r] = round2(rates[r]);
    return { at: now, node, nodes: rows, cluster: { live, connections, rates, p50: quantile(0.5), p99: quantile(0.99) }, channels: busiest };
  }
}

function stateOf(h: Heard, now: number): NodeState {
  const age = now - h.heardAt;
  if (h.latest.bye === true || age > GONE_AFTER) return 'gone';
  return age > STALE_AFTER ? 'stale' : 'live';
}
