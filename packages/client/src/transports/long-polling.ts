/**
 * Long-polling transport: a loop of `GET /poll` carrying the cursor. It works through any proxy,
 * so it is the last fallback. A first poll that does not wait proves the connection; each later
 * one is held by the server up to its timeout, so a poll that outlives that is a dead connection.
 * @module
 */
import { parseCursor, type Channel, type PollResponse, type Position } from '@tidings/protocol';
import { knownCursor } from './cursor.js';
import { authHeaders, httpPublish, httpRequest, retryAfterOf } from './http.js';
import type { ClientTransport, CloseInfo, TransportContext } from './transport.js';

export function pollTransport(ctx: TransportContext): ClientTransport {
  const { platform, handlers } = ctx;
  let wanted = new Map(ctx.subscriptions);
  let ended = false;
  let opened = false;
  let ctrl: AbortController | undefined;
  let watchdog: unknown;
  let generation = 0;

  const finish = (info: CloseInfo): void => {
    if (ended) return;
    ended = true;
    platform.clearTimeout(watchdog);
    ctrl?.abort();
    handlers.close(info);
  };

  const poll = async (gen: number): Promise<void> => {
    let hold = 0;
    while (!ended && gen === generation) {
      const subs = new Map(wanted);
      const q = [...subs.keys()].map((c) => `channel=${encodeURIComponent(c)}`);
      const cursor = knownCursor(subs);
      if (cursor !== '') q.push(`cursor=${encodeURIComponent(cursor)}`);
      q.push(`timeout=${hold}`);
      const c = new AbortController();
      ctrl = c;
      platform.clearTimeout(watchdog);
      watchdog = platform.setTimeout(() => {
        c.abort();
        finish({ retry: 'backoff', reason: opened ? 'poll outlived its hold' : 'no answer in time', fallback: false });
      }, hold === 0 ? ctx.openTimeout : hold + ctx.heartbeatSlack);
      const res = await platform.fetch(`${ctx.baseUrl}/poll?${q.join('&')}`, { headers: authHeaders(ctx), signal: c.signal, cache: 'no-store' });
      const body = (await res.json()) as PollResponse & { error?: { code: string; reason: string } };
      platform.clearTimeout(watchdog);
      if (ended || gen !== generation) return;
      if (!res.ok) {
        const reason = `${body.error?.code ?? res.status}: ${body.error?.reason ?? ''}`;
        return finish({ retry: res.status === 401 ? 'never' : 'backoff', reason, fallback: false, retryAfter: retryAfterOf(res) });
      }
      if (!opened) {
        opened = true;
        handlers.open();
      }
      for (const [channel, position] of parseCursor(body.cursor)) {
        if (subs.get(channel) === undefined) handlers.subscribed({ channel, position, recovered: false });
        // The next poll continues from the cursor the server answered with.
        if (wanted.has(channel)) wanted.set(channel, position);
      }
      for (const gap of body.gaps) handlers.gap(gap);
      for (const message of body.messages) handlers.message(message);
      hold = ctx.pollTimeout;
    }
  };

  const start = (): void => {
    generation += 1;
    const gen = generation;
    ctrl?.abort();
    platform.clearTimeout(watchdog);
    if (wanted.size === 0) {
      // Nothing to poll for: upstream still works over HTTP.
      if (!opened) {
        opened = true;
        platform.setTimeout(() => ended || handlers.open(), 0);
      }
      return;
    }
    poll(gen).catch((err: unknown) => {
      if (gen !== generation || ended) return;
      finish({ retry: 'backoff', reason: `poll failed: ${(err as Error).message}`, fallback: false });
    });
  };

  start();

  return {
    name: 'poll',
    sync(subscriptions: ReadonlyMap<Channel, Position | undefined>) {
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
      ctrl?.abort();
    },
  };
}
