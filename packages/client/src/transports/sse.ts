/**
 * SSE transport over `fetch` streaming (so it can send credentials and see heartbeat comments,
 * which `EventSource` hides). Downstream only: upstream goes over HTTP POST. A change of
 * subscriptions reopens the stream with the client's positions as `Last-Event-ID`.
 * @module
 */
import { parseCursor, SseEvent as Events, type Gap, type Message, type PresenceChange } from '@tidings/protocol';
import { channelQuery, knownCursor } from './cursor.js';
import { httpDownstream, type Downstream } from './downstream.js';
import { authHeaders, channelRefused, httpRefresh, isOutage, permanentRefusal, retryAfterOf } from './http.js';
import { SseParser } from './sse-parser.js';
import { retryAfterClose, type ClientTransport, type TransportContext } from './transport.js';

export function sseTransport(ctx: TransportContext): ClientTransport {
  const { platform, handlers } = ctx;
  /** A stream has delivered its welcome here: later failures are not a proxy's doing. */
  let proven = false;
  /** The current stream's session id (from its welcome), for `POST /refresh`. */
  let session: string | undefined;

  const stream = async (d: Downstream): Promise<void> => {
    const cursor = knownCursor(d.wanted);
    const headers: Record<string, string> = { accept: 'text/event-stream', ...authHeaders(ctx) };
    if (cursor !== '') headers['last-event-id'] = cursor;
    // No answer in time: a server that is down and a proxy that holds the stream look alike.
    d.arm(ctx.openTimeout, { retry: 'backoff', reason: 'no answer in time', fallback: false, unproven: !proven, timedOut: true });
    const res = await platform.fetch(`${ctx.baseUrl}/sse?${channelQuery(d.wanted).join('&')}`, { headers, signal: d.signal, cache: 'no-store' });
    if (!res.ok || res.body === null) {
      const body = (await res.json().catch(() => undefined)) as { error?: { code?: string; reason?: string; channel?: string } } | undefined;
      // Replaced while the body was on its way (the channel set changed: the read was aborted, so the
      // body is lost): the refusal is the stale request's, and the live stream is none of its business.
      if (!d.current) return;
      const reason = `${body?.error?.code ?? `HTTP ${res.status}`}: ${body?.error?.reason ?? ''}`;
      if (channelRefused(res.status, body, d.wanted, (channel, error) => handlers.subscriptionError(channel, error))) {
        // The client drops that subscription and restarts the stream with the others.
        return d.finish({ retry: 'backoff', reason, fallback: false });
      }
      // The gateway refused the request itself, for good (malformed, forbidden): asking again changes nothing.
      const final = permanentRefusal(res.status, body);
      if (final !== undefined) return d.finish({ retry: 'never', code: final, reason, fallback: false });
      // An expired token: come back at once with a new one from the token provider. Anything else: give up.
      if (res.status === 401) return d.finish({ retry: body?.error?.code === 'token_expired' ? 'now' : 'never', reason, fallback: false });
      // 502/503/504: the gateway is down behind a proxy, or shutting down: an outage, not a reason to fall back.
      const refused = !proven && res.status !== 400 && res.status !== 404 && !isOutage(res.status);
      return d.finish({ retry: 'backoff', reason, fallback: refused, retryAfter: retryAfterOf(res) });
    }
    // The server answered: without the first event in time, something between us buffers the stream.
    d.arm(ctx.openTimeout, { retry: 'backoff', reason: 'no first event in time (buffered?)', fallback: !proven });
    const parser = new SseParser();
    const decoder = new TextDecoder();
    const reader = res.body.getReader();
    let silence = ctx.openTimeout;
    for (;;) {
      const { done, value } = await reader.read();
      if (done || !d.current) break;
      const events = parser.feed(decoder.decode(value, { stream: true }));
      if (proven) d.arm(silence, { retry: 'backoff', reason: 'heartbeat timeout', fallback: false });
      for (const e of events) {
        if (!d.current) return;
        if (e.event === Events.welcome) {
          const welcome = JSON.parse(e.data) as { heartbeat: number; cursor: string; session?: string };
          session = welcome.session;
          silence = welcome.heartbeat * 2 + ctx.heartbeatSlack;
          d.arm(silence, { retry: 'backoff', reason: 'heartbeat timeout', fallback: false });
          proven = true;
          // A `state` listener may change the channel set here: this stream is then replaced, and the
          // next one says where its channels start.
          d.opened();
          for (const [channel, position] of parseCursor(welcome.cursor)) {
            if (!d.current) return;
            handlers.subscribed({ channel, position, recovered: false });
          }
        } else if (e.event === Events.gap) {
          handlers.gap(JSON.parse(e.data) as Gap);
        } else if (e.event === Events.expiring) {
          handlers.expiring((JSON.parse(e.data) as { expiresAt: number }).expiresAt);
        } else if (e.event === Events.join || e.event === Events.leave) {
          handlers.presence(e.event === Events.join ? 'join' : 'leave', JSON.parse(e.data) as PresenceChange);
        } else if (e.event === Events.error) {
          // The code means what the same close code means over WebSocket: `unauthorized` (a user
          // disconnected by the server API) and `bad_protocol` are final, `restart` and
          // `token_expired` come back at once.
          const err = JSON.parse(e.data) as { code: string; reason: string };
          return d.finish({ retry: retryAfterClose(err.code), reason: err.reason, fallback: false, retryAfter: parser.retry });
        } else {
          handlers.message(JSON.parse(e.data) as Message);
        }
      }
    }
    // The server's `retry:` hint is its suggested reconnect delay.
    if (d.current) d.finish({ retry: 'backoff', reason: 'stream ended', fallback: false, retryAfter: parser.retry });
  };

  // A network error: the server may be down, or something may cut streams here; the client tells which.
  const refresh = async (token: string): Promise<void> => {
    ctx.token = token;
    if (session !== undefined) await httpRefresh(ctx, session, token);
  };

  return httpDownstream(ctx, 'sse', stream, refresh, (err) => ({
    retry: 'backoff',
    reason: `stream failed: ${(err as Error).message}`,
    fallback: false,
    unproven: !proven,
  }));
}
