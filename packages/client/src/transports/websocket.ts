/**
 * WebSocket transport: JSON frames per docs/protocol.md. Requests are matched to replies by id;
 * a `heartbeat` frame (or anything else) arriving resets the liveness watchdog.
 * @module
 */
import {
  channelProblem,
  CloseCode,
  formatCursorEntry,
  jsonCodec,
  MAX_CURSOR_CHANNELS,
  TidingsError,
  type Channel,
  type ClientFrame,
  type ErrorBody,
  type Json,
  type Position,
  type PresenceResult,
  type PublishRequest,
  type PublishResult,
  type RequestId,
  type ServerFrame,
  type SubscribeResult,
} from '@tidings/protocol';
import { channelQuery, knownCursor } from './cursor.js';
import { connectionLost, isKnownClose, retryAfterClose, type ClientTransport, type CloseInfo, type TransportContext, type WebSocketLike } from './transport.js';

interface Pending {
  readonly resolve: (result: unknown) => void;
  readonly reject: (err: TidingsError) => void;
  /** Set for subscribe requests, to route their errors. */
  readonly channel?: Channel;
}

/** Longest query the connect request carries subscriptions in; the rest are subscribed with frames. */
const MAX_CONNECT_QUERY = 4096;

/**
 * The channels to subscribe in the connect request (`/ws?channel=..&cursor=..`), saving the round
 * trip of a `subscribe` frame after `welcome`: as many wanted channels as fit the bounds, in order.
 */
function connectChannels(wanted: ReadonlyMap<Channel, Position | undefined>): Map<Channel, Position | undefined> {
  const picked = new Map<Channel, Position | undefined>();
  let length = 0;
  for (const [channel, since] of wanted) {
    if (picked.size === MAX_CURSOR_CHANNELS) break;
    if (channelProblem(channel) !== undefined) continue;
    // `channel=<name>&`, and its cursor entry with the comma before it.
    const cost = 9 + encodeURIComponent(channel).length + (since === undefined ? 0 : 3 + encodeURIComponent(formatCursorEntry(channel, since)).length);
    if (length + cost > MAX_CONNECT_QUERY) break;
    length += cost;
    picked.set(channel, since);
  }
  return picked;
}

function connectQuery(token: string | undefined, channels: ReadonlyMap<Channel, Position | undefined>): string {
  const query: string[] = [];
  if (token !== undefined) query.push(`token=${encodeURIComponent(token)}`);
  query.push(...channelQuery(channels));
  const cursor = channels.size === 0 ? '' : knownCursor(channels);
  if (cursor !== '') query.push(`cursor=${encodeURIComponent(cursor)}`);
  return query.length === 0 ? '' : `?${query.join('&')}`;
}

/**
 * Stops listening to a socket we are abandoning. The error handler stays (as a no-op): closing a
 * socket that is still connecting makes some implementations (the `ws` package) emit an error.
 */
function detach(ws: WebSocketLike): void {
  ws.onopen = ws.onmessage = ws.onclose = null;
  ws.onerror = () => undefined;
}

export function websocketTransport(ctx: TransportContext): ClientTransport {
  const { platform, handlers } = ctx;
  const Ctor = platform.WebSocket;
  let wanted = new Map(ctx.subscriptions);
  const atConnect = connectChannels(wanted);
  const url = `${ctx.baseUrl.replace(/^http/, 'ws')}/ws${connectQuery(ctx.token, atConnect)}`;
  const pending = new Map<RequestId, Pending>();
  /** Channels the server has, or is about to have, a subscription of: by the request that made it. */
  const subscribed = new Map<Channel, RequestId>();
  /**
   * Channels of {@link subscribed} whose subscription the client let go of (maybe to subscribe anew,
   * from another position): let go at the server first, and what it still sends for them dropped
   * until its reply to the unsubscribe (after which it sends none), which `leaving` waits for.
   */
  const stale = new Set<Channel>();
  const leaving = new Set<Channel>();
  let nextId = 1;
  let opened = false;
  let ended = false;
  let watchdog: unknown;
  let silence = ctx.openTimeout;
  let ws: WebSocketLike | undefined;

  const finish = (info: CloseInfo): void => {
    if (ended) return;
    ended = true;
    platform.clearTimeout(watchdog);
    for (const p of pending.values()) p.reject(connectionLost(`connection lost: ${info.reason}`));
    pending.clear();
    if (ws !== undefined) {
      detach(ws);
      try {
        ws.close(1000);
      } catch {
        // already closing
      }
    }
    handlers.close(info);
  };

  const arm = (): void => {
    platform.clearTimeout(watchdog);
    watchdog = platform.setTimeout(
      () => finish({ retry: 'backoff', reason: opened ? 'heartbeat timeout' : 'no welcome in time', fallback: false, unproven: !opened, timedOut: true }),
      silence,
    );
  };

  const send = (frame: ClientFrame): void => ws?.send(jsonCodec.encodeClient(frame));

  /**
   * The reply (or error) to request `id`, sent now unless `frame` is absent (sent in the connect
   * request). Once `signal` aborts (its caller gave up), the request is forgotten here: a reply that
   * never comes holds nothing.
   */
  const call = (id: RequestId, frame: ClientFrame | undefined, channel?: Channel, signal?: AbortSignal): Promise<unknown> =>
    new Promise((resolve, reject) => {
      pending.set(id, channel === undefined ? { resolve, reject } : { resolve, reject, channel });
      signal?.addEventListener(
        'abort',
        () => {
          if (pending.delete(id)) reject(connectionLost('given up by its caller'));
        },
        { once: true },
      );
      if (frame !== undefined) send(frame);
    });

  /** Reports the outcome of subscribe request `id` of `channel`, unless a later request took its place. */
  const track = (channel: Channel, id: RequestId, reply: Promise<unknown>): void => {
    subscribed.set(channel, id);
    reply.then(
      (result) => {
        if (subscribed.get(channel) === id && !stale.has(channel)) handlers.subscribed(result as SubscribeResult);
      },
      (err: TidingsError) => {
        if (subscribed.get(channel) !== id) return;
        subscribed.delete(channel);
        if (!ended && !stale.has(channel)) handlers.subscriptionError(channel, { code: err.code, reason: err.message });
        stale.delete(channel);
      },
    );
  };

  const subscribe = (channel: Channel, since: Position | undefined): void => {
    const id = nextId++;
    track(channel, id, call(id, since === undefined ? { type: 'subscribe', id, channel } : { type: 'subscribe', id, channel, since }, channel));
  };

  /** Whether what the server sends for `channel` is for a subscription the client let go of. */
  const dropped = (channel: Channel): boolean => stale.has(channel) || leaving.has(channel);

  const reconcile = (): void => {
    // Let go first: a channel wanted anew is subscribed once the server has let go of the old one.
    for (const [channel, id] of [...subscribed]) {
      if ((wanted.has(channel) && !stale.has(channel)) || leaving.has(channel)) continue;
      leaving.add(channel);
      const unsubscribeId = nextId++;
      const done = (): void => {
        leaving.delete(channel);
        if (subscribed.get(channel) === id) subscribed.delete(channel);
        stale.delete(channel);
        if (opened && !ended) reconcile();
      };
      call(unsubscribeId, { type: 'unsubscribe', id: unsubscribeId, channel }).then(done, done);
    }
    for (const [channel, since] of wanted) if (!subscribed.has(channel)) subscribe(channel, since);
  };

  const onFrame = (frame: ServerFrame): void => {
    switch (frame.type) {
      case 'welcome':
        opened = true;
        silence = frame.heartbeat * 2 + ctx.heartbeatSlack;
        handlers.open();
        reconcile();
        return;
      case 'message':
        if (!dropped(frame.message.channel)) handlers.message(frame.message);
        return;
      case 'gap':
        if (!dropped(frame.gap.channel)) handlers.gap(frame.gap);
        return;
      case 'join':
      case 'leave':
        if (!dropped(frame.channel)) handlers.presence(frame.type, { channel: frame.channel, client: frame.client });
        return;
      case 'reply':
      case 'error':
      case 'pong': {
        if (frame.id === undefined) return;
        const p = pending.get(frame.id);
        if (p === undefined) return;
        pending.delete(frame.id);
        if (frame.type === 'error') p.reject(new TidingsError(frame.error.code, frame.error.reason));
        else p.resolve(frame.type === 'reply' ? frame.result : null);
        return;
      }
      case 'expiring':
        handlers.expiring(frame.expiresAt);
        return;
      case 'heartbeat':
        return;
    }
  };

  if (Ctor === undefined) {
    // Reported asynchronously, like any other failure to connect.
    platform.setTimeout(() => finish({ retry: 'backoff', reason: 'no WebSocket implementation', fallback: true }), 0);
  } else {
    ws = new Ctor(url);
    // Subscribed by the connect request: the server replies to each as `subscribe:<channel>`.
    for (const channel of atConnect.keys()) track(channel, `subscribe:${channel}`, call(`subscribe:${channel}`, undefined, channel));
    arm();
    ws.onmessage = (ev) => {
      arm();
      let frame: ServerFrame;
      try {
        frame = jsonCodec.decodeServer(typeof ev.data === 'string' ? ev.data : String(ev.data));
      } catch {
        return;
      }
      onFrame(frame);
    };
    ws.onerror = () => undefined;
    ws.onclose = (ev) => {
      const known = isKnownClose(ev.code);
      // Closed before the welcome, and the server did not say why: the upgrade is blocked or stripped
      // here, or the server is down (both are 1006 to a browser). The client probes plain HTTP to tell.
      // An overloaded server (4503) says how long to stay away: "...; retry after 1500 ms".
      const after = ev.code === CloseCode.overloaded.code ? /retry (?:after|in) (\d+) ms/.exec(ev.reason)?.[1] : undefined;
      finish({
        retry: retryAfterClose(ev.code),
        reason: ev.reason || `closed (${ev.code})`,
        fallback: false,
        unproven: !opened && !known,
        retryAfter: after === undefined ? undefined : Number(after),
      });
    };
  }

  return {
    name: 'websocket',
    get awaiting() {
      return pending.size;
    },
    sync(subscriptions) {
      // A channel the client let go of is stale at the server even if it wants it again (a new
      // subscription, maybe from another position): `reconcile` lets go of it there first.
      for (const channel of subscribed.keys()) if (!subscriptions.has(channel)) stale.add(channel);
      wanted = new Map(subscriptions);
      if (opened && !ended) reconcile();
    },
    async publish(req: PublishRequest, signal?: AbortSignal): Promise<PublishResult> {
      if (!opened || ended) throw connectionLost('not connected');
      const id = nextId++;
      return (await call(id, { type: 'publish', id, message: req }, undefined, signal)) as PublishResult;
    },
    async request(method: string, data: Json | undefined, signal?: AbortSignal): Promise<Json> {
      if (!opened || ended) throw connectionLost('not connected');
      const id = nextId++;
      return (await call(id, data === undefined ? { type: 'rpc', id, method } : { type: 'rpc', id, method, data }, undefined, signal)) as Json;
    },
    async presence(channel: Channel, signal?: AbortSignal): Promise<PresenceResult> {
      if (!opened || ended) throw connectionLost('not connected');
      const id = nextId++;
      return (await call(id, { type: 'presence', id, channel }, undefined, signal)) as PresenceResult;
    },
    async refresh(token: string): Promise<void> {
      if (!opened || ended) throw connectionLost('not connected');
      const id = nextId++;
      await call(id, { type: 'refresh', id, token });
      ctx.token = token;
    },
    close() {
      if (ended) return;
      ended = true;
      platform.clearTimeout(watchdog);
      for (const p of pending.values()) p.reject(connectionLost('closed'));
      pending.clear();
      if (ws !== undefined) {
        detach(ws);
        ws.close(1000);
      }
    },
  };
}

export type { ErrorBody };
