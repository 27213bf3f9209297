/**
 * One node's state as the admin dashboard sees it, taken about once a second: connections by
 * transport, cumulative publications, deliveries, reconnects and sheds (rates are derived by whoever
 * holds two snapshots), delivery latency over the last interval, the broker's state, event-loop
 * delay and this node's busiest channels. Counters come from {@link CounterMetrics}; with other
 * metrics (a host's own, or `metrics: false`) they are `null` and the dashboard says so.
 *
 * The busiest channels are only looked for while someone watches (an admin stream is open on any
 * node); their presence counts are read from the broker at most every {@link PRESENCE_EVERY} ms,
 * for at most {@link TOP_CHANNELS} channels.
 * @module
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { Channel } from '@tidings/protocol';
import type { TransportName } from '../auth.js';
import type { BrokerStatus } from '../brokers/broker.js';
import { CounterMetrics, type Buckets, type Metrics } from '../metrics.js';

/** Most channels a snapshot lists. */
export const TOP_CHANNELS = 10;
/** Presence counts of the busiest channels are read at most this often, in ms. */
export const PRESENCE_EVERY = 5000;
/** A snapshot longer than this (JSON) is not one of ours. */
const MAX_SNAPSHOT_CHARS = 64 * 1024;

/** Connections of the streaming transports. */
export interface ConnectionCounts {
  readonly websocket: number;
  readonly sse: number;
  readonly poll: number;
}

/** Cumulative counts since the node started. */
export interface Counters {
  readonly publications: number;
  readonly deliveries: number;
  readonly reconnects: number;
  /** Connections closed as slow consumers. */
  readonly sheds: number;
}

/** A busy channel on one node; `presence` is the cluster-wide count, null when its namespace keeps none (or not read yet). */
export interface ChannelLoad {
  readonly channel: Channel;
  readonly subscribers: number;
  readonly presence: number | null;
}

/** What a node publishes on the admin channel. */
export interface NodeSnapshot {
  readonly v: 1;
  readonly node: string;
  /** The node's clock, ms since the epoch. */
  readonly at: number;
  /** The node is stopping: this is its last snapshot. */
  readonly bye?: true;
  readonly broker: BrokerStatus;
  readonly connections: ConnectionCounts;
  /** Channels with subscribers on this node. */
  readonly channels: number;
  /** Admin streams open on this node. */
  readonly watchers: number;
  readonly counters: Counters | null;
  /** Deliveries since the previous snapshot: quantiles (ms) and the bucket counts, so nodes can be merged. */
  readonly latency: { readonly p50: number; readonly p99: number; readonly count: number; readonly buckets: readonly number[] } | null;
  /** Event-loop delay since the previous snapshot, in ms. */
  readonly loopDelay: { readonly p99: number; readonly max: number };
  readonly top: readonly ChannelLoad[];
}

/** What a node's snapshot is taken from. */
export interface NodeSources {
  readonly node: string;
  readonly metrics: Metrics;
  connections(): Record<TransportName, number>;
  broker(): BrokerStatus;
  channelCount(): number;
  busiest(n: number): Array<{ channel: Channel; subscribers: number }>;
  /** Whether `channel`'s namespace keeps presence. */
  hasPresence(channel: Channel): boolean;
  /** How many clients are present in `channel`, across the cluster. */
  countPresent(channel: Channel): Promise<number>;
}

const round = (n: number, digits = 3): number => Math.round(n * 10 ** digits) / 10 ** digits;

/** Takes a node's snapshots; call `start()` before the first and `stop()` after the last. */
export class SnapshotTaker {
  #latency: Buckets | undefined;
  readonly #loop = monitorEventLoopDelay({ resolution: 20 });
  /** Presence counts of the channels last listed. */
  #present = new Map<Channel, number>();
  #presentAt = -Infinity;
  #asking = false;

  constructor(
    private readonly sources: NodeSources,
    private readonly onError: (err: unknown) => void,
  ) {}

  start(): void {
    this.#loop.enable();
  }

  stop(): void {
    this.#loop.disable();
  }

  /** The snapshot now; `watched` says whether anyone looks (then the busiest channels are listed). */
  take(now: number, watched: boolean, watchers: number): NodeSnapshot {
    const s = this.sources;
    const m = s.metrics instanceof CounterMetrics ? s.metrics : undefined;
    const c = s.connections();
    const top = watched ? s.busiest(TOP_CHANNELS) : [];
    if (watched) this.#askPresence(top, now);
    const ms = (ns: number): number => (Number.isFinite(ns) ? round(ns / 1e6, 1) : 0);
    const loopDelay = { p99: ms(this.#loop.percentile(99)), max: ms(this.#loop.max) };
    this.#loop.reset();
    return {
      v: 1,
      node: s.node,
      at: now,
      broker: s.broker(),
      connections: { websocket: c.websocket, sse: c.sse, poll: c.poll },
      channels: s.channelCount(),
      watchers,
      counters:
        m === undefined
          ? null
          : {
              publications: m.publications,
              deliveries: m.deliveries,
              reconnects: m.reconnects.websocket + m.reconnects.sse + m.reconnects.poll + m.reconnects.http,
              sheds: m.drops.slow_consumer,
            },
      latency: m === undefined ? null : this.#latencySince(m),
      loopDelay,
      top: top.map(({ channel, subscribers }) => ({ channel, subscribers, presence: this.#present.get(channel) ?? null })),
    };
  }

  #latencySince(m: CounterMetrics): NonNullable<NodeSnapshot['latency']> {
    const now = m.latency.copy();
    const d = this.#latency === undefined ? now : now.since(this.#latency);
    this.#latency = now;
    return { p50: round(d.quantile(0.5)), p99: round(d.quantile(0.99)), count: d.count, buckets: d.counts };
  }

  /** Reads the presence counts of the listed channels of presence namespaces, one batch at a time, at most every PRESENCE_EVERY. */
  #askPresence(top: ReadonlyArray<{ channel: Channel }>, now: number): void {
    if (this.#asking || now - this.#presentAt < PRESENCE_EVERY) return;
    const channels = top.map((t) => t.channel).filter((ch) => this.sources.hasPresence(ch));
    this.#presentAt = now;
    if (channels.length === 0) {
      this.#present = new Map();
      return;
    }
    this.#asking = true;
    Promise.all(channels.map(async (ch) => [ch, await this.sources.countPresent(ch)] as const))
      .then((counts) => {
        this.#present = new Map(counts);
      })
      .catch(this.onError)
      .finally(() => {
        this.#asking = false;
      });
  }
}

const isCount = (n: unknown): n is number => typeof n === 'number' && Number.isFinite(n) && n >= 0;

/** A snapshot from the admin channel, or undefined when the text is not one (another version, garbage). */
export function parseSnapshot(text: string): NodeSnapshot | undefined {
  if (text.length > MAX_SNAPSHOT_CHARS) return undefined;
  let s: Partial<Record<keyof NodeSnapshot, unknown>>;
  try {
    s = JSON.parse(text) as typeof s;
  } catch {
    return undefined;
  }
  if (typeof s !== 'object' || s === null || s.v !== 1) return undefined;
  if (typeof s.node !== 'string' || s.node === '' || s.node.length > 100 || !isCount(s.at)) return undefined;
  const c = s.connections as Partial<ConnectionCounts> | undefined;
  if (typeof c !== 'object' || c === null || !isCount(c.websocket) || !isCount(c.sse) || !isCount(c.poll)) return undefined;
  if (!Array.isArray(s.top) || s.top.length > TOP_CHANNELS) return undefined;
  return s as NodeSnapshot;
}
