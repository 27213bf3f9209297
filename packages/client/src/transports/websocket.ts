/**
 * WebSocket transport: JSON frames per docs/protocol.md. Requests are matched to replies by id;
 * a `heartbeat` frame (or anything else) arriving resets the liveness watchdog.
 * @module
 */
import {
  CloseCode,
  jsonCodec,
  TidingsError,
  type Channel,
  type ClientFrame,
  type ErrorBody,
  type Json,
  type Position,
  type PresenceResult,
  type PublishRequest,
  type PublishResult,
  type ServerFrame,
  type SubscribeResult,
} from '@tidings/protocol';
import type { ClientTransport, CloseInfo, TransportContext, WebSocketLike } from './transport.js';

interface Pending {
  readonly resolve: (result: unknown) => void;
  readonly reject: (err: TidingsError) => void;
  /** Set for subscribe requests, to route their errors. */
  readonly channel?: Channel;
}

const CLOSE_BY_CODE = new Map<number, (typeof CloseCode)[keyof typeof CloseCode]>(Object.values(CloseCode).map((c) => [c.code, c]));

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
  const url = `${ctx.baseUrl.replace(/^http/, 'ws')}/ws${ctx.token === undefined ? '' : `?token=${encodeURIComponent(ctx.token)}`}`;
  const pending = new Map<number, Pending>();
  const subscribed = new Set<Channel>();
  let wanted = new Map(ctx.subscriptions);
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
    for (const p of pending.values()) p.reject(new TidingsError('unavailable', `connection lost: ${info.reason}`));
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
      () => finish({ retry: 'backoff', reason: opened ? 'heartbeat timeout' : 'no welcome in time', fallback: false, unproven: !opened }),
      silence,
    );
  };

  const send = (frame: ClientFrame): void => ws?.send(jsonCodec.encodeClient(frame));

  const call = (frame: ClientFrame & { id: number }, channel?: Channel): Promise<unknown> =>
    new Promise((resolve, reject) => {
      pending.set(frame.id, channel === undefined ? { resolve, reject } : { resolve, reject, channel });
      send(frame);
    });

  const subscribe = (channel: Channel, since: Position | undefined): void => {
    subscribed.add(channel);
    const id = nextId++;
    const frame: ClientFrame = since === undefined ? { type: 'subscribe', id, channel } : { type: 'subscribe', id, channel, since };
    call(frame as ClientFrame & { id: number }, channel).then(
      (result) => handlers.subscribed(result as SubscribeResult),
      (err: TidingsError) => {
        subscribed.delete(channel);
        if (!ended) handlers.subscriptionError(channel, { code: err.code, reason: err.message });
      },
    );
  };

  const reconcile = (): void => {
    for (const [channel, since] of wanted) if (!subscribed.has(channel)) subscribe(channel, since);
    for (const channel of [...subscribed]) {
      if (wanted.has(channel)) continue;
      subscribed.delete(channel);
      call({ type: 'unsubscribe', id: nextId++, channel }).catch(() => undefined);
    }
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
        handlers.message(frame.message);
        return;
      case 'gap':
        handlers.gap(frame.gap);
        return;
      case 'join':
      case 'leave':
        handlers.presence(frame.type, { channel: frame.channel, client: frame.client });
        return;
      case 'reply':
      case 'error':
      case 'pong': {
        if (typeof frame.id !== 'number') return;
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
      const known = CLOSE_BY_CODE.get(ev.code);
      const retry = known === undefined ? 'backoff' : !known.reconnect ? 'never' : known.immediate ? 'now' : 'backoff';
      // Closed before the welcome, and the server did not say why: the upgrade is blocked or stripped
      // here, or the server is down (both are 1006 to a browser). The client probes plain HTTP to tell.
      // An overloaded server (4503) says how long to stay away: "...; retry after 1500 ms".
      const after = ev.code === CloseCode.overloaded.code ? /retry (?:after|in) (\d+) ms/.exec(ev.reason)?.[1] : undefined;
      finish({
        retry: ev.code === 1000 ? 'backoff' : retry,
        reason: ev.reason || `closed (${ev.code})`,
        fallback: false,
        unproven: !opened && known === undefined,
        retryAfter: after === undefined ? undefined : Number(after),
      });
    };
  }

  return {
    name: 'websocket',
    sync(subscriptions) {
      wanted = new Map(subscriptions);
      if (opened && !ended) reconcile();
    },
    async publish(req: PublishRequest): Promise<PublishResult> {
      if (!opened || ended) throw new TidingsError('unavailable', 'not connected');
      return (await call({ type: 'publish', id: nextId++, message: req })) as PublishResult;
    },
    async request(method: string, data: Json | undefined): Promise<Json> {
      if (!opened || ended) throw new TidingsError('unavailable', 'not connected');
      const id = nextId++;
      return (await call(data === undefined ? { type: 'rpc', id, method } : { type: 'rpc', id, method, data })) as Json;
    },
    async presence(channel: Channel): Promise<PresenceResult> {
      if (!opened || ended) throw new TidingsError('unavailable', 'not connected');
      return (await call({ type: 'presence', id: nextId++, channel })) as PresenceResult;
    },
    async refresh(token: string): Promise<void> {
      if (!opened || ended) throw new TidingsError('unavailable', 'not connected');
      await call({ type: 'refresh', id: nextId++, token });
      ctx.token = token;
    },
    close() {
      if (ended) return;
      ended = true;
      platform.clearTimeout(watchdog);
      for (const p of pending.values()) p.reject(new TidingsError('unavailable', 'closed'));
      pending.clear();
      if (ws !== undefined) {
        detach(ws);
        ws.close(1000);
      }
    },
  };
}

export type { ErrorBody };
