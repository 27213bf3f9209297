/**
 * SSE transport over `fetch` streaming (so it can send credentials and see heartbeat comments,
 * which `EventSource` hides). Downstream only: upstream goes over HTTP POST. A change of
 * subscriptions reopens the stream with the client's positions as `Last-Event-ID`.
 * @module
 */
import { parseCursor, SseEvent as Events, type Channel, type Gap, type Message, type Position } from '@tidings/protocol';
import { knownCursor } from './cursor.js';
import { authHeaders, httpPublish, httpRequest, retryAfterOf } from './http.js';
import { SseParser } from './sse-parser.js';
import type { ClientTransport, CloseInfo, TransportContext } from './transport.js';

export function sseTransport(ctx: TransportContext): ClientTransport {
  const { platform, handlers } = ctx;
  let wanted = new Map(ctx.subscriptions);
  let ended = false;
  let opened = false;
  /** A stream has delivered its welcome here: later failures are not the proxy's doing. */
  let proven = false;
  let abort: AbortController | undefined;
  let watchdog: unknown;

  const finish = (info: CloseInfo): void => {
    if (ended) return;
    ended = true;
    platform.clearTimeout(watchdog);
    abort?.abort();
    handlers.close(info);
  };

  const arm = (ms: number, info: CloseInfo): void => {
    platform.clearTimeout(watchdog);
    watchdog = platform.setTimeout(() => finish(info), ms);
  };

  /** One stream; a new one replaces it when the subscriptions change. */
  const stream = async (subs: ReadonlyMap<Channel, Position | undefined>, ctrl: AbortController): Promise<void> => {
    const query = [...subs.keys()].map((c) => `channel=${encodeURIComponent(c)}`).join('&');
    const cursor = knownCursor(subs);
    const headers: Record<string, string> = { accept: 'text/event-stream', ...authHeaders(ctx) };
    if (cursor !== '') headers['last-event-id'] = cursor;
    // Without the first event in time, something between us buffers the stream: fall back.
    arm(ctx.openTimeout, { retry: 'backoff', reason: 'no first event in time (buffered?)', fallback: !proven });
    const res = await platform.fetch(`${ctx.baseUrl}/sse?${query}`, { headers, signal: ctrl.signal, cache: 'no-store' });
    if (!res.ok || res.body === null) {
      const body = (await res.json().catch(() => undefined)) as { error?: { code?: string; reason?: string } } | undefined;
      const code = body?.error?.code;
      const reason = `${code ?? `HTTP ${res.status}`}: ${body?.error?.reason ?? ''}`;
      if (res.status === 401) return finish({ retry: 'never', reason, fallback: false });
      return finish({ retry: 'backoff', reason, fallback: !proven && res.status !== 400 && res.status !== 404, retryAfter: retryAfterOf(res) });
    }
    const parser = new SseParser();
    const decoder = new TextDecoder();
    const reader = res.body.getReader();
    let silence = ctx.openTimeout;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      const events = parser.feed(decoder.decode(value, { stream: true }));
      if (events.length > 0 || parser.comments > 0) arm(silence, { retry: 'backoff', reason: 'heartbeat timeout', fallback: false });
      for (const e of events) {
        if (ctrl.signal.aborted) return;
        if (e.event === Events.welcome) {
          const welcome = JSON.parse(e.data) as { heartbeat: number; cursor: string };
          silence = welcome.heartbeat * 2 + ctx.heartbeatSlack;
          arm(silence, { retry: 'backoff', reason: 'heartbeat timeout', fallback: false });
          proven = true;
          if (!opened) {
            opened = true;
            handlers.open();
          }
          for (const [channel, position] of parseCursor(welcome.cursor)) handlers.subscribed({ channel, position, recovered: false });
        } else if (e.event === Events.gap) {
          handlers.gap(JSON.parse(e.data) as Gap);
        } else if (e.event === Events.error) {
          const err = JSON.parse(e.data) as { code: string; reason: string };
          return finish({ retry: err.code === 'restart' ? 'now' : 'backoff', reason: err.reason, fallback: false, retryAfter: parser.retry });
        } else {
          handlers.message(JSON.parse(e.data) as Message);
        }
      }
    }
    // The server's `retry:` hint is its suggested reconnect delay.
    finish({ retry: 'backoff', reason: 'stream ended', fallback: false, retryAfter: parser.retry });
  };

  const start = (): void => {
    abort?.abort();
    platform.clearTimeout(watchdog);
    if (wanted.size === 0) {
      // Nothing to listen to: no stream; upstream still works over HTTP.
      abort = undefined;
      if (!opened) {
        opened = true;
        platform.setTimeout(() => ended || handlers.open(), 0);
      }
      return;
    }
    const ctrl = new AbortController();
    abort = ctrl;
    stream(new Map(wanted), ctrl).catch((err: unknown) => {
      if (ctrl.signal.aborted && abort !== ctrl) return; // replaced by a newer stream
      finish({ retry: 'backoff', reason: `stream failed: ${(err as Error).message}`, fallback: !proven });
    });
  };

  start();

  return {
    name: 'sse',
    sync(subscriptions) {
      const changed = subscriptions.size !== wanted.size || [...subscriptions.keys()].some((c) => !wanted.has(c));
      wanted = new Map(subscriptions);
      if (changed && !ended) start();
    },
    publish: (req) => httpPublish(ctx, req),
    request: (method, data) => httpRequest(ctx, method, data),
    close() {
      if (ended) return;
      ended = true;
      platform.clearTimeout(watchdog);
      abort?.abort();
    },
  };
}
