/**
 * The metrics seam: the gateway reports events here. {@link CounterMetrics} keeps plain counters
 * (served by `/healthz`); an exporter implements the same interface.
 * @module
 */
import type { TransportName } from './auth.js';

/**
 * Why a message did not reach a subscriber: left out for a slow consumer (`drop` backpressure, and
 * presence events), replaced by a later one with the same key while the consumer was behind
 * (`conflate`), or the connection was shed as a slow consumer (`disconnect`).
 */
export type DropReason = 'ephemeral_backpressure' | 'conflated' | 'slow_consumer';

/** Where an unexpected error (a bug) was caught. */
export type ErrorSite = 'request' | 'upgrade' | 'command' | 'hub' | 'control' | 'uncaught_exception' | 'unhandled_rejection';

/** Events the gateway reports. Implementations must be cheap: `delivered` is on the hot path. */
export interface Metrics {
  connectionOpened(transport: TransportName): void;
  connectionClosed(transport: TransportName): void;
  published(count: number): void;
  delivered(count: number): void;
  dropped(reason: DropReason): void;
  /** An unexpected error was caught (and logged) at `site`. */
  unexpectedError(site: ErrorSite): void;
}

/** In-process counters. */
export class CounterMetrics implements Metrics {
  readonly connections: Record<TransportName, number> = { websocket: 0, sse: 0, poll: 0, http: 0 };
  publications = 0;
  deliveries = 0;
  readonly drops: Record<DropReason, number> = { ephemeral_backpressure: 0, conflated: 0, slow_consumer: 0 };
  errors = 0;

  connectionOpened(transport: TransportName): void {
    this.connections[transport] += 1;
  }
  connectionClosed(transport: TransportName): void {
    this.connections[transport] -= 1;
  }
  published(count: number): void {
    this.publications += count;
  }
  delivered(count: number): void {
    this.deliveries += count;
  }
  dropped(reason: DropReason): void {
    this.drops[reason] += 1;
  }
  unexpectedError(_site: ErrorSite): void {
    this.errors += 1;
  }

  snapshot(): { connections: Record<TransportName, number>; publications: number; deliveries: number; drops: Record<DropReason, number>; errors: number } {
    return { connections: { ...this.connections }, publications: this.publications, deliveries: this.deliveries, drops: { ...this.drops }, errors: this.errors };
  }
}
