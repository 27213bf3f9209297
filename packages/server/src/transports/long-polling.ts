/**
 * Long-polling transport: one request is one short-lived {@link Sink}. It collects what the session
 * delivers until the first message (plus the rest of that tick), the message limit or the hold
 * timeout, then answers with the messages, gaps and the cursor for the next poll. The server keeps
 * no state between polls: the cursor carries every channel's position.
 * @module
 */
import type { ServerResponse } from 'node:http';
import {
  encodePollResponse,
  formatCursorEntry,
  type Channel,
  type CloseName,
  type Gap,
  type Position,
  type RequestId,
  type SubscribeResult,
} from '@tidings/protocol';
import type { EncodedPublication } from '../encoded.js';
import type { Sink } from '../session.js';

export class PollConnection implements Sink {
  readonly #entries = new Map<Channel, string>();
  readonly #messages: string[] = [];
  readonly #gaps: Gap[] = [];
  #armed = false;
  #done = false;
  #timer: NodeJS.Timeout | undefined;
  #immediate: NodeJS.Immediate | undefined;

  constructor(
    private readonly res: ServerResponse,
    channels: readonly Channel[],
    private readonly maxMessages: number,
    private readonly onDone: () => void,
  ) {
    for (const channel of channels) this.#entries.set(channel, '');
    res.on('close', () => this.#finish(false));
  }

  get done(): boolean {
    return this.#done;
  }

  /** Nothing is queued in the socket until the single response is written. */
  get bufferedBytes(): number {
    return 0;
  }

  /** Starts waiting: answers now if anything is collected, else at the first delivery or after `holdMs`. */
  arm(holdMs: number): void {
    this.#armed = true;
    if (this.#done) return;
    if (this.#messages.length > 0 || this.#gaps.length > 0) this.#schedule();
    else this.#timer = setTimeout(() => this.#finish(true), holdMs);
  }

  subscribed(result: SubscribeResult, _id: RequestId | undefined): void {
    this.#set(result.channel, result.position);
  }

  message(enc: EncodedPublication): void {
    if (this.#done || this.#messages.length >= this.maxMessages) return;
    this.#messages.push(enc.json);
    this.#entries.set(enc.pub.channel, enc.cursorEntry);
    if (this.#messages.length >= this.maxMessages) this.#finish(true);
    else this.#schedule();
  }

  gap(gap: Gap): void {
    if (this.#done || this.#messages.length >= this.maxMessages) return;
    this.#gaps.push(gap);
    this.#set(gap.channel, gap.to);
    this.#schedule();
  }

  close(_name: CloseName, _reason: string): void {
    this.#finish(true);
  }

  #set(channel: Channel, position: Position): void {
    this.#entries.set(channel, formatCursorEntry(channel, position));
  }

  #schedule(): void {
    // Answer after the current tick so publications due together leave together.
    if (this.#armed && this.#immediate === undefined && !this.#done) this.#immediate = setImmediate(() => this.#finish(true));
  }

  #finish(respond: boolean): void {
    if (this.#done) return;
    this.#done = true;
    clearTimeout(this.#timer);
    if (this.#immediate !== undefined) clearImmediate(this.#immediate);
    if (respond && !this.res.writableEnded && !this.res.destroyed) {
      const cursor = [...this.#entries.values()].filter((e) => e !== '').join(',');
      const body = encodePollResponse(this.#messages, this.#gaps, cursor);
      this.res.writeHead(200, {
        'content-type': 'application/json; charset=utf-8',
        'cache-control': 'no-store',
        'content-length': Buffer.byteLength(body),
      });
      this.res.end(body);
    }
    this.onDone();
  }
}
