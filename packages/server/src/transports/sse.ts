/**
 * Server-Sent Events transport (WHATWG HTML, "Server-sent events"). Each event carries `id:` with
 * the stream's position vector over all its channels, so a plain `EventSource` resumes every
 * channel through `Last-Event-ID`. The `event:`/`data:` lines are shared bytes; only the `id:` line
 * is per stream. Until `open()`, output is held so every id carries the full start vector.
 * @module
 */
import type { ServerResponse } from 'node:http';
import {
  formatCursorEntry,
  SseEvent,
  type Channel,
  type CloseName,
  type Gap,
  type Position,
  type RequestId,
  type SubscribeResult,
} from '@tidings/protocol';
import type { EncodedPublication } from '../encoded.js';
import { TickWriter } from '../flush.js';
import type { Sink } from '../session.js';

type Held = { readonly enc: EncodedPublication } | { readonly gap: Gap };

export class SseConnection implements Sink {
  readonly #out: TickWriter;
  /** Cursor entry text per channel, in the request's channel order. */
  readonly #entries = new Map<Channel, string>();
  #id = '';
  #held: Held[] | undefined = [];
  #ended = false;

  constructor(
    private readonly res: ServerResponse,
    channels: readonly Channel[],
  ) {
    this.#out = new TickWriter(res);
    for (const channel of channels) this.#entries.set(channel, '');
    res.on('close', () => {
      this.#ended = true;
    });
  }

  get ended(): boolean {
    return this.#ended;
  }

  get bufferedBytes(): number {
    return this.#out.backlog;
  }

  /** Sends headers, the `retry:` hint, a welcome event carrying the start vector, then held output. */
  open(retryMs: number, heartbeatMs: number): void {
    const { res } = this;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      // Tells nginx not to buffer this response.
      'x-accel-buffering': 'no',
    });
    res.socket?.setNoDelay(true);
    this.#out.write(`retry: ${retryMs}\n`);
    this.#refreshId();
    const welcome = JSON.stringify({ channels: [...this.#entries.keys()], cursor: this.#id, heartbeat: heartbeatMs });
    this.#out.write(`event: ${SseEvent.welcome}\nid: ${this.#id}\ndata: ${welcome}\n\n`);
    const held = this.#held ?? [];
    this.#held = undefined;
    for (const item of held) {
      if ('enc' in item) this.message(item.enc);
      else this.gap(item.gap);
    }
  }

  subscribed(result: SubscribeResult, _id: RequestId | undefined): void {
    this.#set(result.channel, result.position);
  }

  message(enc: EncodedPublication): void {
    if (this.#held !== undefined) {
      this.#held.push({ enc });
      return;
    }
    if (this.#ended) return;
    this.#entries.set(enc.pub.channel, enc.cursorEntry);
    if (this.#entries.size === 1) {
      // One channel: the id is the publication's own entry, so the whole event is shared bytes.
      this.#id = enc.cursorEntry;
      this.#out.write(enc.sseSingle);
      return;
    }
    this.#refreshId();
    this.#out.write(enc.sseEvent);
    this.#out.write(`id: ${this.#id}\n\n`);
  }

  gap(gap: Gap): void {
    if (this.#held !== undefined) {
      this.#held.push({ gap });
      return;
    }
    if (this.#ended) return;
    this.#set(gap.channel, gap.to);
    this.#refreshId();
    this.#out.write(`event: ${SseEvent.gap}\nid: ${this.#id}\ndata: ${JSON.stringify(gap)}\n\n`);
  }

  /** A comment line: keeps proxies from timing out the idle stream. */
  heartbeat(): void {
    if (this.#held === undefined && !this.#ended) this.res.write(': hb\n\n');
  }

  close(name: CloseName, reason: string): void {
    if (this.#ended) return;
    this.#ended = true;
    if (this.#held === undefined && name !== 'slow_consumer') {
      this.res.write(`event: ${SseEvent.error}\ndata: ${JSON.stringify({ code: name, reason })}\n\n`);
    }
    if (name === 'slow_consumer') this.res.destroy();
    else this.res.end();
  }

  #set(channel: Channel, position: Position): void {
    this.#entries.set(channel, formatCursorEntry(channel, position));
  }

  #refreshId(): void {
    let id = '';
    for (const entry of this.#entries.values()) {
      if (entry === '') continue;
      id = id === '' ? entry : `${id},${entry}`;
    }
    this.#id = id;
  }
}
