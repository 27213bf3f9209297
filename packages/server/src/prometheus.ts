/**
 * The Prometheus exporter (`GET /metrics`): a prom-client registry whose `tidings_*` series read the
 * gateway's plain counters ({@link CounterMetrics}) and gauges at scrape time, so the hot path never
 * touches prom-client, beside prom-client's standard process and Node.js series (event-loop delay
 * among them). Every series is listed in docs/metrics.md.
 * @module
 */
import { collectDefaultMetrics, Registry, type Metric } from 'prom-client';
import type { TransportName } from './auth.js';
import type { Buckets, CounterMetrics } from './metrics.js';

/** What the gateway holds right now, read at scrape time. */
export interface GaugeSource {
  readonly node: string;
  subscriptions(): number;
  channels(): number;
  /** Bytes queued for clients and not yet taken by the kernel, over every connection. */
  bufferedBytes(): number;
  /** Presence entries of this node's clients. */
  presenceEntries(): number;
}

type Labels = Record<string, string>;
interface Sample {
  readonly value: number;
  readonly labels: Labels;
  readonly metricName?: string;
}
type Kind = 'counter' | 'gauge' | 'histogram';

/** Codes that count as auth failures, and as limit hits; every refusal counts in `tidings_refusals_total`. */
const AUTH_CODES = new Set(['unauthorized', 'token_expired', 'forbidden']);
const LIMIT_CODES = new Set(['limit_exceeded', 'too_large', 'header_too_large', 'storage_full', 'unavailable']);
/** prom-client default series whose `_total` suffix belongs to counters only. */
const MISNAMED_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];
/** The transports clients hold connections on (`http` is one-shot requests). */
const CONNECTED: readonly TransportName[] = ['websocket', 'sse', 'poll'];

/** A series family computed at scrape time; prom-client formats it like its own. */
class Snapshot {
  readonly aggregator = 'sum';
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: Kind,
    private readonly read: () => Sample[],
  ) {}

  get(): Promise<{ name: string; help: string; type: Kind; aggregator: string; values: Sample[] }> {
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.read() });
  }
}

/** A histogram in ms as Prometheus wants it: cumulative `_bucket{le}` in seconds, `_sum`, `_count`. */
function histogramSamples(name: string, b: Buckets, labels: Labels = {}): Sample[] {
  const out: Sample[] = [];
  let acc = 0;
  b.bounds.forEach((bound, i) => {
    acc += b.counts[i] as number;
    out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: String(bound / 1000) }, value: acc });
  });
  out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: '+Inf' }, value: b.count });
  out.push({ metricName: `${name}_sum`, labels, value: b.sum / 1000 });
  out.push({ metricName: `${name}_count`, labels, value: b.count });
  return out;
}

const tally = (map: ReadonlyMap<string, number>, label: string, keep: (key: string) => boolean = () => true, extra: Labels = {}): Sample[] =>
  [...map].filter(([k]) => keep(k)).map(([k, value]) => ({ labels: { ...extra, [label]: k }, value }));

/** The registry for one gateway: `tidings_*` series plus prom-client's default process and Node.js series. */
export function prometheusRegistry(m: CounterMetrics, g: GaugeSource): Registry {
  const registry = new Registry();
  const families: Snapshot[] = [
    new Snapshot('tidings_node_info', 'This node, by id (always 1).', 'gauge', () => [{ labels: { node: g.node }, value: 1 }]),
    new Snapshot('tidings_connections', 'Client connections open now, by transport.', 'gauge', () =>
      CONNECTED.map((transport) => ({ labels: { transport }, value: m.connections[transport] })),
    ),
    new Snapshot('tidings_connections_opened_total', 'Client connections opened, by transport.', 'counter', () =>
      CONNECTED.map((transport) => ({ labels: { transport }, value: m.opened[transport] })),
    ),
    new Snapshot('tidings_connections_closed_total', 'Client connections closed, by transport and reason (a close name, or client_gone).', 'counter', () =>
      CONNECTED.flatMap((transport) => tally(m.closed[transport], 'reason', undefined, { transport })),
    ),
    new Snapshot('tidings_subscriptions', 'Channel subscriptions held by this node now.', 'gauge', () => [{ labels: {}, value: g.subscriptions() }]),
    new Snapshot('tidings_channels', 'Channels this node receives from the broker now.', 'gauge', () => [{ labels: {}, value: g.channels() }]),
    new Snapshot('tidings_presence_entries', "Presence entries of this node's clients now.", 'gauge', () => [{ labels: {}, value: g.presenceEntries() }]),
    new Snapshot('tidings_publications_total', 'Publications accepted through this node (duplicates by idempotency key excluded).', 'counter', () => [
      { labels: {}, value: m.publications },
    ]),
    new Snapshot('tidings_deliveries_total', 'Publications written to subscriber connections, live and replayed.', 'counter', () => [{ labels: {}, value: m.deliveries }]),
    new Snapshot(
      'tidings_delivery_latency_seconds',
      "Live deliveries: from a publication's arrival at this node to its write to the subscriber's connection.",
      'histogram',
      () => histogramSamples('tidings_delivery_latency_seconds', m.latency),
    ),
    new Snapshot('tidings_outbound_buffer_bytes', 'Bytes queued for clients and not yet taken by the kernel, over every connection.', 'gauge', () => [
      { labels: {}, value: g.bufferedBytes() },
    ]),
    new Snapshot('tidings_dropped_messages_total', 'Messages left out for slow consumers (drop backpressure, presence events).', 'counter', () => [
      { labels: {}, value: m.drops.ephemeral_backpressure },
    ]),
    new Snapshot('tidings_conflated_messages_total', 'Pending messages replaced by a later one with the same key (conflate backpressure).', 'counter', () => [
      { labels: {}, value: m.drops.conflated },
    ]),
    new Snapshot('tidings_slow_consumer_sheds_total', 'Connections closed as slow consumers (they resume without loss).', 'counter', () => [
      { labels: {}, value: m.drops.slow_consumer },
    ]),
    new Snapshot('tidings_resumes_total', 'Subscriptions that resumed from a position, by transport and outcome (recovered, or gap with its reason).', 'counter', () =>
      CONNECTED.flatMap((transport) =>
        [...m.resumes[transport]].map(([outcome, value]) => ({
          labels: outcome === 'recovered' ? { transport, outcome, reason: 'none' } : { transport, outcome: 'gap', reason: outcome },
          value,
        })),
      ),
    ),
    new Snapshot('tidings_reconnects_total', 'WebSocket and SSE connections that came back: their first subscription resumed from a position.', 'counter', () =>
      (['websocket', 'sse'] as const).map((transport) => ({ labels: { transport }, value: m.reconnects[transport] })),
    ),
    new Snapshot('tidings_refusals_total', 'Requests and frames refused, by error code.', 'counter', () => tally(m.refusals, 'code')),
    new Snapshot('tidings_auth_failures_total', 'Refusals for authentication or authorization, by error code.', 'counter', () =>
      tally(m.refusals, 'code', (c) => AUTH_CODES.has(c)),
    ),
    new Snapshot('tidings_limit_hits_total', 'Refusals by a limit or overload, by error code.', 'counter', () => tally(m.refusals, 'code', (c) => LIMIT_CODES.has(c))),
    new Snapshot('tidings_broker_up', 'Whether the broker is reachable (1) or not (0).', 'gauge', () => [{ labels: {}, value: m.brokerState === 'down' ? 0 : 1 }]),
    new Snapshot('tidings_broker_outages_total', 'Times the broker became unreachable.', 'counter', () => [{ labels: {}, value: m.brokerOutages }]),
    new Snapshot('tidings_broker_request_duration_seconds', 'Broker calls (publish, history read), by operation.', 'histogram', () =>
      (['publish', 'history'] as const).flatMap((op) => histogramSamples('tidings_broker_request_duration_seconds', m.broker[op].latency, { op })),
    ),
    new Snapshot('tidings_broker_errors_total', 'Broker calls that failed, by operation.', 'counter', () =>
      (['publish', 'history'] as const).map((op) => ({ labels: { op }, value: m.broker[op].errors })),
    ),
    new Snapshot('tidings_unexpected_errors_total', 'Unexpected errors (bugs) caught and logged, by where.', 'counter', () => tally(m.errorsBySite, 'site')),
  ];
  // prom-client formats any object with a name and get(); its Metric type names only its own classes.
  for (const family of families) registry.registerMetric(family as unknown as Metric);
  collectDefaultMetrics({ register: registry });
  // Gauges that prom-client names like counters, which `promtool check metrics` rejects.
  for (const name of MISNAMED_DEFAULTS) registry.removeSingleMetric(name);
  return registry;
}

