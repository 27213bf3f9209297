/**
 * Shared helpers of the interoperability tests: what reached the gateway's `/sse` endpoint (with
 * the `Last-Event-ID` each request carried), cursor text as the server writes it, and polling.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import type { IncomingHttpHeaders } from 'node:http';
import type { Position } from '@tidings/protocol';
import { LANE_REQUESTS } from '@tidings/server';
import type { TestGateway } from '@tidings/testing';

/** One request to `/sse`, as the gateway received it. */
export interface SseRequest {
  readonly url: string;
  /** The `Last-Event-ID` header, or undefined when absent. */
  readonly lastEventId: string | undefined;
  /** `Date.now()` on arrival. */
  readonly at: number;
}

/**
 * Records every `/sse` request the gateway receives: those Node's server parses (its `request`
 * event) and those its fast lane serves (published on a diagnostics channel). It only observes: the
 * gateway still serves the request. Returns the live list and a function that stops recording.
 */
export function recordSseRequests(gw: TestGateway): { readonly requests: SseRequest[]; stop(): void } {
  const requests: SseRequest[] = [];
  const record = (req: { readonly url?: string | undefined; readonly headers: IncomingHttpHeaders }): void => {
    const url = req.url ?? '';
    if (!url.startsWith('/sse')) return;
    const header = req.headers['last-event-id'];
    requests.push({ url, lastEventId: typeof header === 'string' ? header : undefined, at: Date.now() });
  };
  const onLane = (message: unknown): void => record((message as { request: { url: string; headers: IncomingHttpHeaders } }).request);
  gw.gateway.server.on('request', record);
  subscribe(LANE_REQUESTS, onLane);
  return {
    requests,
    stop: () => {
      gw.gateway.server.off('request', record);
      unsubscribe(LANE_REQUESTS, onLane);
    },
  };
}

/** One cursor entry as the SSE `id:` carries it: `channel=epoch.seq36`. */
export const entry = (channel: string, p: Position): string => `${channel}=${p.epoch}.${p.seq.toString(36)}`;

/** `1..n` style ranges. */
export const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** Polls `predicate` every 10 ms until it holds; throws with `describe()` after `timeoutMs`. */
export async function waitUntil(predicate: () => boolean, describe: () => string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms: ${describe()}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** The demo channel: namespace `demo`, where clients may publish when the demo is on (`demo: true`). */
export const DEMO_CHANNEL = 'demo:lobby';
