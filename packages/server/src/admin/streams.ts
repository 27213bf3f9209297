/**
 * The admin dashboard's event streams (`GET /admin/events`) on this node: plain SSE, one `hello`
 * event, then a `tick` every second built once and written to every stream. Bounded: at most
 * {@link MAX_STREAMS} streams per node, and a stream whose reader falls more than
 * {@link MAX_BUFFERED} bytes behind is ended (the browser's EventSource comes back by itself).
 * @module
 */
import type { ServerResponse } from 'node:http';
import { RetryLater } from '../limits.js';

/** Most admin streams open on one node. */
export const MAX_STREAMS = 32;
/** Bytes a stream may have waiting before it is ended. */
export const MAX_BUFFERED = 512 * 1024;

/** One SSE event (the data is JSON, so it has no line breaks). */
export const sseEvent = (event: string, data: unknown): string => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;

export class AdminStreams {
  readonly #open = new Set<ServerResponse>();

  get size(): number {
    return this.#open.size;
  }

  /** Starts a stream with `first` (its opening events); throws a refusal past MAX_STREAMS. */
  open(res: ServerResponse, first: string): void {
    if (this.#open.size >= MAX_STREAMS) throw new RetryLater('limit_exceeded', `at most ${MAX_STREAMS} admin streams per node`, 5000);
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store, no-transform',
      'x-accel-buffering': 'no',
    });
    res.socket?.setNoDelay(true);
    res.write(`retry: 2000\n\n${first}`);
    this.#open.add(res);
    res.once('close', () => this.#open.delete(res));
  }

  /** Writes the same text to every stream; a stream too far behind is ended. */
  broadcast(text: string): void {
    for (const res of this.#open) {
      if (res.writableLength > MAX_BUFFERED) {
        this.#open.delete(res);
        res.destroy();
      } else {
        res.write(text);
      }
    }
  }

  /** Ends every stream (the gateway is closing). */
  closeAll(): void {
    for (const res of this.#open) res.end();
    this.#open.clear();
  }
}
