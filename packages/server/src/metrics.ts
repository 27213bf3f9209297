/**
 * The metrics seam: the gateway reports events here. {@link CounterMetrics} keeps plain numbers, so
 * the hot path costs an increment (and, per delivery, one clock read and a short bucket search);
 * the Prometheus exporter (`prometheus.ts`) reads them when scraped, and `/healthz` shows a snapshot.
 * @module
 */
import type { GapReason } from '@tidings/protocol';
import type { TransportName } from './auth.js';
import type { BrokerStatus } from './brokers/broker.js';

/**
 * Why a message did not reach a subscriber: left out for a slow consumer (`drop` backpressure, and
 * presence events), replaced by a later one with the same key while the consumer was behind
 * (`conflate`), or the connection was shed as a slow consumer (`disconnect`).
 */
export type DropReason = 'ephemeral_backpressure' | 'conflated' | 'slow_consumer';

/** Where an unexpected error (a bug) was caught. */
export type ErrorSite = 'request' | 'upgrade' | 'command' | 'hub' | 'control' | 'uncaught_exception' | 'unhandled_rejection';

/** How a subscription that asked to resume (`since`, `Last-Event-ID`, a poll cursor) ended up. */
export type ResumeOutcome = 'recovered' | GapReason;

/** What a broker call was. */
export type BrokerOp = 'publish' | 'history';

/** Events the gateway reports. Implementations must be cheap: `delivered` is on the hot path. */
export interface Metrics {
  connectionOpened(transport: TransportName): void;
  /** `reason` is the close name (`restart`, `slow_consumer`, ...) or `client_gone`. */
  connectionClosed(transport: TransportName, reason: string): void;
  published(count: number): void;
  /**
   * One publication written to one subscriber's connection. `arrivedAt` is when the publication
   * reached this node (`performance.now()`), or negative for a publication replayed from history.
   */
  delivered(arrivedAt: number): void;
  dropped(reason: DropReason): void;
  /** A subscription resumed from a position: recovered whole, or with a gap for this reason. */
  resumed(transport: TransportName, outcome: ResumeOutcome): void;
  /** A WebSocket or SSE connection came back: its first subscription resumes from a position. */
  reconnected(transport: TransportName): void;
  /** A request or frame was refused with this error code (`unauthorized`, `limit_exceeded`, ...). */
  refused(code: string): void;
  /** A broker call took `ms` and succeeded or failed. */
  brokerCall(op: BrokerOp, ms: number, ok: boolean): void;
  brokerStatus(status: BrokerStatus): void;
  /** An unexpected error (a bug) was caught (and logged) at `site`. */
  unexpectedError(site: ErrorSite): void;
}

/** Upper bounds of the delivery latency buckets, in ms (publication arrival to socket write). */
export const DELIVERY_BUCKETS_MS: readonly number[] = [0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000];
/** Upper bounds of the broker call latency buckets, in ms. */
export const BROKER_BUCKETS_MS: readonly number[] = [0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 5000];

/** A histogram kept as plain numbers: counts per bucket (the last one is +Inf), their sum and count. */
export class Buckets {
  readonly counts: number[];
  sum = 0;
  count = 0;

  constructor(readonly bounds: readonly number[]) {
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }

  observe(value: number): void {
    this.add(this.bucketOf(value), value);
  }

  /** The index of the bucket `value` falls in. */
  bucketOf(value: number): number {
    const { bounds } = this;
    let i = 0;
    while (i < bounds.length && value > (bounds[i] as number)) i++;
    return i;
  }

  /** Counts `value` in bucket `i` (which {@link bucketOf} gave for it). */
  add(i: number, value: number): void {
    this.counts[i] = (this.counts[i] as number) + 1;
    this.sum += value;
    this.count += 1;
  }

  /** The value below which fraction `q` of observations fall, estimated within buckets (as Prometheus' histogram_quantile). */
  quantile(q: number): number {
    if (this.count === 0) return 0;
    const rank = q * this.count;
    let seen = 0;
    for (let i = 0; i < this.counts.length; i++) {
      const n = this.counts[i] as number;
      if (seen + n >= rank && n > 0) {
        const lower = i === 0 ? 0 : (this.bounds[i - 1] as number);
        const upper = this.bounds[i] ?? lower;
        return lower + (upper - lower) * ((rank - seen) / n);
      }
      seen += n;
    }
    return this.bounds[this.bounds.length - 1] ?? 0;
  }

  /** The observations since `earlier` (a copy taken before), as a histogram of their own. */
  since(earlier: Buckets): Buckets {
    const d = new Buckets(this.bounds);
    for (let i = 0; i < d.counts.length; i++) d.counts[i] = (this.counts[i] as number) - (earlier.counts[i] as number);
    d.sum = this.sum - earlier.sum;
    d.count = this.count - earlier.count;
    return d;
  }

  copy(): Buckets {
    return this.since(new Buckets(this.bounds));
  }
}

/**
 * Deliveries of one publication that share a clock reading: a fan-out writes them back to back, a few
 * microseconds apart, so reading the clock for every one would measure little more than the clock.
 */
const CLOCK_REUSE = 16;

/** Adds one to `key` of a string-keyed tally. */
function bump(tally: Map<string, number>, key: string, by = 1): void {
  tally.set(key, (tally.get(key) ?? 0) + by);
}

type Transports<T> = Record<TransportName, T>;
const perTransport = <T>(make: () => T): Transports<T> => ({ websocket: make(), sse: make(), poll: make(), http: make() });

/** In-process counters: every event as plain numbers, read by the exporter and by `/healthz`. */
export class CounterMetrics implements Metrics {
  readonly connections: Transports<number> = perTransport(() => 0);
  readonly opened: Transports<number> = perTransport(() => 0);
  /** Closes by transport and reason. */
  readonly closed: Transports<Map<string, number>> = perTransport(() => new Map());
  publications = 0;
  deliveries = 0;
  readonly latency = new Buckets(DELIVERY_BUCKETS_MS);
  readonly drops: Record<DropReason, number> = { ephemeral_backpressure: 0, conflated: 0, slow_consumer: 0 };
  /** Resumes by transport and outcome. */
  readonly resumes: Transports<Map<string, number>> = perTransport(() => new Map());
  readonly reconnects: Transports<number> = perTransport(() => 0);
  /** Refusals by error code. */
  readonly refusals = new Map<string, number>();
  readonly broker: Record<BrokerOp, { readonly latency: Buckets; errors: number }> = {
    publish: { latency: new Buckets(BROKER_BUCKETS_MS), errors: 0 },
    history: { latency: new Buckets(BROKER_BUCKETS_MS), errors: 0 },
  };
  brokerState: BrokerStatus = 'down';
  /** Times the broker went down. */
  brokerOutages = 0;
  /** Unexpected errors by site. */
  readonly errorsBySite = new Map<string, number>();
  errors = 0;
  /** The latest latency reading: for which publication, its value and bucket, and how many more deliveries may use it. */
  #arrival = -1;
  #latency = 0;
  #bucket = 0;
  #reuse = 0;

  connectionOpened(transport: TransportName): void {
    this.connections[transport] += 1;
    this.opened[transport] += 1;
  }
  connectionClosed(transport: TransportName, reason: string): void {
    this.connections[transport] -= 1;
    bump(this.closed[transport], reason);
  }
  published(count: number): void {
    this.publications += count;
  }
  delivered(arrivedAt: number): void {
    this.deliveries += 1;
    if (arrivedAt < 0) return;
    if (arrivedAt !== this.#arrival || this.#reuse === 0) {
      this.#arrival = arrivedAt;
      this.#reuse = CLOCK_REUSE;
      this.#latency = performance.now() - arrivedAt;
      this.#bucket = this.latency.bucketOf(this.#latency);
    }
    this.#reuse -= 1;
    this.latency.add(this.#bucket, this.#latency);
  }
  dropped(reason: DropReason): void {
    this.drops[reason] += 1;
  }
  resumed(transport: TransportName, outcome: ResumeOutcome): void {
    bump(this.resumes[transport], outcome);
  }
  reconnected(transport: TransportName): void {
    this.reconnects[transport] += 1;
  }
  refused(code: string): void {
    bump(this.refusals, code);
  }
  brokerCall(op: BrokerOp, ms: number, ok: boolean): void {
    const b = this.broker[op];
    b.latency.observe(ms);
    if (!ok) b.errors += 1;
  }
  brokerStatus(status: BrokerStatus): void {
    if (status === 'down' && this.brokerState !== 'down') this.brokerOutages += 1;
    this.brokerState = status === 'reset' ? 'up' : status;
  }
  unexpectedError(site: ErrorSite): void {
    this.errors += 1;
    bump(this.errorsBySite, site);
  }

  snapshot(): { connections: Transports<number>; publications: number; deliveries: number; drops: Record<DropReason, number>; errors: number } {
    return { connections: { ...this.connections }, publications: this.publications, deliveries: this.deliveries, drops: { ...this.drops }, errors: this.errors };
  }
}

const ignore = (): void => undefined;

/** Counts nothing (`metrics: false`): the hot path pays a call and no more. */
export const NO_METRICS: Metrics = Object.freeze({
  connectionOpened: ignore,
  connectionClosed: ignore,
  published: ignore,
  delivered: ignore,
  dropped: ignore,
  resumed: ignore,
  reconnected: ignore,
  refused: ignore,
  brokerCall: ignore,
  brokerStatus: ignore,
  unexpectedError: ignore,
});
