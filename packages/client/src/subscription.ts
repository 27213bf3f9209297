/**
 * A client subscription: events (`message`, `gap`, `error`, and `join` / `leave` in presence
 * namespaces), async iteration, who is present, and the position to resume from. Messages pass
 * through a {@link Sequencer}, so each arrives once and in order (on an ephemeral channel: once, as
 * it comes, never held back for one that was missed).
 * @module
 */
import { TidingsError, type Channel, type Gap, type Message, type Position, type PresenceClient } from '@tidings/protocol';
import { Emitter } from './emitter.js';
import { Sequencer } from './sequencer.js';

export interface SubscriptionEvents {
  message: [Message];
  gap: [Gap];
  error: [TidingsError];
  /** A client joined the channel (presence namespaces; WebSocket and SSE, not long polling). */
  join: [PresenceClient];
  /** A client left the channel (unsubscribed, disconnected, or its server node went away). */
  leave: [PresenceClient];
}

/** Owner hooks the client gives each subscription. */
export interface SubscriptionOwner {
  remove(sub: Subscription): void;
  /** Called with every delivered message (type routing on the client). */
  routed(message: Message): void;
  /** Asks the server who is present in `channel`. */
  presence(channel: Channel): Promise<PresenceClient[]>;
  listenerError(err: unknown): void;
}

export class Subscription implements AsyncIterable<Message> {
  readonly channel: Channel;
  readonly #events: Emitter<SubscriptionEvents>;
  readonly #seq: Sequencer;
  readonly #queue: Message[] = [];
  #waiters: Array<(r: IteratorResult<Message>) => void> = [];
  #failure: TidingsError | undefined;
  #active = true;
  /** Messages are queued only once someone iterates. */
  #iterated = false;
  /**
   * Where the application is: the last message or gap handed to it. Behind the sequencer's position
   * only while a batch released at once (messages that waited for a missing one) is being handed over.
   */
  #handed: Position | undefined;

  constructor(
    channel: Channel,
    since: Position | undefined,
    private readonly owner: SubscriptionOwner,
    private readonly maxQueued: number,
  ) {
    this.channel = channel;
    this.#seq = new Sequencer(since);
    this.#events = new Emitter((err) => owner.listenerError(err));
  }

  /**
   * Where to resume from: the last message or gap end handed to the application (persist it, in a
   * message handler too, and pass it back as `since`).
   */
  get position(): Position | undefined {
    return this.#handed ?? this.#seq.position;
  }

  get active(): boolean {
    return this.#active;
  }

  on<K extends keyof SubscriptionEvents>(event: K, listener: (...args: SubscriptionEvents[K]) => void): () => void {
    return this.#events.on(event, listener);
  }

  /**
   * Who is present in the channel now, on every server node (namespaces with `presence: true`;
   * otherwise it rejects with `presence_disabled`). Listed: clients subscribed over WebSocket or SSE,
   * this one included once its subscription started; long-polling clients are not listed. Keep it
   * current with the `join` and `leave` events, and ask again after a reconnect.
   */
  presence(): Promise<PresenceClient[]> {
    if (!this.#active) return Promise.reject(new TidingsError('not_subscribed', `not subscribed to ${this.channel}`));
    return this.owner.presence(this.channel);
  }

  /** Stops receiving; releases listeners and ends async iteration. */
  unsubscribe(): void {
    if (!this.#active) return;
    this.owner.remove(this);
    this.end(undefined);
  }

  [Symbol.asyncIterator](): AsyncIterator<Message> {
    this.#iterated = true;
    return {
      next: () => {
        const m = this.#queue.shift();
        if (m !== undefined) return Promise.resolve({ value: m, done: false });
        if (this.#failure !== undefined) return Promise.reject(this.#failure);
        if (!this.#active) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => this.#waiters.push(resolve));
      },
      return: () => {
        this.unsubscribe();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }

  /** @internal The server's start position for this subscription. */
  started(position: Position): void {
    this.#seq.start(position);
    this.#handed = undefined;
  }

  /** @internal Returns false when the message cannot be placed and the subscription must resync. */
  accept(message: Message): boolean {
    const ready = this.#seq.push(message);
    if (ready === undefined) {
      this.#seq.reset();
      return false;
    }
    for (const m of ready) this.#deliver(m);
    return true;
  }

  /** @internal */
  gap(gap: Gap): void {
    const before = this.#seq.position;
    const ready = this.#seq.skip(gap);
    if (this.#seq.position !== before) {
      this.#handed = gap.to;
      this.#events.emit('gap', gap);
    }
    for (const m of ready) this.#deliver(m);
  }

  /** @internal A client joined or left the channel. */
  presenceChange(kind: 'join' | 'leave', client: PresenceClient): void {
    if (this.#active) this.#events.emit(kind, client);
  }

  /** @internal Ends the subscription, with an error when the server refused it. */
  end(err: TidingsError | undefined): void {
    if (!this.#active) return;
    this.#active = false;
    if (err !== undefined) {
      this.#failure = err;
      this.#events.emit('error', err);
    }
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w({ value: undefined, done: true });
    this.#events.clear();
  }

  #deliver(m: Message): void {
    this.#handed = m.position;
    this.#events.emit('message', m);
    this.owner.routed(m);
    const waiter = this.#waiters.shift();
    if (waiter !== undefined) waiter({ value: m, done: false });
    else if (this.#iterated && this.#queue.length < this.maxQueued) this.#queue.push(m);
    else if (this.#iterated) {
      // Ended as an unsubscribe ends it: the client lets go of it (and the server of its channel).
      this.owner.remove(this);
      this.end(new TidingsError('limit_exceeded', `async iterator fell ${this.maxQueued} messages behind`));
    }
  }

}
