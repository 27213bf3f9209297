/**
 * Server-Sent Events transport (WHATWG HTML, "Server-sent events"): `GET /sse`. Each event carries
 * `id:` with the stream's position vector over all its channels, so a plain `EventSource` resumes
 * every channel through `Last-Event-ID`. The `event:`/`data:` lines are shared bytes; only the `id:`
 * line is per stream. Until `open()`, output is held so every id carries the full start vector.
 *
 * Once the headers are out, the stream writes to its socket itself, through its one bounded
 * {@link Outbox}, not through the HTTP response: HTTP/1.1 chunks it frames on its own (a
 * single-channel event is one shared, already framed buffer), so a turn's events leave in one write
 * and nothing is copied per subscriber. Ending the stream goes back through the response, which
 * writes the last chunk.
 * @module
 */
import { ServerResponse, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
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
import type { Admitted, Carrier, HttpRequest, HttpResponse, LaneHandler } from '../admission.js';
import { Beats } from '../beats.js';
import { has, put } from '../bits.js';
import type { EncodedPresence, EncodedPublication } from '../encoded.js';
import { sseCursorText, streamParams, subscribeAll } from '../http/params.js';
import { forgetHead } from '../http/respond.js';
import { Outbox } from '../outbox.js';
import { SLOW_CONSUMER, type Attachment, type Connector, type Sink } from '../sink.js';

export interface SseOptions {
  /** `retry:` hint; each stream gets up to 50% random extra. */
  readonly sseRetry: number;
  readonly sseHeartbeat: number;
  readonly maxBufferedBytes: number;
  /** How long an ending stream may take to flush before it is cut. */
  readonly closeGrace: number;
}

type Held = { readonly enc: EncodedPublication } | { readonly gap: Gap } | { readonly presence: EncodedPresence };

/** The response is chunked (HTTP/1.1; an HTTP/1.0 stream is raw, ended by closing). */
const CHUNKED = 1;
/** The stream was ended. */
const ENDED = 2;

/** `text` as one HTTP/1.1 chunk. */
const chunk = (text: string): string => `${Buffer.byteLength(text).toString(16)}\r\n${text}\r\n`;

export class SseConnection implements Sink {
  /** Set when the stream starts (its headers are out). */
  #out: Outbox | undefined;
  /** Flags: CHUNKED, ENDED (one field, see bits.ts). */
  #flags = 0;
  /** The request's channels, in its order. */
  readonly #channels: readonly Channel[];
  /** Cursor entry text per channel, in the same order ('' until known). Arrays, not a Map: a Map's table costs about 200 bytes per stream. */
  readonly #entries: string[];
  #id = '';
  #held: Held[] | undefined = [];
  /**
   * Bytes of message and presence JSON held until the stream opens: what the session's bound reads
   * meanwhile, since a channel subscribed first is live while the next ones subscribe.
   */
  #heldBytes = 0;
  /** Who asked to hear of a drain before the stream opened (a replay waiting for the reader). */
  #drainOnOpen: (() => void) | undefined;

  constructor(
    private readonly res: HttpResponse,
    channels: readonly Channel[],
    private readonly opts: SseOptions,
    /** The CORS headers of the request's origin (shared between streams). */
    private readonly cors: Readonly<Record<string, string>> = {},
  ) {
    // Copies of exactly their size: the request's list was built by pushing (room for 17).
    this.#channels = channels.slice();
    this.#entries = new Array<string>(channels.length).fill('');
  }

  /** The response closed (the transport's one close listener calls this). */
  closed(): void {
    this.#flags = put(this.#flags, ENDED, true);
    this.#out?.close();
  }

  get ended(): boolean {
    return has(this.#flags, ENDED);
  }

  get bufferedBytes(): number {
    return this.#out?.backlog ?? this.#heldBytes;
  }

  whenDrained(listener: () => void): void {
    if (has(this.#flags, ENDED)) return;
    if (this.#held !== undefined) this.#drainOnOpen = listener;
    else this.#out?.whenDrained(listener);
  }

  /** Writes text (a control event, the id line of a multi-channel stream), framed as a chunk when chunked. */
  #send(text: string): void {
    this.#out?.write(has(this.#flags, CHUNKED) ? chunk(text) : text);
  }

  owner: Attachment | undefined;

  /** Over the bound outside the publication path: the session closes, leaving its channels at once. */
  #shed(): void {
    if (this.owner !== undefined) this.owner.close('slow_consumer', SLOW_CONSUMER);
    else this.close('slow_consumer', SLOW_CONSUMER);
  }

  /** Sends headers, the `retry:` hint, a welcome event carrying the start vector, then held output. */
  open(): void {
    this.#startStream();
    this.#refreshId();
    const welcome = JSON.stringify({ channels: this.#channels, cursor: this.#id, heartbeat: this.opts.sseHeartbeat, session: this.owner?.id });
    this.#send(`event: ${SseEvent.welcome}\nid: ${this.#id}\ndata: ${welcome}\n\n`);
    const held = this.#held ?? [];
    this.#held = undefined;
    this.#heldBytes = 0;
    for (const item of held) {
      if ('enc' in item) this.message(item.enc);
      else if ('gap' in item) this.gap(item.gap);
      else this.presence(item.presence);
    }
    const drained = this.#drainOnOpen;
    this.#drainOnOpen = undefined;
    if (drained !== undefined) this.whenDrained(drained);
  }

  subscribed(result: SubscribeResult, _id: RequestId | undefined): void {
    this.#set(result.channel, result.position);
  }

  /** Hot path: the session checked the bound. */
  message(enc: EncodedPublication): void {
    if (this.#held !== undefined) {
      this.#held.push({ enc });
      this.#heldBytes += enc.json.length;
      return;
    }
    if (has(this.#flags, ENDED)) return;
    this.#setEntry(enc.pub.channel, enc.cursorEntry);
    const out = this.#out;
    if (out === undefined) return;
    if (this.#entries.length === 1) {
      // One channel: the id is the publication's own entry, so the whole event (chunk framing included) is shared bytes.
      this.#id = enc.cursorEntry;
      out.write(has(this.#flags, CHUNKED) ? enc.sseSingleChunk : enc.sseSingle);
      return;
    }
    this.#refreshId();
    const event = enc.sseEvent;
    const idLine = `id: ${this.#id}\n\n`;
    if (has(this.#flags, CHUNKED)) {
      out.write(`${(event.length + idLine.length).toString(16)}\r\n`);
      out.write(event);
      out.write(`${idLine}\r\n`);
    } else {
      out.write(event);
      out.write(idLine);
    }
  }

  gap(gap: Gap): void {
    if (this.#held !== undefined) {
      this.#held.push({ gap });
      return;
    }
    if (has(this.#flags, ENDED)) return;
    if (this.bufferedBytes > this.opts.maxBufferedBytes) {
      this.#shed();
      return;
    }
    this.#set(gap.channel, gap.to);
    this.#refreshId();
    this.#send(`event: ${SseEvent.gap}\nid: ${this.#id}\ndata: ${JSON.stringify(gap)}\n\n`);
  }

  /** `tidings:expiring`: the client should `POST /refresh` a new token (a control event: no `id:`). */
  expiring(expiresAt: number): void {
    if (has(this.#flags, ENDED) || this.#held !== undefined) return;
    this.#send(`event: ${SseEvent.expiring}\ndata: ${JSON.stringify({ expiresAt })}\n\n`);
  }

  /**
   * A `tidings:join` / `tidings:leave` event, shared bytes (the session checked the bound). It has no
   * `id:` line, so the stream's cursor (the browser's `Last-Event-ID`) stays where it was.
   */
  presence(enc: EncodedPresence): void {
    if (this.#held !== undefined) {
      this.#held.push({ presence: enc });
      this.#heldBytes += enc.json.length;
      return;
    }
    if (has(this.#flags, ENDED)) return;
    this.#out?.write(has(this.#flags, CHUNKED) ? enc.sseEventChunk : enc.sseEvent);
  }

  /** A comment line: keeps proxies from timing out the idle stream. */
  heartbeat(): void {
    if (this.#held !== undefined || has(this.#flags, ENDED)) return;
    if (this.bufferedBytes > this.opts.maxBufferedBytes) this.#shed();
    else this.#send(': hb\n\n');
  }

  /**
   * Ends the stream with a `tidings:error` event naming why. What waits in the outbox is dropped
   * first, so the event follows only what the socket already holds; a stream that cannot flush
   * within the grace period is cut.
   */
  close(name: CloseName, reason: string): void {
    if (has(this.#flags, ENDED)) return;
    this.#flags = put(this.#flags, ENDED, true);
    const { res } = this;
    // Closed while subscribing (shutdown, a failing channel, a resume that overflowed): a stream is
    // started only to say so, because a plain EventSource reconnects after an event but gives up on
    // an HTTP error.
    if (!res.headersSent) this.#startStream();
    // What this turn wrote (the start's `retry:`) goes out before the event; what waits for `drain` is dropped.
    this.#out?.close();
    res.end(`event: ${SseEvent.error}\ndata: ${JSON.stringify({ code: name, reason })}\n\n`);
    const cut = setTimeout(() => res.destroy(), this.opts.closeGrace).unref();
    res.on('close', () => clearTimeout(cut));
  }

  /** Cuts the stream now (shutdown deadline): nothing more is written to it. */
  destroy(): void {
    this.#out?.discard();
    this.res.destroy();
  }

  #startStream(): void {
    const { res } = this;
    res.writeHead(200, {
      ...this.cors,
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      // Tells nginx not to buffer this response.
      'x-accel-buffering': 'no',
    });
    const socket: Socket | null = res.socket;
    if (socket === null) return;
    // Corked until the outbox first writes out: the head, the retry line and what the subscriptions
    // send at once (a replay, their positions) leave in one write.
    socket.cork();
    // The headers go now; from here on the stream writes its own chunks to the socket.
    res.flushHeaders();
    forgetHead(res);
    socket.setNoDelay(true);
    this.#flags = put(this.#flags, CHUNKED, (res as unknown as { chunkedEncoding?: boolean }).chunkedEncoding === true);
    this.#out = new Outbox(socket, true);
    const { sseRetry } = this.opts;
    // Each stream gets up to 50% random extra, spreading reconnects.
    this.#send(`retry: ${sseRetry + Math.floor(Math.random() * (sseRetry / 2 + 1))}\n`);
  }

  #set(channel: Channel, position: Position): void {
    this.#setEntry(channel, formatCursorEntry(channel, position));
  }

  #setEntry(channel: Channel, entry: string): void {
    const i = this.#channels.length === 1 ? 0 : this.#channels.indexOf(channel);
    if (i !== -1) this.#entries[i] = entry;
  }

  #refreshId(): void {
    let id = '';
    for (const entry of this.#entries) {
      if (entry === '') continue;
      id = id === '' ? entry : `${id},${entry}`;
    }
    this.#id = id;
  }
}

const heartbeat = (conn: SseConnection): void => conn.heartbeat();

/**
 * The gateway's HTTP responses (its server's `ServerResponse` class). One that carries an SSE stream
 * holds it, so the one close listener every stream shares finds it: a listener made per stream would
 * cost each one a function and a scope for as long as it lives. (A fast-lane response has the same field.)
 */
export class GatewayResponse<Request extends IncomingMessage = IncomingMessage> extends ServerResponse<Request> {
  stream: unknown = undefined;
  /** A client connection's slots (admission's `SlotCarrier`). */
  slots: unknown = undefined;
}

export class SseTransport {
  /** Open streams, each with its heartbeat comment one `sseHeartbeat` after the last. */
  readonly #streams: Beats<SseConnection>;

  constructor(
    private readonly opts: SseOptions,
    private readonly connector: Connector,
  ) {
    this.#streams = new Beats(opts.sseHeartbeat, heartbeat);
    const streams = this.#streams;
    this.#onClose = function (this: HttpResponse): void {
      const conn = (this as Carrier).stream;
      if (!(conn instanceof SseConnection)) return;
      conn.closed();
      streams.delete(conn);
      conn.owner?.detach();
    };
  }

  /** The close listener of every stream's response. */
  readonly #onClose: (this: HttpResponse) => void;

  /** Open streams. */
  get size(): number {
    return this.#streams.size;
  }

  /** `GET /sse` */
  readonly handle: LaneHandler = async (req: HttpRequest, res: HttpResponse, admitted: Admitted) => {
    const params = streamParams(admitted.target, sseCursorText(req, admitted.target));
    const { conn, session } = this.#open(res, params.channels, admitted);
    try {
      await subscribeAll(session, params.channels, params.cursor);
    } catch (err) {
      session.detach();
      throw err;
    }
    if (conn.ended) return;
    conn.open();
    this.#streams.add(conn);
  };

  /** The stream's life: its close listener is shared by every stream and finds it through the response. */
  #open(res: HttpResponse, channels: readonly Channel[], { identity, cors }: Admitted): { conn: SseConnection; session: Attachment } {
    const conn = new SseConnection(res, channels, this.opts, cors);
    const session = this.connector.open('sse', conn, identity);
    conn.owner = session;
    (res as Carrier).stream = conn;
    res.on('close', this.#onClose);
    return { conn, session };
  }

  /** How often {@link heartbeat} must be called, in ms. */
  get heartbeatTick(): number {
    return this.#streams.tickMs;
  }

  /** A heartbeat comment on every stream whose turn has come (call every {@link heartbeatTick}). */
  heartbeat(): void {
    this.#streams.tick();
  }

  /** Cuts every stream now. */
  destroyAll(): void {
    for (const conn of this.#streams) conn.destroy();
  }
}
