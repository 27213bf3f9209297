/**
 * Client frames to session operations, with exactly one reply per request id. Used by the
 * bidirectional transport (WebSocket); every failure becomes an `error` frame with a code, and
 * never touches other clients.
 * @module
 */
import {

  parseJson,
  requestIdOf,
  TidingsError,
  toClientFrame,
  type ClientFrame,
  type ErrorBody,
  type Json,
  type RequestId,
  type ServerFrame,
} from '@tidings/protocol';
import type { Identity } from './auth.js';
import type { Publisher } from './publisher.js';
import type { Session } from './session.js';

/** Application request handlers for `rpc` frames, by method name. */
export type RpcHandlers = Readonly<Record<string, (data: Json | undefined, identity: Identity) => Promise<Json> | Json>>;

/** Sends a server frame on the connection. */
export type FrameSender = (frame: ServerFrame) => void;

/** Maps any thrown value to a wire error. */
export function errorBody(err: unknown): ErrorBody {
  if (err instanceof TidingsError) return { code: err.code, reason: err.message };
  return { code: 'internal', reason: 'internal error' };
}

/** Runs an rpc handler by name; `unknown_method` when none is registered. */
export async function callRpc(rpc: RpcHandlers, method: string, data: Json | undefined, identity: Identity): Promise<Json> {
  const handler = Object.hasOwn(rpc, method) ? rpc[method] : undefined;
  if (handler === undefined) throw new TidingsError('unknown_method', `no rpc method '${method}'`);
  return handler(data, identity);
}

export class CommandHandler {
  #badFrames = 0;

  constructor(
    private readonly session: Session,
    private readonly publisher: Publisher,
    private readonly rpc: RpcHandlers,
    private readonly send: FrameSender,
    private readonly maxBadFrames: number,
    private readonly onInternalError: (err: unknown) => void,
  ) {}

  /** Handles one text frame. Returns false when the peer sent too many bad frames in a row. */
  handle(text: string): boolean {
    let frame: ClientFrame;
    let parsed: unknown;
    try {
      parsed = parseJson(text);
      frame = toClientFrame(parsed);
    } catch (err) {
      this.#fail(requestIdOf(parsed), err);
      this.#badFrames += 1;
      return this.#badFrames < this.maxBadFrames;
    }
    this.#badFrames = 0;
    this.#run(frame).catch((err: unknown) => this.#fail(frame.id, err));
    return true;
  }

  async #run(frame: ClientFrame): Promise<void> {
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
      case 'ping':
        if (!session.closed) this.send(frame.id === undefined ? { type: 'pong' } : { type: 'pong', id: frame.id });
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
