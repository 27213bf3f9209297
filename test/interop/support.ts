/**
 * Shared helpers of the interoperability tests: what reached the gateway's `/sse` endpoint (with
 * the `Last-Event-ID` each request carried), cursor text as the server writes it, and polling.
 */
import type { IncomingMessage } from 'node:http';
import type { Position } from '@tidings/protocol';
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
 * Records every `/sse` request the gateway receives. It only observes: the gateway's own
 * request handler still serves the request. Returns the live list and a function that stops recording.
 */
export function recordSseRequests(gw: TestGateway): { readonly requests: SseRequest[]; stop(): void } {
  const requests: SseRequest[] = [];
  const listener = (req: IncomingMessage): void => {
    const url = req.url ?? '';
    if (!url.startsWith('/sse')) return;
    const header = req.headers['last-event-id'];
    requests.push({ url, lastEventId: typeof header === 'string' ? header : undefined, at: Date.now() });
  };
  gw.gateway.server.on('request', listener);
  return { requests, stop: () => gw.gateway.server.off('request', listener) };
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
