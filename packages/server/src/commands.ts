/**
 * Client frames to session operations, with exactly one reply per request id. Used by the
 * bidirectional transport (WebSocket); every failure becomes an `error` frame with a code, and
 * never touches other clients. Bad frames are counted over time (a leaky bucket), so good frames in
 * between do not forgive them. Requests in flight per connection are bounded without refusing any:
 * past the bound, requests wait in order and the connection stops reading (TCP pushes back on the
 * client) until they drain. Once the session is closed nothing more is run, even frames that
 * arrived in the same packet.
 * @module
 */
import {
  parseJson,
  requestIdOf,
  TidingsError,
  toClientFrame,
  type Channel,
  type ClientFrame,
  type CloseName,
  type Json,
  type Position,
  type PresenceResult,
  type RequestId,
  type ServerFrame,
} from '@tidings/protocol';
import type { Identity } from './auth.js';
import { errorBody } from './errors.js';
import { RetryLater, TokenBucket } from './limits.js';
import type { Origin, Publisher } from './publisher.js';

const API_ORIGIN: Origin = Object.freeze({ kind: 'api' });
/** Requests a server connection may have running at once (a client's limit is `maxInflight`). */
const SERVER_INFLIGHT = 1024;
import type { Session } from './session.js';
import type { DuplexAttachment } from './sink.js';

/** Application request handlers for `rpc` frames, by method name. */
export type RpcHandlers = Readonly<Record<string, (data: Json | undefined, identity: Identity) => Promise<Json> | Json>>;

/** Who is present in a channel, as `identity` may see it (`presence` frames). */
export type PresenceLister = (channel: Channel, identity: Identity) => Promise<PresenceResult>;

/** Sends a server frame on the connection. */
/** Where replies, errors and pongs go (the connection's sink). */
export interface FrameSender {
  frame(frame: ServerFrame): void;
}

/** Runs an rpc handler by name; `unknown_method` when none is registered. */
export async function callRpc(rpc: RpcHandlers, method: string, data: Json | undefined, identity: Identity): Promise<Json> {
  const handler = Object.hasOwn(rpc, method) ? rpc[method] : undefined;
  if (handler === undefined) throw new TidingsError('unknown_method', `no rpc method '${method}'`);
  return handler(data, identity);
}

export interface CommandLimits {
  /** Bad frames tolerated per minute (and in a burst) before the connection is closed `bad_protocol`. */
  readonly maxBadFrames: number;
  /** Requests (subscribe, publish, rpc, presence) running at once; later ones wait while the connection stops reading. */
  readonly maxInflight: number;
  /** Frames per second (twice that in a burst); excess frames are refused with `limit_exceeded`. */
  readonly maxFrameRate: number;
  /** Publishes per second (twice that in a burst). */
  readonly maxPublishRate: number;
}

/** Inbound flow control of the connection. */
export interface Flow {
  /** Stop reading from the peer (frames already received may still arrive). */
  pause(): void;
  resume(): void;
}

type Request = Exclude<ClientFrame, { type: 'ping' } | { type: 'unsubscribe' }>;

/** A request and, for a subscribe, the unsubscribes of its channel that arrived while it ran (run when it is done). */
interface Job {
  readonly frame: Request;
  after: Array<() => void> | undefined;
}

const MINUTE = 60_000;

export class CommandHandler {
  /** Bad frames still tolerated; refills at `maxBadFrames` per minute. */
  #tolerance: number;
  #refilledAt = Date.now();
  #inflight = 0;
  /** Requests received while `maxInflight` were running; the connection is paused while any wait. */
  /** Made when a request first has to wait (absent while none does: most connections never fill their in-flight limit). */
  #waiting: Job[] | undefined;
  /**
   * The latest subscribe waiting or running, per channel: an unsubscribe of that channel is applied
   * after it, in order. Made while a subscribe runs, dropped when none does.
   */
  #subscribing: Map<Channel, Job> | undefined;
  readonly #frames: TokenBucket;
  /** Made at the first client publish (most connections never publish). */
  #publishes: TokenBucket | undefined;
  /** A server connection (the API key): no frame rate limit, and more requests in flight, for a backend's pipelined publishes. */
  readonly #server: boolean;
  readonly #maxInflight: number;

  constructor(
    private readonly session: Session,
    private readonly publisher: Publisher,
    private readonly rpc: RpcHandlers,
    private readonly presence: PresenceLister,
    private readonly out: FrameSender,
    private readonly flow: Flow,
    private readonly limits: CommandLimits,
    /** Told of a bug, with the session it happened in (one function for every connection). */
    private readonly onInternalError: (err: unknown, session: string) => void,
  ) {
    this.#tolerance = limits.maxBadFrames;
    this.#server = session.identity.server === true;
    this.#maxInflight = this.#server ? Math.max(limits.maxInflight, SERVER_INFLIGHT) : limits.maxInflight;
    this.#frames = new TokenBucket(limits.maxFrameRate, limits.maxFrameRate * 2);
  }

  /** Handles one text frame. Closes the session when the peer sent too many bad frames. */
  handle(text: string): void {
    if (this.session.closed) return;
    let frame: ClientFrame;
    let parsed: unknown;
    try {
      parsed = parseJson(text);
      frame = toClientFrame(parsed);
    } catch (err) {
      this.#fail(requestIdOf(parsed), err);
      this.#badFrame();
      return;
    }
    if (!this.#server && !this.#frames.take()) {
      this.#fail(frame.id, new RetryLater('limit_exceeded', `at most ${this.limits.maxFrameRate} frames per second`, this.#frames.wait));
      return;
    }
    this.request(frame);
  }

  /**
   * Carries out one request as if its frame had arrived (the subscriptions named in the connect
   * request); its reply or error goes out like any other.
   */
  request(frame: ClientFrame): void {
    if (this.session.closed) return;
    switch (frame.type) {
      case 'ping':
        this.out.frame(frame.id === undefined ? { type: 'pong' } : { type: 'pong', id: frame.id });
        return;
      case 'unsubscribe': {
        const { channel, id } = frame;
        const unsubscribe = (): void => {
          if (this.session.closed) return;
          try {
            this.session.unsubscribe(channel);
            this.#reply(id, {});
          } catch (err) {
            this.#fail(id, err);
          }
        };
        const pending = this.#subscribing?.get(channel);
        if (pending === undefined) unsubscribe();
        else if (pending.after === undefined) pending.after = [unsubscribe];
        // One waits behind the subscribe: more (which would then find nothing to unsubscribe) are answered
        // at once, so a subscribe an authorization hook holds up holds no growing list of them.
        else this.#fail(id, new TidingsError('not_subscribed', `an unsubscribe of ${channel} already waits for its subscribe`));
        return;
      }
    }
    const job: Job = { frame, after: undefined };
    // A subscribe is tracked from the moment it arrives, so an unsubscribe behind it waits for it.
    if (frame.type === 'subscribe') (this.#subscribing ??= new Map()).set(frame.channel, job);
    if (this.#inflight < this.#maxInflight && this.#waiting === undefined) {
      this.#start(job);
      return;
    }
    // The queue holds at most what the socket had already delivered when it was paused.
    if (this.#waiting === undefined) {
      this.flow.pause();
      this.#waiting = [];
    }
    this.#waiting.push(job);
  }

  #start(job: Job): void {
    this.#inflight += 1;
    this.#run(job.frame).then(
      () => this.#done(job),
      (err: unknown) => {
        this.#fail(job.frame.id, err);
        this.#done(job);
      },
    );
  }

  #done(job: Job): void {
    this.#inflight -= 1;
    this.#settle(job);
    this.#next();
  }

  /** A subscribe is over (done, or dropped with its connection): the unsubscribes behind it run. */
  #settle(job: Job): void {
    const { frame } = job;
    if (frame.type !== 'subscribe') return;
    const subscribing = this.#subscribing;
    if (subscribing?.get(frame.channel) === job) {
      subscribing.delete(frame.channel);
      if (subscribing.size === 0) this.#subscribing = undefined;
    }
    const after = job.after;
    job.after = undefined;
    if (after !== undefined) for (const run of after) run();
  }

  #next(): void {
    const waiting = this.#waiting;
    if (waiting === undefined) return;
    if (this.session.closed) {
      this.#waiting = undefined;
      for (const job of waiting) this.#settle(job);
      return;
    }
    while (this.#inflight < this.#maxInflight && waiting.length > 0) this.#start(waiting.shift() as Job);
    if (waiting.length === 0) {
      this.#waiting = undefined;
      this.flow.resume();
    }
  }

  /** Reports a refusal that belongs to no request (an `error` frame without an id). */
  refuse(err: unknown): void {
    this.#fail(undefined, err);
  }

  /** A binary frame: this protocol is text only. */
  binary(): void {
    if (this.session.closed) return;
    this.#fail(undefined, new TidingsError('bad_frame', 'frames must be text (JSON)'));
    this.#badFrame();
  }

  #badFrame(): void {
    const now = Date.now();
    const { maxBadFrames } = this.limits;
    this.#tolerance = Math.min(maxBadFrames, this.#tolerance + ((now - this.#refilledAt) * maxBadFrames) / MINUTE);
    this.#refilledAt = now;
    this.#tolerance -= 1;
    // Less than one whole bad frame left: this was the `maxBadFrames`-th within the window.
    if (this.#tolerance < 1) this.session.close('bad_protocol', `${maxBadFrames} malformed frames within a minute`);
  }

  async #run(frame: Request): Promise<void> {
    const { session } = this;
    switch (frame.type) {
      case 'subscribe':
        // The session replies through its sink so the reply precedes recovered messages.
        await session.subscribe(frame.channel, frame.since, frame.id);
        return;
      case 'publish': {
        // A server connection publishes as the server API does; a client under its limits.
        const origin: Origin = session.identity.server === true ? API_ORIGIN : { kind: 'client', identity: session.identity, rate: (this.#publishes ??= new TokenBucket(this.limits.maxPublishRate, this.limits.maxPublishRate * 2)) };
        const result = await this.publisher.publish(frame.message, origin);
        this.#reply(frame.id, result as unknown as Json);
        return;
      }
      case 'rpc':
        this.#reply(frame.id, await callRpc(this.rpc, frame.method, frame.data, session.identity));
        return;
      case 'presence':
        this.#reply(frame.id, (await this.presence(frame.channel, session.identity)) as unknown as Json);
        return;
      case 'refresh':
        this.#reply(frame.id, { expiresAt: (await session.refresh(frame.token)) ?? null });
        return;
    }
  }

  #reply(id: RequestId | undefined, result: Json): void {
    if (id !== undefined && !this.session.closed) this.out.frame({ type: 'reply', id, result });
  }

  #fail(id: RequestId | undefined, err: unknown): void {
    if (!(err instanceof TidingsError)) this.onInternalError(err, this.session.id);
    else this.session.ctx.metrics.refused(err.code);
    if (this.session.closed) return;
    const error = errorBody(err);
    this.out.frame(id === undefined ? { type: 'error', error } : { type: 'error', id, error });
  }
}

/** A WebSocket's session: a session plus the handler of its inbound frames. */
export class DuplexSession implements DuplexAttachment {
  constructor(
    readonly session: Session,
    private readonly commands: CommandHandler,
  ) {}

  get id(): string {
    return this.session.id;
  }

  get closed(): boolean {
    return this.session.closed;
  }

  subscribe(channel: Channel, since: Position | undefined, id?: RequestId): Promise<void> {
    return this.session.subscribe(channel, since, id);
  }

  close(name: CloseName, reason: string): void {
    this.session.close(name, reason);
  }

  detach(): void {
    this.session.detach();
  }

  receive(text: string): void {
    this.commands.handle(text);
  }

  receiveBinary(): void {
    this.commands.binary();
  }

  request(frame: ClientFrame): void {
    this.commands.request(frame);
  }

  refuse(err: unknown): void {
    this.commands.refuse(err);
  }
}
