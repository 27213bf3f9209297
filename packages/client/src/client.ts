/**
 * The public client: one API over WebSocket, SSE and long polling. It owns the state machine,
 * chooses and falls back between transports, reconnects with backoff, resumes every subscription
 * from its position, and queues upstream work while disconnected.
 * @module
 */
import {
  positionProblem,
  TidingsError,
  type Channel,
  type Json,
  type Message,
  type Position,
  type PresenceClient,
  type PresenceResult,
  type PublishResult,
} from '@tidings/protocol';
import { backoffDelay, DEFAULT_BACKOFF, RESTART_SPREAD, type BackoffOptions } from './backoff.js';
import { Emitter, typeMatches } from './emitter.js';
import { transition, type ClientEvent, type ClientState, type TransportName } from './state.js';
import { Subscription } from './subscription.js';
import { reachable } from './transports/http.js';
import { pollTransport } from './transports/long-polling.js';
import { sseTransport } from './transports/sse.js';
import {
  isConnectionLost,
  type ClientTransport,
  type CloseInfo,
  type Platform,
  type TransportContext,
  type TransportFactory,
  type TransportHandlers,
  type WebSocketConstructor,
} from './transports/transport.js';
import { websocketTransport } from './transports/websocket.js';

/** Where the client remembers which transport worked for an origin. */
export interface TransportMemory {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

export interface ClientOptions {
  /** A token, or a provider called on every (re)connect. */
  readonly token?: string | (() => string | Promise<string>);
  /** Transports to use, in order of preference. Default: websocket, sse, poll. */
  readonly transports?: readonly TransportName[];
  readonly backoff?: Partial<BackoffOptions>;
  /** WebSocket constructor (default: the global one; in Node 20 pass `WebSocket` from `ws`). */
  readonly WebSocket?: WebSocketConstructor;
  readonly fetch?: typeof fetch;
  /** Remembers the transport that worked per origin; default `localStorage` when present; `null` disables. */
  readonly storage?: TransportMemory | null;
  readonly random?: () => number;
  readonly setTimeout?: (fn: () => void, ms: number) => unknown;
  readonly clearTimeout?: (handle: unknown) => void;
  /** How long a transport has to prove itself (welcome / first event) before the next is tried. Default 5 s. */
  readonly openTimeout?: number;
  /** Silence tolerated beyond twice the server heartbeat. Default 5 s. */
  readonly heartbeatSlack?: number;
  /** The longest the server holds a long poll (its `pollTimeout`). Default 25 s. */
  readonly pollTimeout?: number;
  /** Most publishes and requests held while disconnected. Default 1000. */
  readonly maxQueue?: number;
  /** Default request timeout. Default 10 s. */
  readonly requestTimeout?: number;
  /** After falling back, retry the preferred transport in the background this often. Default 60 s. */
  readonly upgradeAfter?: number;
  /** Messages an unread async iterator may hold before it fails. Default 10,000. */
  readonly maxIteratorBuffer?: number;
}

export interface StateChange {
  readonly from: ClientState;
  readonly to: ClientState;
  readonly reason: string;
  /** Entering `waiting`: how long until the next attempt, in ms (backoff with jitter, or what the server asked). */
  readonly retryIn?: number;
}

interface ClientEvents {
  state: [StateChange];
  error: [TidingsError];
}

interface Upstream {
  /**
   * Sends it over `t`; `signal` aborts when the caller gives up (its timeout), the client closes, or
   * `t` goes away, so the transport forgets it (aborts its request, drops its pending reply).
   */
  readonly run: (t: ClientTransport, signal: AbortSignal | undefined) => Promise<unknown>;
  readonly resolve: (value: unknown) => void;
  readonly reject: (err: TidingsError) => void;
  sent: boolean;
  timer?: unknown;
  /** The transport it was last sent over, and the abort of that attempt. */
  via?: ClientTransport;
  attempt?: AbortController;
  /** The server answered `unavailable` this many times in a row; the next try waits a backoff delay (`retry`). */
  refused?: number;
  retry?: unknown;
}

const FACTORIES: Record<TransportName, TransportFactory> = { websocket: websocketTransport, sse: sseTransport, poll: pollTransport };

/**
 * A connection that stays up this long (ms), or carries anything, is stable: losing it starts the
 * backoff afresh. One lost sooner, having carried nothing, counts as one more failed attempt.
 */
const STABLE_AFTER = 5000;

function randomKey(random: () => number): string {
  const c = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  if (c?.randomUUID !== undefined) return c.randomUUID();
  return Array.from({ length: 4 }, () => Math.floor(random() * 2 ** 32).toString(36)).join('');
}

export class Client {
  readonly #base: string;
  readonly #opts: ClientOptions;
  readonly #platform: Platform;
  readonly #random: () => number;
  readonly #backoff: BackoffOptions;
  readonly #order: readonly TransportName[];
  readonly #events = new Emitter<ClientEvents>((err) => this.#listenerError(err));
  readonly #routes = new Map<string, Set<(m: Message) => void>>();
  readonly #subs = new Map<Channel, Subscription>();
  /** Channels the server refused `unavailable`, to be asked for again: their refusals in a row and the timer (bounded by `#subs`). */
  readonly #subscribeRetries = new Map<Channel, { refused: number; timer: unknown }>();
  readonly #queue: Upstream[] = [];
  #state: ClientState = { status: 'idle' };
  #index = 0;
  #transport: ClientTransport | undefined;
  /** Counts transports created; handlers of older ones are ignored. */
  #generation = 0;
  #timer: unknown;
  #probeTimer: unknown;
  #probe: ClientTransport | undefined;
  #retryAfter: number | undefined;
  /** An in-flight reachability check (a transport failed before proving itself). */
  #reach: AbortController | undefined;
  /** The transport (index) tried a second time in this connecting state, after the server answered; -1 for none. */
  #rechecked = -1;
  /** When the current connection opened, and whether it has carried anything since. */
  #connectedAt = 0;
  #carried = false;

  constructor(url: string, options: ClientOptions = {}) {
    this.#base = url.replace(/\/+$/, '');
    this.#opts = options;
    this.#random = options.random ?? Math.random;
    this.#backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this.#order = options.transports ?? ['websocket', 'sse', 'poll'];
    if (this.#order.length === 0) throw new TidingsError('bad_request', 'transports must name at least one transport');
    const g = globalThis as { WebSocket?: WebSocketConstructor; fetch?: typeof fetch };
    this.#platform = {
      WebSocket: options.WebSocket ?? g.WebSocket,
      fetch: options.fetch ?? ((...args) => (g.fetch as typeof fetch)(...args)),
      setTimeout: options.setTimeout ?? ((fn, ms) => globalThis.setTimeout(fn, ms)),
      clearTimeout: options.clearTimeout ?? ((h) => globalThis.clearTimeout(h as ReturnType<typeof globalThis.setTimeout>)),
    };
    const remembered = this.#recall();
    const at = remembered === null || remembered === undefined ? -1 : this.#order.indexOf(remembered as TransportName);
    this.#index = Math.max(0, at);
  }

  get state(): ClientState {
    return this.#state;
  }

  /** The transport in use, when connected. */
  get transport(): TransportName | undefined {
    return this.#state.status === 'connected' ? this.#state.transport : undefined;
  }

  /** Starts connecting (also done by the first subscribe, publish or request). */
  connect(): this {
    this.#fire({ type: 'start' }, 'connect');
    return this;
  }

  /**
   * Subscribes; `since` resumes from a saved position. Throws `bad_position` at once for a `since`
   * that is not a position (`{ epoch: 1-16 letters or digits, seq: a non-negative integer }`).
   * Over SSE and long polling a stream carries at most 64 channels: a subscription beyond that ends
   * with `limit_exceeded` (its `error` event), and the others go on.
   */
  subscribe(channel: Channel, options: { since?: Position } = {}): Subscription {
    if (this.#state.status === 'closed') throw new TidingsError('unavailable', 'client is closed');
    if (this.#subs.has(channel)) throw new TidingsError('already_subscribed', `already subscribed to ${channel}`);
    const problem = options.since === undefined ? undefined : positionProblem(options.since);
    if (problem !== undefined) throw new TidingsError('bad_position', `since of ${channel}: ${problem}`, channel);
    const sub = new Subscription(
      channel,
      options.since,
      {
        remove: (s) => {
          if (this.#subs.get(s.channel) !== s) return;
          this.#subs.delete(s.channel);
          this.#clearSubscribeRetry(s.channel);
          this.#sync();
        },
        routed: (m) => this.#route(m),
        presence: (ch) => this.#presence(ch),
        listenerError: (err) => this.#listenerError(err),
      },
      this.#opts.maxIteratorBuffer ?? 10_000,
    );
    this.#subs.set(channel, sub);
    this.#sync();
    this.connect();
    return sub;
  }

  /** Publishes; resolves with the position (retries carry the same idempotency key, so nothing is published twice). */
  publish(channel: Channel, data: Json, options: { type?: string; idempotencyKey?: string } = {}): Promise<PublishResult> {
    const req = {
      channel,
      data,
      ...(options.type === undefined ? {} : { type: options.type }),
      idempotencyKey: options.idempotencyKey ?? randomKey(this.#random),
    };
    return this.#upstream((t, signal) => t.publish(req, signal), undefined) as Promise<PublishResult>;
  }

  /** Calls a server method; rejects with `timeout` after `options.timeout` ms (default 10 s). */
  request(method: string, data?: Json, options: { timeout?: number } = {}): Promise<Json> {
    return this.#upstream((t, signal) => t.request(method, data, signal), options.timeout ?? this.#opts.requestTimeout ?? 10_000) as Promise<Json>;
  }

  /** Who is present in `channel` (see {@link Subscription.presence}); it queues while disconnected, like a request. */
  async #presence(channel: Channel): Promise<PresenceClient[]> {
    const result = (await this.#upstream((t, signal) => t.presence(channel, signal), this.#opts.requestTimeout ?? 10_000)) as PresenceResult;
    return result.clients;
  }

  /** `state` and `error` events, or messages of any channel by type pattern (`chat.message`, `chat.*`, `*`). */
  on(event: 'state', listener: (change: StateChange) => void): () => void;
  on(event: 'error', listener: (err: TidingsError) => void): () => void;
  on(pattern: string, listener: (message: Message) => void): () => void;
  on(event: string, listener: ((change: StateChange) => void) | ((err: TidingsError) => void) | ((m: Message) => void)): () => void {
    if (event === 'state') return this.#events.on('state', listener as (c: StateChange) => void);
    if (event === 'error') return this.#events.on('error', listener as (e: TidingsError) => void);
    let set = this.#routes.get(event);
    if (set === undefined) this.#routes.set(event, (set = new Set()));
    const fn = listener as (m: Message) => void;
    set.add(fn);
    return () => {
      set.delete(fn);
      if (set.size === 0) this.#routes.delete(event);
    };
  }

  /** Closes the connection and releases every subscription, timer and listener. */
  close(): void {
    this.#fire({ type: 'close' }, 'closed by the application');
  }

  /** Listener and timer counts, for leak checks. */
  get resources(): { subscriptions: number; listeners: number; queued: number; awaiting: number; timers: number } {
    let listeners = this.#events.size;
    for (const set of this.#routes.values()) listeners += set.size;
    const timers = [this.#timer, this.#probeTimer].filter((t) => t !== undefined).length + this.#subscribeRetries.size;
    return { subscriptions: this.#subs.size, listeners, queued: this.#queue.length, awaiting: this.#transport?.awaiting ?? 0, timers };
  }

  // --- state machine -------------------------------------------------------------------------

  #fire(event: ClientEvent, reason: string): void {
    const from = this.#state;
    const to = transition(from, event);
    if (to === undefined) return;
    this.#state = to;
    const retryIn = this.#enter(to);
    this.#events.emit('state', retryIn === undefined ? { from, to, reason } : { from, to, reason, retryIn });
  }

  /** Carries out entering `state`; for `waiting`, returns the delay before the next attempt. */
  #enter(state: ClientState): number | undefined {
    this.#clearTimer();
    switch (state.status) {
      case 'connecting':
        this.#rechecked = -1;
        this.#open();
        return;
      case 'connected':
        this.#connectedAt = Date.now();
        this.#carried = false;
        this.#remember(state.transport);
        this.#flush();
        if (this.#index > 0) this.#scheduleProbe(this.#opts.upgradeAfter ?? 60_000);
        return;
      case 'waiting': {
        this.#dropTransport();
        // "Come back now" (a restart) is honoured at once, but not in a loop: once connections keep
        // being lost before they prove stable, it backs off like any other retry.
        const delay =
          state.retry === 'now' && state.attempt <= 1
            ? Math.floor(this.#random() * RESTART_SPREAD)
            : Math.max(this.#serverDelay(), backoffDelay(this.#backoff, state.attempt, this.#random));
        this.#retryAfter = undefined;
        this.#timer = this.#platform.setTimeout(() => {
          this.#timer = undefined;
          this.#fire({ type: 'retry' }, 'retrying');
        }, delay);
        return delay;
      }
      case 'failed':
        this.#dropTransport();
        this.#clearSubscribeRetries();
        this.#failQueue(new TidingsError(state.code ?? 'unauthorized', state.reason));
        this.#events.emit('error', new TidingsError(state.code ?? 'unauthorized', state.reason));
        return;
      case 'closed':
        this.#dropTransport();
        this.#clearSubscribeRetries();
        this.#failQueue(new TidingsError('unavailable', 'client closed'));
        for (const sub of [...this.#subs.values()]) sub.end(undefined);
        this.#subs.clear();
        this.#routes.clear();
        this.#events.clear();
        return;
      case 'idle':
        return;
    }
  }

  /** The delay the server asked for (Retry-After, a 4503 close), plus up to 30% jitter so a refused storm spreads out. */
  #serverDelay(): number {
    const after = this.#retryAfter;
    return after === undefined ? 0 : Math.floor(after * (1 + 0.3 * this.#random()));
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) this.#platform.clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  // --- transports ----------------------------------------------------------------------------

  #open(): void {
    const name = this.#order[this.#index] as TransportName;
    const started = this.#state;
    this.#token().then(
      (token) => {
        if (this.#state !== started) return;
        const gen = ++this.#generation;
        this.#transport = FACTORIES[name](this.#context(token, this.#positions(), this.#handlers(name, gen)));
      },
      (err: unknown) => this.#fire({ type: 'drop', retry: 'backoff', reason: `token provider failed: ${(err as Error).message}` }, 'token provider failed'),
    );
  }

  #context(token: string | undefined, subscriptions: Map<Channel, Position | undefined>, handlers: TransportHandlers): TransportContext {
    return {
      baseUrl: this.#base,
      token,
      subscriptions,
      platform: this.#platform,
      openTimeout: this.#opts.openTimeout ?? 5000,
      heartbeatSlack: this.#opts.heartbeatSlack ?? 5000,
      pollTimeout: this.#opts.pollTimeout ?? 25_000,
      handlers,
    };
  }

  async #token(): Promise<string | undefined> {
    const { token } = this.#opts;
    return typeof token === 'function' ? await token() : token;
  }

  /**
   * Handlers bound to one transport instance (`gen`): once it is replaced or dropped, whatever it
   * still reports is ignored.
   */
  #handlers(name: TransportName, gen: number): TransportHandlers {
    const live = (): boolean => this.#transport !== undefined && this.#generation === gen;
    return {
      open: () => live() && this.#fire({ type: 'open', transport: name }, `${name} open`),
      subscribed: (result) => {
        if (!live()) return;
        this.#clearSubscribeRetry(result.channel);
        this.#subs.get(result.channel)?.started(result.position);
      },
      message: (m) => {
        const sub = live() ? this.#subs.get(m.channel) : undefined;
        if (sub === undefined) return;
        this.#carried = true;
        if (!sub.accept(m)) this.#resync(sub);
      },
      gap: (g) => {
        const sub = live() ? this.#subs.get(g.channel) : undefined;
        if (sub === undefined) return;
        this.#carried = true;
        sub.gap(g);
      },
      presence: (kind, change) => {
        const sub = live() ? this.#subs.get(change.channel) : undefined;
        if (sub === undefined) return;
        this.#carried = true;
        sub.presenceChange(kind, change.client);
      },
      expiring: () => {
        if (live()) this.#refreshToken(gen);
      },
      subscriptionError: (channel, error) => {
        const sub = live() ? this.#subs.get(channel) : undefined;
        if (sub === undefined) return;
        // The server could not subscribe it for now (its broker is down, a hook timed out): the
        // subscription stays, and is asked for again after a backoff delay, from its position.
        if (error.code === 'unavailable') {
          this.#retrySubscribe(channel);
          return;
        }
        this.#clearSubscribeRetry(channel);
        this.#subs.delete(channel);
        sub.end(new TidingsError(error.code, error.reason));
        // The transport goes on with the other subscriptions (SSE and polling reopen without this one).
        this.#sync();
      },
      close: (info: CloseInfo) => {
        if (!live()) return;
        const t = this.#transport;
        this.#transport = undefined;
        this.#abandon(t);
        this.#closed(info);
      },
    };
  }

  /**
   * The server warned that the token expires: ask the token provider for a new one and hand it to
   * the connection. If that fails, nothing is lost: the server closes at expiry (4403 /
   * token_expired) and the client reconnects at once with a token from the provider.
   */
  #refreshToken(gen: number): void {
    if (typeof this.#opts.token !== 'function') return;
    this.#token().then(
      async (token) => {
        const transport = this.#transport;
        if (token === undefined || transport === undefined || this.#generation !== gen) return;
        await transport.refresh(token);
      },
      (err: unknown) => {
        this.#events.emit('error', new TidingsError('unauthorized', `token provider failed: ${(err as Error).message}`));
      },
    ).catch((err: unknown) => {
      this.#events.emit('error', err instanceof TidingsError ? err : new TidingsError('unavailable', `token refresh failed: ${(err as Error).message}`));
    });
  }

  #closed(info: CloseInfo): void {
    if (info.retry === 'never') {
      this.#fire(info.code === undefined ? { type: 'reject', reason: info.reason } : { type: 'reject', reason: info.reason, code: info.code }, info.reason);
      return;
    }
    const next = this.#state.status === 'connecting' && this.#index + 1 < this.#order.length;
    if (next && info.fallback) {
      // This transport cannot work here: try the next one at once.
      this.#index += 1;
      this.#open();
      return;
    }
    if (next && info.unproven === true) {
      this.#fallBackIfReachable(info);
      return;
    }
    if (info.fallback) this.#index = 0;
    this.#drop(info);
  }

  /** Reports a lost connection or a failed attempt; the state machine counts it. */
  #drop(info: CloseInfo): void {
    this.#retryAfter = info.retryAfter;
    const retry = info.retry === 'never' ? 'backoff' : info.retry;
    this.#fire({ type: 'drop', retry, reason: info.reason, stable: this.#stable() }, info.reason);
  }

  /**
   * A transport failed before proving itself, in a way that looks the same whether it is blocked
   * here or the server is down. If the server answers plain HTTP, the transport is what fails: fall
   * back. Otherwise it is an outage: retry the same transport with backoff, and remember nothing.
   *
   * A server that comes up between the failed attempt and the check answers it too, though the
   * transport was never at fault. So an attempt that failed fast (refused, reset, closed: not a
   * timeout) is made once more first, and the client falls back only if it fails again while the
   * server answers. An outage that ends at the wrong moment then never pins clients to a fallback.
   */
  #fallBackIfReachable(info: CloseInfo): void {
    const started = this.#state;
    const ctrl = new AbortController();
    this.#reach = ctrl;
    void reachable(this.#platform, this.#base, this.#opts.openTimeout ?? 5000, ctrl.signal).then((up) => {
      if (this.#reach === ctrl) this.#reach = undefined;
      if (this.#state !== started) return;
      if (up) {
        if (info.timedOut !== true && this.#rechecked !== this.#index) this.#rechecked = this.#index;
        else this.#index += 1;
        this.#open();
      } else {
        this.#drop({ ...info, reason: `${info.reason}; server unreachable` });
      }
    });
  }

  /** Whether the current connection has proven itself (see {@link STABLE_AFTER}). */
  #stable(): boolean {
    return this.#state.status === 'connected' && (this.#carried || Date.now() - this.#connectedAt >= STABLE_AFTER);
  }

  /**
   * Remembers the transport for the origin only when a fallback is what worked; once the preferred
   * transport works again, an older fallback is forgotten. An outage never changes it.
   */
  #remember(name: TransportName): void {
    const memory = this.#memory();
    if (memory === null) return;
    const stored = this.#recall();
    if (stored === name || (this.#index === 0 && stored === null)) return;
    try {
      memory.setItem(this.#memoryKey(), name);
    } catch {
      // Storage full or refused (a browser's policy): only a hint for the next page load is lost.
    }
  }

  /** The transport remembered for the origin; null when none is, or storage refuses to answer. */
  #recall(): string | null {
    try {
      return this.#memory()?.getItem(this.#memoryKey()) ?? null;
    } catch {
      return null;
    }
  }

  #dropTransport(): void {
    this.#reach?.abort();
    this.#reach = undefined;
    const t = this.#transport;
    this.#transport = undefined;
    t?.close();
    this.#abandon(t);
    this.#probe?.close();
    this.#probe = undefined;
    if (this.#probeTimer !== undefined) this.#platform.clearTimeout(this.#probeTimer);
    this.#probeTimer = undefined;
  }

  /** In the background, checks whether the preferred transport works again; switches when it does. */
  #scheduleProbe(after: number): void {
    this.#probeTimer = this.#platform.setTimeout(() => {
      this.#probeTimer = undefined;
      if (this.#state.status !== 'connected') return;
      const name = this.#order[0] as TransportName;
      // The probe belongs to this connection: closed or dropped while the token was on its way, none.
      const current = this.#transport;
      const still = (): boolean => this.#state.status === 'connected' && this.#transport === current;
      let settled = false;
      this.#token().then(
        (token) => {
          if (!still()) return;
          this.#probe = FACTORIES[name](
            this.#context(token, this.#probeChannels(), {
              open: () => {
                if (settled) return;
                settled = true;
                this.#probe?.close();
                this.#probe = undefined;
                this.#index = 0;
                this.#fire({ type: 'drop', retry: 'now', reason: `${name} works again`, stable: true }, `upgrading to ${name}`);
              },
              subscribed: () => undefined,
              expiring: () => undefined,
              message: () => undefined,
              gap: () => undefined,
              presence: () => undefined,
              subscriptionError: () => undefined,
              close: () => {
                if (settled) return;
                settled = true;
                this.#probe = undefined;
                if (this.#state.status === 'connected') this.#scheduleProbe(Math.min(after * 2, 3_600_000));
              },
            }),
          );
        },
        () => {
          if (still()) this.#scheduleProbe(Math.min(after * 2, 3_600_000));
        },
      );
    }, after);
  }

  /**
   * What the background check of the preferred transport subscribes: nothing for WebSocket (its
   * welcome proves it), else one channel of the client's, from its position, so that an SSE probe
   * opens a real stream and works only once its first event arrives (a proxy that buffers streams
   * holds it back). With nothing subscribed there is no stream to prove: the check only asks
   * whether the server answers, which is all SSE does then too.
   */
  #probeChannels(): Map<Channel, Position | undefined> {
    const probe = new Map<Channel, Position | undefined>();
    const first = this.#order[0] === 'websocket' ? undefined : this.#subs.values().next().value;
    if (first !== undefined) probe.set(first.channel, first.position);
    return probe;
  }

  #positions(): Map<Channel, Position | undefined> {
    const out = new Map<Channel, Position | undefined>();
    for (const [channel, sub] of this.#subs) out.set(channel, sub.position);
    return out;
  }

  #sync(): void {
    this.#transport?.sync(this.#positions());
  }

  /**
   * Asks for `channel` again after a backoff delay that grows with the refusals in a row: the
   * transport let go of it when the server refused it, and a sync subscribes what it wants and does
   * not hold. One timer per channel at most; the count is forgotten once the server subscribes it.
   */
  #retrySubscribe(channel: Channel): void {
    const retry = this.#subscribeRetries.get(channel) ?? { refused: 0, timer: undefined };
    if (retry.timer !== undefined) return;
    retry.refused += 1;
    retry.timer = this.#platform.setTimeout(() => {
      retry.timer = undefined;
      if (this.#subs.has(channel)) this.#sync();
      else this.#subscribeRetries.delete(channel);
    }, backoffDelay(this.#backoff, retry.refused, this.#random));
    this.#subscribeRetries.set(channel, retry);
  }

  #clearSubscribeRetry(channel: Channel): void {
    const retry = this.#subscribeRetries.get(channel);
    if (retry === undefined) return;
    if (retry.timer !== undefined) this.#platform.clearTimeout(retry.timer);
    this.#subscribeRetries.delete(channel);
  }

  #clearSubscribeRetries(): void {
    for (const channel of [...this.#subscribeRetries.keys()]) this.#clearSubscribeRetry(channel);
  }

  /** A message could not be placed: resubscribe from the last position. */
  #resync(sub: Subscription): void {
    const t = this.#transport;
    if (t === undefined) return;
    const without = this.#positions();
    without.delete(sub.channel);
    t.sync(without);
    t.sync(this.#positions());
  }

  #route(m: Message): void {
    const type = m.type ?? 'message';
    for (const [pattern, set] of this.#routes) {
      if (!typeMatches(pattern, type)) continue;
      for (const fn of [...set]) {
        try {
          fn(m);
        } catch (err) {
          this.#listenerError(err);
        }
      }
    }
  }

  #listenerError(err: unknown): void {
    // A listener's bug must not break delivery; surface it asynchronously like an uncaught error.
    this.#platform.setTimeout(() => {
      throw err;
    }, 0);
  }

  // --- upstream ------------------------------------------------------------------------------

  #upstream(run: Upstream['run'], timeout: number | undefined): Promise<unknown> {
    if (this.#state.status === 'closed') return Promise.reject(new TidingsError('unavailable', 'client is closed'));
    if (this.#state.status === 'failed') return Promise.reject(new TidingsError(this.#state.code ?? 'unauthorized', this.#state.reason));
    if (this.#queue.length >= (this.#opts.maxQueue ?? 1000)) {
      return Promise.reject(new TidingsError('limit_exceeded', 'too many publishes and requests waiting for a connection'));
    }
    return new Promise((resolve, reject) => {
      const item: Upstream = { run, resolve, reject, sent: false };
      if (timeout !== undefined) {
        item.timer = this.#platform.setTimeout(() => {
          this.#remove(item);
          reject(new TidingsError('timeout', `no reply within ${timeout} ms`));
          item.attempt?.abort();
        }, timeout);
      }
      this.#queue.push(item);
      this.connect();
      if (this.#state.status === 'connected') this.#send(item);
    });
  }

  #flush(): void {
    for (const item of [...this.#queue]) if (!item.sent) this.#send(item);
  }

  #send(item: Upstream): void {
    const t = this.#transport;
    if (t === undefined) return;
    item.sent = true;
    const attempt = new AbortController();
    item.via = t;
    item.attempt = attempt;
    item.run(t, attempt.signal).then(
      (value) => {
        if (this.#transport === t) this.#carried = true;
        this.#remove(item);
        item.resolve(value);
      },
      (err: unknown) => {
        const e = err instanceof TidingsError ? err : new TidingsError('internal', String(err));
        const lost = isConnectionLost(e);
        // A coded refusal is still an answer from the server over this connection.
        if (!lost && this.#transport === t) this.#carried = true;
        if (e.code === 'unavailable' && this.#queue.includes(item)) {
          item.sent = false;
          if (!lost) {
            // The server said so (a broker or a handler down for now): asked again on this connection,
            // after a backoff delay, until it answers otherwise (or a request's timeout).
            this.#sendLater(item);
            return;
          }
          // The connection went away first: send again after reconnecting (same idempotency key).
          if (this.#transport === t) this.#lost(t, e.message);
          else if (this.#state.status === 'connected') this.#send(item);
          return;
        }
        this.#remove(item);
        item.reject(e);
      },
    );
  }

  /** An upstream call found the server unreachable: treat the connection as lost. */
  #lost(t: ClientTransport, reason: string): void {
    if (this.#transport !== t) return;
    this.#transport = undefined;
    t.close();
    this.#abandon(t);
    this.#drop({ retry: 'backoff', reason, fallback: false });
  }

  /**
   * Transport `t` is gone (closed, dropped, dead): what is in flight over it is aborted, so that no
   * request waits on a connection that may never answer (a black-holing proxy); each comes back as
   * a lost connection and is sent again once connected, with the same idempotency key.
   */
  #abandon(t: ClientTransport | undefined): void {
    if (t === undefined) return;
    for (const item of this.#queue) if (item.sent && item.via === t) item.attempt?.abort();
  }

  /** Sends `item` again after a backoff delay that grows with the server's refusals in a row. */
  #sendLater(item: Upstream): void {
    const refused = (item.refused ?? 0) + 1;
    item.refused = refused;
    item.retry = this.#platform.setTimeout(() => {
      item.retry = undefined;
      // Sent meanwhile (a reconnect flushes the queue), or gone: nothing to do.
      if (!item.sent && this.#queue.includes(item) && this.#state.status === 'connected') this.#send(item);
    }, backoffDelay(this.#backoff, refused, this.#random));
  }

  #remove(item: Upstream): void {
    const i = this.#queue.indexOf(item);
    if (i !== -1) this.#queue.splice(i, 1);
    this.#clearTimers(item);
  }

  /** Rejects everything queued or in flight with `err`, and lets go of what is in flight (its fetch, its pending reply). */
  #failQueue(err: TidingsError): void {
    for (const item of this.#queue.splice(0)) {
      this.#clearTimers(item);
      item.reject(err);
      item.attempt?.abort();
    }
  }

  #clearTimers(item: Upstream): void {
    if (item.timer !== undefined) this.#platform.clearTimeout(item.timer);
    if (item.retry !== undefined) this.#platform.clearTimeout(item.retry);
    item.retry = undefined;
  }

  #memory(): TransportMemory | null {
    if (this.#opts.storage !== undefined) return this.#opts.storage;
    try {
      return (globalThis as { localStorage?: TransportMemory }).localStorage ?? null;
    } catch {
      return null;
    }
  }

  #memoryKey(): string {
    return `tidings:transport:${this.#base}`;
  }
}

/** Creates a client for the gateway at `url` (`https://example.com`). It connects on first use. */
export function createClient(url: string, options: ClientOptions = {}): Client {
  return new Client(url, options);
}
