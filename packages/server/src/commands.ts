/**
 * Client frames to session operations, with exactly one reply per request id. Used by the
 * bidirectional transport (WebSocket); every failure becomes an `error` frame with a code, and
 * never touches other clients. Bad frames are counted over time (a leaky bucket), so good frames in
 * between do not forgive them; requests in flight per connection are bounded; once the session is
 * closed nothing more is run, even frames that arrived in the same packet.
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
  type RequestId,
  type ServerFrame,
} from '@tidings/protocol';
import type { Identity } from './auth.js';
import { errorBody } from './errors.js';
import type { Publisher } from './publisher.js';
import type { Session } from './session.js';
import type { DuplexAttachment } from './sink.js';

/** Application request handlers for `rpc` frames, by method name. */
export type RpcHandlers = Readonly<Record<string, (data: Json | undefined, identity: Identity) => Promise<Json> | Json>>;

/** Sends a server frame on the connection. */
export type FrameSender = (frame: ServerFrame) => void;

/** Runs an rpc handler by name; `unknown_method` when none is registered. */
export async function callRpc(rpc: RpcHandlers, method: string, data: Json | undefined, identity: Identity): Promise<Json> {
  const handler = Object.hasOwn(rpc, method) ? rpc[method] : undefined;
  if (handler === undefined) throw new TidingsError('unknown_method', `no rpc method '${method}'`);
  return handler(data, identity);
}

export interface CommandLimits {
  /** Bad frames tolerated per minute (and in a burst) before the connection is closed `bad_protocol`. */
  readonly maxBadFrames: number;
  /** Requests (subscribe, publish, rpc) running at once; more are refused with `limit_exceeded`. */
  readonly maxInflight: number;
}

const MINUTE = 60_000;

export class CommandHandler {
  /** Bad frames still tolerated; refills at `maxBadFrames` per minute. */
  #tolerance: number;
  #refilledAt = Date.now();
  #inflight = 0;

  constructor(
    private readonly session: Session,
    private readonly publisher: Publisher,
    private readonly rpc: RpcHandlers,
    private readonly send: FrameSender,
    private readonly limits: CommandLimits,
    private readonly onInternalError: (err: unknown) => void,
  ) {
    this.#tolerance = limits.maxBadFrames;
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
    if (frame.type === 'ping') {
      this.send(frame.id === undefined ? { type: 'pong' } : { type: 'pong', id: frame.id });
      return;
    }
    if (this.#inflight >= this.limits.maxInflight) {
      this.#fail(frame.id, new TidingsError('limit_exceeded', `at most ${this.limits.maxInflight} requests in flight per connection`));
      return;
    }
    this.#inflight += 1;
    this.#run(frame)
      .catch((err: unknown) => this.#fail(frame.id, err))
      .finally(() => {
        this.#inflight -= 1;
      });
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

  async #run(frame: Exclude<ClientFrame, { type: 'ping' }>): Promise<void> {
    const { session } = this;
    switch (frame.type) {
      case 'subscribe':
        // The session replies through its sink so the reply precedes recovered messages.
        await session.subscribe(frame.channel, frame.since, frame.id);
        return;
      case 'unsubscribe':
        session.unsubscribe(frame.channel);
        this.#reply(frame.id, {});
        return;
      case 'publish': {
        const result = await this.publisher.publish(frame.message, { kind: 'client', identity: session.identity });
        this.#reply(frame.id, result as unknown as Json);
        return;
      }
      case 'rpc':
        this.#reply(frame.id, await callRpc(this.rpc, frame.method, frame.data, session.identity));
        return;
    }
  }

  #reply(id: RequestId | undefined, result: Json): void {
    if (id !== undefined && !this.session.closed) this.send({ type: 'reply', id, result });
  }

  #fail(id: RequestId | undefined, err: unknown): void {
    if (!(err instanceof TidingsError)) this.onInternalError(err);
    if (this.session.closed) return;
    const error = errorBody(err);
    this.send(id === undefined ? { type: 'error', error } : { type: 'error', id, error });
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
}
