/**
 * Long-polling transport: a loop of `GET /poll` carrying the cursor. It works through any proxy,
 * so it is the last fallback. A first poll that does not wait proves the connection; each later
 * one is held by the server up to its timeout, so a poll that outlives that is a dead connection.
 * @module
 */
import { parseCursor, type PollResponse } from '@tidings/protocol';
import { channelQuery, knownCursor } from './cursor.js';
import { httpDownstream, type Downstream } from './downstream.js';
import { authHeaders, channelRefused, permanentRefusal, retryAfterOf } from './http.js';
import type { ClientTransport, TransportContext } from './transport.js';

export function pollTransport(ctx: TransportContext): ClientTransport {
  const { platform, handlers } = ctx;
  let proven = false;

  const poll = async (d: Downstream): Promise<void> => {
    let hold = 0;
    while (d.current) {
      const q = channelQuery(d.wanted);
      const cursor = knownCursor(d.wanted);
      if (cursor !== '') q.push(`cursor=${encodeURIComponent(cursor)}`);
      q.push(`timeout=${hold}`);
      d.arm(hold === 0 ? ctx.openTimeout : hold + ctx.heartbeatSlack, {
        retry: 'backoff',
        reason: proven ? 'poll outlived its hold' : 'no answer in time',
        fallback: false,
      });
      const res = await platform.fetch(`${ctx.baseUrl}/poll?${q.join('&')}`, { headers: authHeaders(ctx), signal: d.signal, cache: 'no-store' });
      // A refusal without the gateway's JSON (a proxy's error page) is told by its status alone.
      const body = (res.ok ? await res.json() : await res.json().catch(() => ({}))) as PollResponse & { error?: { code: string; reason: string; channel?: string } };
      if (!d.current) return;
      d.disarm();
      if (!res.ok) {
        const reason = `${body.error?.code ?? res.status}: ${body.error?.reason ?? ''}`;
        if (channelRefused(res.status, body, d.wanted, (channel, error) => handlers.subscriptionError(channel, error))) {
          // The client drops that subscription and restarts polling with the others.
          if (d.current) d.finish({ retry: 'backoff', reason, fallback: false });
          return;
        }
        // The gateway refused the request itself, for good (malformed, forbidden): asking again changes nothing.
        const final = permanentRefusal(res.status, body);
        if (final !== undefined) return d.finish({ retry: 'never', code: final, reason, fallback: false });
        // An expired token: come back at once with a new one from the token provider.
        const retry = res.status !== 401 ? 'backoff' : body.error?.code === 'token_expired' ? 'now' : 'never';
        return d.finish({ retry, reason, fallback: false, retryAfter: retryAfterOf(res) });
      }
      proven = true;
      // User code runs from here on (a `state` listener, message handlers) and may change the channel
      // set: this loop is then replaced and reports nothing more; the next poll asks from the
      // positions the client holds by then.
      d.opened();
      for (const [channel, position] of parseCursor(body.cursor)) {
        if (!d.current) return;
        if (d.wanted.get(channel) === undefined) handlers.subscribed({ channel, position, recovered: false });
        // The next poll continues from the cursor the server answered with.
        d.advance(channel, position);
      }
      for (const gap of body.gaps) {
        if (!d.current) return;
        handlers.gap(gap);
      }
      for (const message of body.messages) {
        if (!d.current) return;
        handlers.message(message);
      }
      hold = ctx.pollTimeout;
    }
  };

  // Every poll carries the token: a new one is used from the next poll on.
  const refresh = (token: string): Promise<void> => {
    ctx.token = token;
    return Promise.resolve();
  };
  return httpDownstream(ctx, 'poll', poll, refresh, (err) => ({ retry: 'backoff', reason: `poll failed: ${(err as Error).message}`, fallback: false }));
}
