/**
 * The skeleton shared by the HTTP downstream transports (SSE and long polling): one loop at a time
 * over the wanted channels, restarted when the channel set changes; one watchdog; exactly one
 * `close` report. With nothing subscribed there is no stream, since upstream works over plain HTTP
 * anyway, but the transport still proves the server answers (one real request) before it reports
 * `open`, and reports an outage when it does not.
 * @module
 */
import { MAX_CURSOR_CHANNELS, type Channel, type Position } from '@tidings/protocol';
import type { TransportName } from '../state.js';
import { httpPresence, httpPublish, httpRequest, reachable } from './http.js';
import type { ClientTransport, CloseInfo, TransportContext } from './transport.js';

/**
 * What a loop gets to drive its connection. A loop is replaced when the channel set changes, maybe
 * by user code it called (a `state` listener on `connected`, a message handler): once it is not
 * {@link current}, its calls here do nothing, and it must report nothing more to the handlers
 * (check `current` after anything that runs user code).
 */
export interface Downstream {
  readonly signal: AbortSignal;
  /** The channels of this loop and the positions to resume from: its own (advanced by `advance`), no other loop's. */
  readonly wanted: ReadonlyMap<Channel, Position | undefined>;
  /** Records a position the server confirmed, for the next request of this loop. */
  advance(channel: Channel, position: Position): void;
  /** (Re)arms the watchdog: `info` is reported if nothing re-arms it within `ms`. */
  arm(ms: number, info: CloseInfo): void;
  disarm(): void;
  /** Reports the transport open (once per transport). Runs user code: check {@link current} after it. */
  opened(): void;
  /** Ends the transport (once); nothing once this loop is no longer {@link current}. */
  finish(info: CloseInfo): void;
  /** False once this loop was replaced or the transport ended. */
  readonly current: boolean;
}

export type DownstreamLoop = (d: Downstream) => Promise<void>;

/** How a downstream transport takes a new token (see {@link ClientTransport.refresh}). */
export type Refresher = (token: string) => Promise<void>;

/**
 * The channels one stream carries: the first {@link MAX_CURSOR_CHANNELS} subscribed (the protocol's
 * bound per SSE stream and poll); the rest are refused.
 */
function streamed(subscriptions: ReadonlyMap<Channel, Position | undefined>): Map<Channel, Position | undefined> {
  return new Map([...subscriptions].slice(0, MAX_CURSOR_CHANNELS));
}

export function httpDownstream(ctx: TransportContext, name: TransportName, loop: DownstreamLoop, refresh: Refresher, failure: (err: unknown) => CloseInfo): ClientTransport {
  const { platform, handlers } = ctx;
  const wanted = streamed(ctx.subscriptions);
  let ended = false;
  let opened = false;
  let watchdog: unknown;
  let ctrl: AbortController | undefined;

  const disarm = (): void => platform.clearTimeout(watchdog);
  const finish = (info: CloseInfo): void => {
    if (ended) return;
    ended = true;
    disarm();
    ctrl?.abort();
    handlers.close(info);
  };
  const open = (): void => {
    if (opened || ended) return;
    opened = true;
    handlers.open();
  };

  /** No stream to run: only check, once, that the server is there. */
  const alive: DownstreamLoop = async (d) => {
    if (await reachable(platform, ctx.baseUrl, ctx.openTimeout, d.signal)) {
      if (d.current) d.opened();
    } else if (d.current) {
      d.finish({ retry: 'backoff', reason: 'server unreachable', fallback: false });
    }
  };

  const start = (): void => {
    ctrl?.abort();
    disarm();
    ctrl = undefined;
    if (wanted.size === 0 && opened) return;
    const run = wanted.size === 0 ? alive : loop;
    const mine = new AbortController();
    ctrl = mine;
    // This loop's own positions: a replaced loop still finishing its answer cannot move the next one's.
    const positions = new Map(wanted);
    const d: Downstream = {
      signal: mine.signal,
      wanted: positions,
      advance: (channel, position) => {
        if (d.current && positions.has(channel)) positions.set(channel, position);
      },
      arm: (ms, info) => {
        if (!d.current) return;
        disarm();
        watchdog = platform.setTimeout(() => finish(info), ms);
      },
      disarm: () => {
        if (d.current) disarm();
      },
      opened: () => {
        if (d.current) open();
      },
      finish: (info) => {
        if (d.current) finish(info);
      },
      get current() {
        return !ended && ctrl === mine;
      },
    };
    run(d).catch((err: unknown) => {
      if (d.current) finish(failure(err));
    });
  };

  /**
   * Subscriptions beyond what one stream carries end with `limit_exceeded`, as one beyond the
   * server's `maxSubscriptions` does over WebSocket; the others go on. Reported once the client has
   * taken this transport (not from inside the call that made or synced it), and only for channels
   * still left out by then.
   */
  const refuseBeyondBound = (subscriptions: ReadonlyMap<Channel, unknown>): void => {
    if (subscriptions.size <= MAX_CURSOR_CHANNELS) return;
    const over = [...subscriptions.keys()].slice(MAX_CURSOR_CHANNELS);
    void Promise.resolve().then(() => {
      for (const channel of over) {
        if (ended || wanted.has(channel)) continue;
        handlers.subscriptionError(channel, { code: 'limit_exceeded', reason: `at most ${MAX_CURSOR_CHANNELS} channels per ${name === 'sse' ? 'SSE stream' : 'long poll'}` });
      }
    });
  };

  start();
  refuseBeyondBound(ctx.subscriptions);

  return {
    name,
    sync(subscriptions) {
      const next = streamed(subscriptions);
      const changed = next.size !== wanted.size || [...next.keys()].some((c) => !wanted.has(c));
      wanted.clear();
      for (const [channel, p] of next) wanted.set(channel, p);
      if (changed && !ended) start();
      refuseBeyondBound(subscriptions);
    },
    publish: (req, signal) => httpPublish(ctx, req, signal),
    request: (method, data, signal) => httpRequest(ctx, method, data, signal),
    presence: (channel, signal) => httpPresence(ctx, channel, signal),
    refresh: (token) => refresh(token),
    close() {
      if (ended) return;
      ended = true;
      disarm();
      ctrl?.abort();
    },
  };
}

