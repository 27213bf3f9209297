/**
 * One logical client: identity, subscriptions and their positions, and backpressure on its sink.
 * A session never knows which transport carries it: WebSocket, an SSE stream or a single long
 * poll all implement {@link Sink}. Once closed, a session subscribes nothing: a subscribe that was
 * in flight when it closed leaves the hub again and fails. In a namespace with presence, a session
 * whose sink can carry joins and leaves (WebSocket, SSE; not a long poll) is listed as present in
 * each channel from when its subscription is live until it unsubscribes or closes.
 * @module
 */
import {
  TidingsError,
  type Channel,
  type CloseName,
  type Position,
  type RequestId,
} from '@tidings/protocol';
import type { Authenticator, Identity } from './auth.js';
import type { Broker, PresenceEntry, Publication } from './brokers/broker.js';
import { EncodedPublication, type EncodedPresence } from './encoded.js';
import type { Hub, Subscriber } from './hub.js';
import type { Metrics } from './metrics.js';
import type { GatewayOptions } from './options.js';
import type { Presence } from './presence.js';
import { namespaceOf } from './publisher.js';
import { planResume } from './resume.js';
import { SLOW_CONSUMER, type Attachment, type Sink } from './sink.js';

/** What every session of a gateway shares. */
export interface SessionContext {
  readonly hub: Hub;
  readonly broker: Broker;
  readonly options: GatewayOptions;
  readonly auth: Authenticator;
  readonly metrics: Metrics;
  /** This node's id: session ids start with it, so they are unique across a cluster. */
  readonly nodeId: string;
  /** This node's presence entries. */
  readonly presence: Presence;
}

class Subscription implements Subscriber {
  /** Live publications held while history is read; undefined once live. */
  buffer: EncodedPublication[] | undefined = [];
  last: Position | undefined;
  /** Whether the session is listed as present in this channel. */
  present = false;

  constructor(
    readonly session: Session,
    readonly channel: Channel,
    readonly ephemeral: boolean,
  ) {}

  receive(enc: EncodedPublication): void {
    const buffer = this.buffer;
    if (buffer !== undefined) {
      if (buffer.length < this.session.ctx.options.maxResumeBuffer) buffer.push(enc);
      else this.session.close('slow_consumer', `more than ${buffer.length} publications arrived during resume`);
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
    this.session.send(enc);
  }

  /** Joins and leaves reach the client once the subscription is live: until then, the list it asks for covers them. */
  presence(enc: EncodedPresence): void {
    if (this.buffer === undefined) this.session.presence(enc);
  }

  fail(reason: string): void {
    this.session.close('unavailable', reason);
  }
}

let sessionCounter = 0;

/** Longest a timer may wait (setTimeout's limit); a later expiry re-arms. */
const MAX_TIMER = 2 ** 31 - 1;
/** The warning comes this long before the token expires (or halfway through a shorter lifetime). */
const EXPIRY_WARNING = 60_000;

export class Session implements Attachment {
  readonly id: string;
  readonly #subs = new Map<Channel, Subscription>();
  #closed = false;
  #entry: PresenceEntry | undefined;
  #identity: Identity;
  /** The warning before the token expires, then the close at expiry. */
  #expiryTimer: NodeJS.Timeout | undefined;

  /** `onDetached` runs once, when the session lets go of everything (closed by either side). */
  constructor(
    readonly ctx: SessionContext,
    readonly sink: Sink,
    identity: Identity,
    private readonly onDetached?: () => void,
  ) {
    this.#identity = identity;
    sessionCounter = (sessionCounter + 1) % Number.MAX_SAFE_INTEGER;
    this.id = `${ctx.nodeId}-${sessionCounter.toString(36)}`;
  }

  get closed(): boolean {
    return this.#closed;
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
    clearTimeout(this.#expiryTimer);
    this.#expiryTimer = undefined;
    const expiresAt = this.#identity.expiresAt;
    if (expiresAt === undefined || this.#closed) return;
    const left = expiresAt - Date.now();
    if (left <= 0) {
      this.close('token_expired', 'the token expired; refresh it');
      return;
    }
    const warnIn = left - Math.min(EXPIRY_WARNING, left / 2);
    const warned = this.sink.expiring === undefined;
    const next = warned ? left : warnIn;
    this.#expiryTimer = setTimeout(() => {
      this.#expiryTimer = undefined;
      if (this.#closed) return;
      if (next >= MAX_TIMER) return this.watchExpiry();
      if (warned) this.close('token_expired', 'the token expired; refresh it');
      else {
        this.sink.expiring?.(expiresAt);
        this.#expiryTimer = setTimeout(() => this.close('token_expired', 'the token expired; refresh it'), Math.max(0, expiresAt - Date.now()));
        this.#expiryTimer.unref();
      }
    }, Math.min(next, MAX_TIMER));
    this.#expiryTimer.unref();
  }

  /**
   * Replaces the connection's credentials with a new token (for the same user) without
   * reconnecting; subscriptions stay. Resolves with the new expiry (ms), or undefined if none.
   */
  async refresh(token: string): Promise<number | undefined> {
    const { auth } = this.ctx;
    if (auth.refresh === undefined) throw new TidingsError('bad_request', 'this gateway has no tokens to refresh');
    const next = await auth.refresh(this.#identity, token);
    if (this.#closed) throw new TidingsError('unavailable', 'the connection closed while refreshing');
    if (next.user !== this.#identity.user || next.anonymous !== this.#identity.anonymous) {
      throw new TidingsError('forbidden', 'a refresh must carry a token for the same user');
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
    const { options, auth, hub, broker } = this.ctx;
    this.#refuseIfClosed(channel);
    const ns = namespaceOf(options, channel);
    if (!auth.canSubscribe(this.identity, channel)) throw new TidingsError('forbidden', `not allowed to subscribe to ${channel}`);
    if (this.#subs.has(channel)) throw new TidingsError('already_subscribed', `already subscribed to ${channel}`);
    if (this.#subs.size >= options.maxSubscriptions) {
      throw new TidingsError('limit_exceeded', `at most ${options.maxSubscriptions} subscriptions per connection`);
    }
    const sub = new Subscription(this, channel, ns.ephemeral);
    this.#subs.set(channel, sub);
    try {
      await hub.join(channel, sub);
      this.#refuseIfClosed(channel);
      // Starting from now needs only the top position; resuming needs what history holds after `since`.
      const page = await broker.history(channel, since, since === undefined || ns.ephemeral ? 0 : ns.historySize);
      this.#refuseIfClosed(channel);
      if (this.#subs.get(channel) !== sub) throw new TidingsError('not_subscribed', `unsubscribed from ${channel} while subscribing`);
      const buffered = sub.buffer ?? [];
      const encOf = new Map<Publication, EncodedPublication>(buffered.map((e) => [e.pub, e]));
      const plan = planResume(channel, since, page, buffered.map((e) => e.pub), ns.ephemeral);
      const start = since !== undefined && !ns.ephemeral ? since : page.top;
      this.sink.subscribed({ channel, position: start, recovered: plan.recovered }, id);
      for (const step of plan.steps) {
        if (step.gap !== undefined) this.sink.gap(step.gap);
        else this.send(encOf.get(step.pub) ?? new EncodedPublication(step.pub));
      }
      sub.last = plan.last;
      sub.buffer = undefined;
      // Live: a client that can hear joins and leaves is listed as present (a long poll is not).
      if (ns.presence && this.sink.presence !== undefined) {
        this.ctx.presence.add(channel, this.#presenceEntry());
        sub.present = true;
      }
    } catch (err) {
      if (this.#subs.get(channel) === sub) this.#subs.delete(channel);
      hub.leave(channel, sub);
      throw err;
    }
  }

  unsubscribe(channel: Channel): void {
    const sub = this.#subs.get(channel);
    if (sub === undefined) throw new TidingsError('not_subscribed', `not subscribed to ${channel}`);
    this.#subs.delete(channel);
    this.ctx.hub.leave(channel, sub);
    if (sub.present) this.ctx.presence.remove(channel, this.id);
  }

  /** Hot path: sheds ephemeral publications first, then the whole connection, when the sink backs up. */
  send(enc: EncodedPublication): void {
    if (this.#closed) return;
    if (this.sink.bufferedBytes > this.ctx.options.maxBufferedBytes) {
      if (enc.pub.ephemeral) {
        this.ctx.metrics.dropped('ephemeral_backpressure');
        return;
      }
      this.close('slow_consumer', SLOW_CONSUMER);
      return;
    }
    this.ctx.metrics.delivered(1);
    this.sink.message(enc);
  }

  /** A join or leave: an ephemeral signal, shed (never a reason to disconnect) when the sink backs up. */
  presence(enc: EncodedPresence): void {
    if (this.#closed || this.sink.presence === undefined) return;
    if (this.sink.bufferedBytes > this.ctx.options.maxBufferedBytes) {
      this.ctx.metrics.dropped('ephemeral_backpressure');
      return;
    }
    this.sink.presence(enc);
  }

  /** Leaves every channel and closes the sink. Idempotent. */
  close(name: CloseName, reason: string): void {
    if (this.#closed) return;
    if (name === 'slow_consumer') this.ctx.metrics.dropped('slow_consumer');
    this.detach();
    this.sink.close(name, reason);
  }

  /** Leaves every channel without touching the sink (the transport already closed). Idempotent. */
  detach(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#expiryTimer);
    this.#expiryTimer = undefined;
    for (const [channel, sub] of this.#subs) {
      this.ctx.hub.leave(channel, sub);
      if (sub.present) this.ctx.presence.remove(channel, this.id);
    }
    this.#subs.clear();
    this.onDetached?.();
  }

  /** How this session is listed in the presence of its channels. */
  #presenceEntry(): PresenceEntry {
    const { info } = this.identity;
    return (this.#entry ??= { client: this.id, user: this.identity.user, info: info === undefined ? undefined : JSON.stringify(info), node: this.ctx.nodeId });
  }

  #refuseIfClosed(channel: Channel): void {
    if (this.#closed) throw new TidingsError('unavailable', `connection closed while subscribing to ${channel}`);
  }
}
