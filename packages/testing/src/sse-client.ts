/**
 * A raw SSE client over node:http, parsing with the client SDK's (property-tested) event-stream
 * parser, so tests see exactly what is on the wire (ids, event names, comments, retry) and can
 * drop the connection at any moment.
 * @module
 */
import { request, type ClientRequest, type IncomingMessage } from 'node:http';
import { SseParser, type SseEvent } from '@tidings/client';
import { Signal } from './wait.js';

/** One dispatched event. */
export type SseEventRecord = SseEvent;

export class RawSseClient {
  readonly events: SseEventRecord[] = [];
  readonly #parser = new SseParser();
  status = 0;
  headers: IncomingMessage['headers'] = {};
  body = '';
  /** The last event id seen, as a browser keeps it for `Last-Event-ID`. */
  lastEventId = '';
  #req: ClientRequest | undefined;
  #res: IncomingMessage | undefined;
  readonly #signal = new Signal();
  #ended = false;

  /** Opens `url` (with `Last-Event-ID` when given) and resolves once the status line arrives. */
  /** Comment lines seen (heartbeats). */
  get comments(): number {
    return this.#parser.comments;
  }

  /** The `retry:` hint, in ms. */
  get retry(): number | undefined {
    return this.#parser.retry;
  }

  static open(url: string, lastEventId?: string): Promise<RawSseClient> {
    const client = new RawSseClient();
    return client.#open(url, lastEventId).then(() => client);
  }

  get ended(): boolean {
    return this.#ended;
  }

  #open(url: string, lastEventId?: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const headers: Record<string, string> = { accept: 'text/event-stream' };
      if (lastEventId !== undefined && lastEventId !== '') headers['last-event-id'] = lastEventId;
      this.lastEventId = lastEventId ?? '';
      const req = request(url, { headers }, (res) => {
        this.status = res.statusCode ?? 0;
        this.headers = res.headers;
        this.#res = res;
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => this.#feed(chunk));
        res.on('end', () => this.#end());
        res.on('error', () => this.#end());
        resolve();
      });
      req.on('error', (err) => {
        this.#end();
        reject(err);
      });
      req.end();
      this.#req = req;
    });
  }

  #end(): void {
    this.#ended = true;
    this.#signal.wake();
  }

  #feed(chunk: string): void {
    this.body += chunk;
    if (this.status === 200) {
      for (const e of this.#parser.feed(chunk)) {
        this.events.push(e);
        this.lastEventId = e.id;
      }
    }
    this.#signal.wake();
  }

  /** Resolves when `predicate` holds (checked on every chunk), or rejects after `timeoutMs`. */
  until(predicate: (c: this) => boolean, timeoutMs = 5000): Promise<void> {
    return this.#signal.until(() => predicate(this), timeoutMs, () => `SSE: condition not met (${this.events.length} events)`, 100);
  }

  /** Events with a given name. */
  named(event: string): SseEventRecord[] {
    return this.events.filter((e) => e.event === event);
  }

  /** Stops reading (a slow consumer): the server's writes pile up. */
  pause(): void {
    this.#res?.pause();
  }

  /** Reads again. */
  resume(): void {
    this.#res?.resume();
  }

  /** Drops the connection abruptly. */
  close(): void {
    this.#req?.destroy();
    this.#ended = true;
  }
}
