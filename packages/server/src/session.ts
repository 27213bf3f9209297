/**
 * One logical client: identity, subscriptions and their positions, and backpressure on its sink.
 * A session never knows which transport carries it: WebSocket, an SSE stream or a single long
 * poll all implement {@link Sink}. Once closed, a session subscribes nothing: a subscribe that was
 * in flight when it closed leaves the hub again and fails. In a namespace with presence, a session
 * whose sink can carry joins and leaves (WebSocket, SSE; not a long poll) is listed as present in
 * each channel from when its subscription is live until it unsubscribes or closes.
 *
 * Backpressure: while the sink is backed up (more than `maxBufferedBytes` waiting), each namespace's
 * `backpressure` policy decides what happens to its publications for this session: `drop` leaves them
 * out, `disconnect` closes the session `slow_consumer` (the client resumes from its position), and
 * `conflate` keeps only the latest pending publication per channel and `type` (the conflation key),
 * delivered once the sink drains to its low-water mark. Pending entries are references to the shared
 * {@link EncodedPublication}s, bounded per session; past the bound the session is closed `slow_consumer`.
 *
 * Replay: what a resume is owed from history is encoded for this session alone, so it is handed to
 * the sink as the sink drains, never more than half of `maxBufferedBytes` ahead of it (the other half
 * is room for live publications meanwhile). A subscription whose replay waits for the reader stays
 * buffering its live publications (at most `maxResumeBuffer` of them and `maxBufferedBytes` of their
 * message JSON; past either the session is closed `slow_consumer`) and goes live once the replay is done.
 * Waiting, a replay holds where its client is, not the history read for it: it reads again, a part
 * at a time, as the reader drains.
 * @module
 */
import {
  TidingsError,
  type Channel,
  type CloseName,
  type Position,
  type RequestId,
} from '@tidings/protocol';
import type { Authenticator, Identity, TransportName } from './auth.js';
import { ask, type HooksHolder } from './authorize.js';
import { has, put } from './bits.js';
import { MAX_TIMER, systemClock, type Clock, type ClockTimer } from './clock.js';
import type { Broker, HistoryPage, PresenceEntry, Publication } from './brokers/broker.js';
import { EncodedPublication, type EncodedPresence } from './encoded.js';
import type { Hub, Subscriber } from './hub.js';
import type { Metrics, ResumeOutcome } from './metrics.js';
import type { Backpressure, GatewayOptions } from './options.js';
import type { Presence } from './presence.js';
import { namespaceOf } from './publisher.js';
import { planPart, planResume, type ResumeStep } from './resume.js';
import { SLOW_CONSUMER, type Attachment, type Sink } from './sink.js';
import { SmallMap } from './small-map.js';

/** What every session of a gateway shares. */
export interface SessionContext {
  readonly hub: Hub;
  readonly broker: Broker;
  readonly options: GatewayOptions;
  readonly auth: Authenticator;
  readonly metrics: Metrics;
  /** This node's id. */
  readonly nodeId: string;
  /**
   * What session ids start with: the node's id, a dash, and 8 hex digits drawn when the gateway was
   * made. So ids are unique across a cluster, and across restarts of a node that keeps its id (a
   * stable pod name): a session of the node's last life still listed somewhere is never taken for a new one.
   */
  readonly idPrefix: string;
  /** This node's presence entries. */
  readonly presence: Presence;
  /** The host's authorization hooks, asked after the authenticator allowed (loaded at listen). */
  readonly authorize?: HooksHolder;
  /** The clock token expiry runs on (default: the system's). */
  readonly clock?: Clock;
}

/** Conflation keys pending per session, per subscription it may hold (`maxSubscriptions` times this). */
export const CONFLATE_KEYS_PER_SUBSCRIPTION = 8;

/** What the send path needs of a subscription: its namespace's policy, and what it holds back. */
export interface Outlet {
  readonly backpressure: Backpressure;
  /**
   * `conflate` only: the latest publication per `type` held back while the sink is behind, in the
   * order of their positions (a replaced key moves to the end); undefined when none is.
   */
  pending: Map<string | undefined, EncodedPublication> | undefined;
}

class Subscription implements Subscriber, Outlet {
  /** Live publications held while history is read; undefined once live. */
  buffer: EncodedPublication[] | undefined = [];
  /** Bytes of message JSON in {@link buffer}. */
  bufferBytes = 0;
  last: Position | undefined;
  /** Whether the session is listed as present in this channel. */
  present = false;
  pending: Map<string | undefined, EncodedPublication> | undefined;

  constructor(
    readonly session: Session,
    readonly channel: Channel,
    readonly ephemeral: boolean,
    readonly backpressure: Backpressure,
  ) {}

  receive(enc: EncodedPublication): void {
    const buffer = this.buffer;
    if (buffer !== undefined) {
      // Owed to this client on top of what its sink holds: as bounded by bytes as the sink is.
      const { maxResumeBuffer, maxBufferedBytes } = this.session.ctx.options;
      const size = enc.json.length;
      if (buffer.length >= maxResumeBuffer) this.session.close('slow_consumer', `more than ${buffer.length} publications arrived during resume`);
      else if (this.bufferBytes + size > maxBufferedBytes) this.session.close('slow_consumer', `more than ${maxBufferedBytes} bytes of publications arrived during resume`);
      else {
        buffer.push(enc);
        this.bufferBytes += size;
      }
      return;
    }
    const p = enc.pub.position;
    const last = this.last as Position;
    if (p.epoch === last.epoch) {
      if (p.seq <= last.seq) return;
      if (p.seq !== last.seq + 1 && !this.ephemeral) {
        this.session.sink.gap({ channel: this.channel, from: last, to: { epoch: p.epoch, seq: p.seq - 1 }, reason: 'trimmed' });
      }
    } else if (!this.ephemeral) {
      this.session.sink.gap({ channel: this.channel, from: last, to: { epoch: p.epoch, seq: p.seq - 1 }, reason: 'epoch' });
    }
    this.last = p;
    this.session.send(enc, this);
  }

  /** Joins and leaves reach the client once the subscription is live: until then, the list it asks for covers them. */
  presence(enc: EncodedPresence): void {
    if (this.buffer === undefined) this.session.presence(enc);
  }

  fail(reason: string): void {
    this.session.close('unavailable', reason);
  }
}

/**
 * A resume's replay as far as it went: the steps of its plan, where the client is, and what going live
 * needs. While it waits for the reader it keeps no steps (a history page read for this session alone),
 * and plans again from where the client is once the reader drains.
 */
interface Replay {
  readonly sub: Subscription;
  steps: readonly ResumeStep[];
  /** The next step to hand to the sink. */
  at: number;
  /** The encodings of live publications the plan took from the subscription's buffer. */
  encOf: ReadonlyMap<Publication, EncodedPublication>;
  /**
   * The position after the plan: where the first plan ended until a later part plans differently
   * (the channel moved to another epoch meanwhile). Later parts read up to it, and the live
   * publications after it follow.
   */
  last: Position;
  /** How many of the buffered live publications the plan took: those after them follow it. */
  planned: number;
  /** The position after the last step handed to the sink: where the client is. */
  sent: Position;
  /** The plan stops short of the channel's top: there is more to read after it. */
  more: boolean;
  /** Steps handed to the sink in the last part: the next read asks for about twice as many. */
  lastPart: number;
  /**
   * How many publications a history read may return: the namespace's `historySize`; 0 in an ephemeral
   * namespace, whose replay is only live publications (shared with every subscriber) and is kept.
   */
  readonly limit: number;
  /** List the session as present in the channel once live. */
  readonly present: boolean;
}

const NO_STEPS: readonly ResumeStep[] = [];
/** The fewest publications a replay's later history read asks for. */
const MIN_PART = 8;
const NO_ENCODINGS: ReadonlyMap<Publication, EncodedPublication> = new Map();

/** The sink has been asked to say when it drains. */
const AWAITING_DRAIN = 1;
/** Closed (by either side): nothing more is sent or subscribed. */
const CLOSED = 2;
/** A subscription resumed from a position already (the first one counts a reconnect). */
const RESUMED = 4;

let sessionCounter = 0;

/** The warning comes this long before the token expires (or halfway through a shorter lifetime). */
const EXPIRY_WARNING = 60_000;

export class Session implements Attachment {
  readonly id: string;
  readonly #subs = new SmallMap<Channel, Subscription>();
  /** Subscriptions holding publications back (conflate), in the order they started to; made the first time one does. */
  #behind: Set<Outlet> | undefined;
  /** Conflation keys held back over all subscriptions. */
  #pendingKeys = 0;
  /** Flags: AWAITING_DRAIN, CLOSED, RESUMED (one field, see bits.ts). */
  #flags = 0;
  #entry: PresenceEntry | undefined;
  #identity: Identity;
  /** Why the server closed the session; undefined while open, or when the client went away first. */
  closedAs: CloseName | undefined;
  /** When the session opened (ms since the epoch). */
  readonly openedAt = Date.now();
  /** The warning before the token expires, then the close at expiry. */
  #expiryTimer: ClockTimer | undefined;
  /** Bytes of replayed history handed to the sink since it last drained. */
  #replayed = 0;
  /** Replays waiting for the sink to drain; woken by the drain, or by the close. */
  #replayWaiters: Array<() => void> | undefined;

  /** `onDetached` runs once, when the session lets go of everything (closed by either side). */
  constructor(
    readonly ctx: SessionContext,
    readonly sink: Sink,
    identity: Identity,
    private readonly onDetached?: (session: Session) => void,
    readonly transport: TransportName = 'http',
  ) {
    this.#identity = identity;
    sessionCounter = (sessionCounter + 1) % Number.MAX_SAFE_INTEGER;
    this.id = `${ctx.idPrefix}${sessionCounter.toString(36)}`;
  }

  get closed(): boolean {
    return has(this.#flags, CLOSED);
  }

  /** Who the client is, as its latest token says. */
  get identity(): Identity {
    return this.#identity;
  }

  /**
   * Starts watching the token's expiry: the sink is warned before it (`expiring`), and the session
   * is closed `token_expired` at it. Called once the session is set up, and after every refresh.
   */
  watchExpiry(): void {
    const clock = this.ctx.clock ?? systemClock;
    clock.clearTimeout(this.#expiryTimer);
    this.#expiryTimer = undefined;
    const expiresAt = this.#identity.expiresAt;
    if (expiresAt === undefined || has(this.#flags, CLOSED)) return;
    const left = expiresAt - clock.now();
    if (left <= 0) {
      this.close('token_expired', 'the token expired; refresh it');
      return;
    }
    const warnIn = left - Math.min(EXPIRY_WARNING, left / 2);
    const warned = this.sink.expiring === undefined;
    const next = warned ? left : warnIn;
    this.#expiryTimer = clock.setTimeout(
      () => {
        this.#expiryTimer = undefined;
        if (has(this.#flags, CLOSED)) return;
        if (next >= MAX_TIMER) return this.watchExpiry();
        if (warned) this.close('token_expired', 'the token expired; refresh it');
        else {
          this.sink.expiring?.(expiresAt);
          this.#expiryTimer = clock.setTimeout(() => this.close('token_expired', 'the token expired; refresh it'), Math.max(0, expiresAt - clock.now()));
        }
      },
      Math.min(next, MAX_TIMER),
    );
  }

  /**
   * Replaces the connection's credentials with a new token (for the same user) without
   * reconnecting; subscriptions stay. Resolves with the new expiry (ms), or undefined if none. A
   * token that does not grant every channel subscribed is refused `forbidden`, leaving the
   * connection as it was (until the old token's expiry): no subscription outlives the tokens that
   * granted it.
   */
  async refresh(token: string): Promise<number | undefined> {
    const { auth } = this.ctx;
    if (auth.refresh === undefined) throw new TidingsError('bad_request', 'this gateway has no tokens to refresh');
    const next = await auth.refresh(this.#identity, token);
    if (has(this.#flags, CLOSED)) throw new TidingsError('unavailable', 'the connection closed while refreshing');
    if (next.user !== this.#identity.user || next.anonymous !== this.#identity.anonymous) {
      throw new TidingsError('forbidden', 'a refresh must carry a token for the same user');
    }
    const lost = [...this.#subs.keys()].filter((channel) => !auth.canSubscribe(next, channel));
    if (lost.length > 0) {
      const named = lost.length > 3 ? `${lost.slice(0, 3).join(', ')} and ${lost.length - 3} more` : lost.join(', ');
      throw new TidingsError('forbidden', `the new token does not grant ${named}: unsubscribe first, or reconnect with it`);
    }
    this.#identity = next;
    this.watchExpiry();
    return next.expiresAt;
  }

  /** Channels currently subscribed (including ones still recovering). */
  get channels(): IterableIterator<Channel> {
    return this.#subs.keys();
  }

  /**
   * Subscribes: joins the live feed, reads history after `since`, then sends (through the sink)
   * the start position, any gap, the missed publications and from then on live ones.
   */
  async subscribe(channel: Channel, since: Position | undefined, id?: RequestId): Promise<void> {
    const { options, auth, hub } = this.ctx;
    this.#refuseIfClosed(channel);
    const ns = namespaceOf(options, channel);
    const server = this.identity.server === true;
    if (!server && !auth.canSubscribe(this.identity, channel)) throw new TidingsError('forbidden', `not allowed to subscribe to ${channel}`);
    // A server connection (the API key) is the server API: no client's authorization applies.
    const hooks = server ? undefined : this.ctx.authorize?.hooks;
    if (hooks?.subscribe !== undefined) {
      const { subscribe } = hooks;
      await ask(() => subscribe(this.identity, channel), `subscribe to ${channel}`);
      this.#refuseIfClosed(channel);
    }
    if (this.#subs.has(channel)) throw new TidingsError('already_subscribed', `already subscribed to ${channel}`);
    if (this.#subs.size >= options.maxSubscriptions) {
      throw new TidingsError('limit_exceeded', `at most ${options.maxSubscriptions} subscriptions per connection`);
    }
    const sub = new Subscription(this, channel, ns.ephemeral, ns.backpressure);
    this.#subs.set(channel, sub);
    try {
      await hub.join(channel, sub);
      this.#refuseIfClosed(channel);
      // Starting from now needs only the top position; resuming needs what history holds after `since`.
      const page = await this.#history(channel, since, since === undefined || ns.ephemeral ? 0 : ns.historySize);
      this.#refuseIfClosed(channel);
      if (this.#subs.get(channel) !== sub) throw new TidingsError('not_subscribed', `unsubscribed from ${channel} while subscribing`);
      const buffered = sub.buffer ?? [];
      const encOf = new Map<Publication, EncodedPublication>(buffered.map((e) => [e.pub, e]));
      const plan = planResume(channel, since, page, buffered.map((e) => e.pub), ns.ephemeral);
      const start = since !== undefined && !ns.ephemeral ? since : page.top;
      this.sink.subscribed({ channel, position: start, recovered: plan.recovered }, id);
      if (since !== undefined && !ns.ephemeral) this.#countResume(plan.recovered ? 'recovered' : (plan.steps.find((s) => s.gap !== undefined)?.gap?.reason ?? 'trimmed'));
      // A client that can hear joins and leaves is listed as present once live (a long poll is not).
      const replay: Replay = {
        sub,
        steps: plan.steps,
        at: 0,
        encOf,
        last: plan.last,
        planned: buffered.length,
        sent: start,
        more: false,
        lastPart: 0,
        limit: ns.ephemeral ? 0 : ns.historySize,
        present: ns.presence && this.sink.presence !== undefined && !server,
      };
      this.#replay(replay);
      replay.lastPart = replay.at;
      // The rest waits for the reader. The subscribe is done: an SSE stream opens only once every
      // channel is, and a WebSocket client has its reply.
      if (replay.at < replay.steps.length && !has(this.#flags, CLOSED)) this.#replayLater(replay).then(undefined, (err: unknown) => this.#replayFailed(err));
    } catch (err) {
      if (this.#subs.get(channel) === sub) this.#subs.delete(channel);
      hub.leave(channel, sub);
      throw err;
    }
  }

  /**
   * Hands the replay's steps to the sink while the session's replay budget lasts, then goes live when
   * all are. The first publication after a drain goes whatever the sink holds, so every replay moves.
   */
  #replay(replay: Replay): void {
    const { sub, steps } = replay;
    while (replay.at < steps.length) {
      if (has(this.#flags, CLOSED)) return;
      const step = steps[replay.at] as ResumeStep;
      if (step.gap !== undefined) {
        this.sink.gap(step.gap);
        replay.sent = step.gap.to;
      } else {
        if (this.#replayed > 0 && this.#replayFull) return;
        const enc = replay.encOf.get(step.pub) ?? new EncodedPublication(step.pub);
        // The message JSON's length stands for its size on the wire. A sink that never backs up (a long
        // poll) is not paged, and need not have every replayed publication encoded.
        if (this.sink.whenDrained !== undefined) this.#replayed += enc.json.length;
        this.send(enc, sub);
        replay.sent = step.pub.position;
      }
      replay.at += 1;
    }
    if (has(this.#flags, CLOSED) || replay.more) return;
    const buffer = sub.buffer ?? [];
    sub.last = replay.last;
    sub.buffer = undefined;
    sub.bufferBytes = 0;
    // Live publications that came while the replay waited for the reader follow it (those before are in it).
    for (let i = replay.planned; i < buffer.length; i++) sub.receive(buffer[i] as EncodedPublication);
    if (replay.present && !has(this.#flags, CLOSED)) {
      this.ctx.presence.add(sub.channel, this.#presenceEntry());
      sub.present = true;
    }
  }

  /** Whether the sink holds half its bound with what replays gave it (the other half is room for live publications). */
  get #replayFull(): boolean {
    return this.sink.whenDrained !== undefined && this.sink.bufferedBytes + this.#replayed > this.ctx.options.maxBufferedBytes / 2;
  }

  /**
   * The rest of a replay, a part per drain of the sink, while the session and the subscription last.
   * Waiting, it lets go of its steps: what is left of its first plan is read from history again when
   * the reader has drained, about twice what the last part handed over, and planned from where the
   * client is (what history no longer has by then is a gap, told as any other); what was published
   * after the first plan follows from the live buffer, as it would have. So a client that does not
   * read holds a position per channel here, not a history page per channel, and one that reads slowly
   * has its history read about twice over in all.
   */
  async #replayLater(replay: Replay): Promise<void> {
    const { sub } = replay;
    const reread = replay.limit > 0;
    while (replay.at < replay.steps.length || replay.more) {
      if (replay.at < replay.steps.length || this.#replayFull) {
        if (reread) {
          replay.steps = NO_STEPS;
          replay.at = 0;
          replay.encOf = NO_ENCODINGS;
          replay.more = true;
        }
        // Woken with no room (other replays took it first), it waits again before reading anything.
        do {
          await new Promise<void>((resolve) => {
            (this.#replayWaiters ??= []).push(resolve);
            this.#awaitDrain();
          });
          if (has(this.#flags, CLOSED) || this.#subs.get(sub.channel) !== sub) return;
        } while (this.#replayed > 0 && this.#replayFull);
      }
      if (reread) {
        // Across epochs a part is not cut short: the channel's change is planned whole.
        const limit = replay.sent.epoch !== replay.last.epoch ? replay.limit : Math.min(replay.limit, Math.max(MIN_PART, 2 * replay.lastPart));
        let page: HistoryPage;
        try {
          page = await this.#history(sub.channel, replay.sent, limit);
        } catch (err) {
          // The broker is down: the client resumes from what it has once it is back.
          this.close('unavailable', `history unavailable: ${err instanceof Error ? err.message : String(err)}; reconnect and resume`);
          return;
        }
        if (has(this.#flags, CLOSED) || this.#subs.get(sub.channel) !== sub) return;
        const buffered = sub.buffer ?? [];
        const plan = planPart(sub.channel, replay.sent, page, buffered.map((e) => e.pub), limit, replay.last);
        replay.steps = plan.steps;
        replay.at = 0;
        replay.encOf = new Map(buffered.map((e) => [e.pub, e]));
        replay.more = plan.more;
        if (plan.whole) {
          replay.last = plan.last;
          replay.planned = buffered.length;
        }
      }
      this.#replay(replay);
      replay.lastPart = replay.at;
    }
  }

  /** A replay failed (a bug: a sink write threw): the client resumes from what it has. */
  #replayFailed(err: unknown): void {
    this.close('internal', `resuming failed: ${err instanceof Error ? err.message : String(err)}; reconnect and resume`);
  }

  /** Asks the sink to say when it drains, once for every purpose (held-back publications, replays). */
  #awaitDrain(): void {
    if (has(this.#flags, AWAITING_DRAIN) || this.sink.whenDrained === undefined) return;
    this.#flags = put(this.#flags, AWAITING_DRAIN, true);
    this.sink.whenDrained((this.#onDrained ??= () => this.#drained()));
  }

  /** Wakes the replays waiting for the sink (it drained, or the session closed). */
  #wakeReplays(): void {
    const waiters = this.#replayWaiters;
    if (waiters === undefined) return;
    this.#replayWaiters = undefined;
    for (const wake of waiters) wake();
  }

  /** A history read, timed for the broker metrics. */
  async #history(channel: Channel, since: Position | undefined, limit: number): Promise<HistoryPage> {
    const started = performance.now();
    try {
      const page = await this.ctx.broker.history(channel, since, limit);
      this.ctx.metrics.brokerCall('history', performance.now() - started, true);
      return page;
    } catch (err) {
      this.ctx.metrics.brokerCall('history', performance.now() - started, false);
      throw err;
    }
  }

  #countResume(outcome: ResumeOutcome): void {
    const { metrics } = this.ctx;
    metrics.resumed(this.transport, outcome);
    // A poll carries its cursor every time; only a WebSocket or an SSE stream resuming is a reconnect.
    if (!has(this.#flags, RESUMED) && (this.transport === 'websocket' || this.transport === 'sse')) metrics.reconnected(this.transport);
    this.#flags = put(this.#flags, RESUMED, true);
  }

  unsubscribe(channel: Channel): void {
    const sub = this.#subs.get(channel);
    if (sub === undefined) throw new TidingsError('not_subscribed', `not subscribed to ${channel}`);
    this.#subs.delete(channel);
    this.ctx.hub.leave(channel, sub);
    if (sub.present) this.ctx.presence.remove(channel, this.id);
    this.#forget(sub);
    // A replay of the channel waiting for the reader lets go of its page now, not at the next drain
    // (which a client that does not read never brings); the others wait again.
    if (sub.buffer !== undefined) this.#wakeReplays();
  }

  /**
   * Hot path: delivers one publication of `sub`'s channel, or, while the sink is backed up, applies the
   * namespace's backpressure policy. A `conflate` publication also waits while earlier ones of this
   * session are held back, so nothing overtakes them.
   */
  send(enc: EncodedPublication, sub: Outlet): void {
    if (has(this.#flags, CLOSED)) return;
    const policy = sub.backpressure;
    if (policy === 'conflate' && this.#pendingKeys > 0) {
      this.#conflate(sub, enc);
      return;
    }
    if (this.sink.bufferedBytes > this.ctx.options.maxBufferedBytes) {
      if (policy === 'drop') this.ctx.metrics.dropped('ephemeral_backpressure');
      else if (policy === 'conflate') this.#conflate(sub, enc);
      else this.close('slow_consumer', SLOW_CONSUMER);
      return;
    }
    this.ctx.metrics.delivered(enc.arrivedAt);
    this.sink.message(enc);
  }

  /** Holds `enc` back as the latest of its key (channel and `type`); past the bound, the session is shed. */
  #conflate(sub: Outlet, enc: EncodedPublication): void {
    if (this.sink.whenDrained === undefined) {
      // A sink that cannot say when it drains cannot deliver held-back publications.
      this.close('slow_consumer', SLOW_CONSUMER);
      return;
    }
    let pending = sub.pending;
    if (pending === undefined) {
      pending = sub.pending = new Map();
      (this.#behind ??= new Set()).add(sub);
    }
    const key = enc.pub.type;
    if (pending.delete(key)) {
      this.ctx.metrics.dropped('conflated');
    } else {
      if (this.#pendingKeys >= this.ctx.options.maxSubscriptions * CONFLATE_KEYS_PER_SUBSCRIPTION) {
        this.close('slow_consumer', `${SLOW_CONSUMER} (more than ${this.#pendingKeys} conflated keys pending)`);
        return;
      }
      this.#pendingKeys += 1;
    }
    // Re-inserted at the end: pending entries stay in position order within the channel.
    pending.set(key, enc);
    this.#awaitDrain();
  }

  /**
   * The sink drained: sends what was held back, in order, up to what fits under the bound (at least
   * one), and waits for the next drain for the rest.
   */
  /** The drain listener, made the first time a publication is held back (most sessions never need it). */
  #onDrained: (() => void) | undefined;

  #drained(): void {
    this.#flags = put(this.#flags, AWAITING_DRAIN, false);
    if (has(this.#flags, CLOSED)) return;
    this.#replayed = 0;
    this.#wakeReplays();
    let budget = this.ctx.options.maxBufferedBytes - this.sink.bufferedBytes;
    let sent = 0;
    for (const sub of this.#behind ?? []) {
      const pending = sub.pending;
      if (pending === undefined) {
        this.#behind?.delete(sub);
        continue;
      }
      for (const [key, enc] of pending) {
        if (has(this.#flags, CLOSED)) return;
        if (sent > 0 && budget <= 0) break;
        pending.delete(key);
        this.#pendingKeys -= 1;
        sent += 1;
        // The message JSON's length stands for its size on the wire (no per-session encoding).
        budget -= enc.json.length;
        this.ctx.metrics.delivered(enc.arrivedAt);
        this.sink.message(enc);
      }
      if (pending.size > 0) break;
      sub.pending = undefined;
      this.#behind?.delete(sub);
    }
    if (this.#pendingKeys > 0 && !has(this.#flags, CLOSED)) this.#awaitDrain();
  }

  /** Drops what `sub` holds back (it left its channel). */
  #forget(sub: Outlet): void {
    if (sub.pending === undefined) return;
    this.#pendingKeys -= sub.pending.size;
    sub.pending = undefined;
    this.#behind?.delete(sub);
  }

  /** A join or leave: an ephemeral signal, shed (never a reason to disconnect) when the sink backs up. */
  presence(enc: EncodedPresence): void {
    if (has(this.#flags, CLOSED) || this.sink.presence === undefined) return;
    if (this.sink.bufferedBytes > this.ctx.options.maxBufferedBytes) {
      this.ctx.metrics.dropped('ephemeral_backpressure');
      return;
    }
    this.sink.presence(enc);
  }

  /** Leaves every channel and closes the sink. Idempotent. */
  close(name: CloseName, reason: string): void {
    if (has(this.#flags, CLOSED)) return;
    if (name === 'slow_consumer') this.ctx.metrics.dropped('slow_consumer');
    this.closedAs = name;
    this.detach();
    this.sink.close(name, reason);
  }

  /** Leaves every channel without touching the sink (the transport already closed). Idempotent. */
  detach(): void {
    if (has(this.#flags, CLOSED)) return;
    this.#flags = put(this.#flags, CLOSED, true);
    (this.ctx.clock ?? systemClock).clearTimeout(this.#expiryTimer);
    this.#expiryTimer = undefined;
    for (const [channel, sub] of this.#subs) {
      this.ctx.hub.leave(channel, sub);
      if (sub.present) this.ctx.presence.remove(channel, this.id);
      sub.pending = undefined;
    }
    this.#subs.clear();
    this.#behind = undefined;
    this.#pendingKeys = 0;
    this.#wakeReplays();
    this.onDetached?.(this);
  }

  /** How this session is listed in the presence of its channels. */
  #presenceEntry(): PresenceEntry {
    const { info } = this.identity;
    return (this.#entry ??= { client: this.id, user: this.identity.user, info: info === undefined ? undefined : JSON.stringify(info), node: this.ctx.nodeId });
  }

  #refuseIfClosed(channel: Channel): void {
    if (has(this.#flags, CLOSED)) throw new TidingsError('unavailable', `connection closed while subscribing to ${channel}`);
  }
}
