/**
 * A publication with its wire encodings, each built at most once and shared by every subscriber:
 * the message JSON, the WebSocket frame (header included) and the SSE event body. Nothing here is
 * per subscriber; the per-stream SSE `id:` line is written separately by the SSE transport.
 * Presence joins and leaves are encoded the same way ({@link EncodedPresence}).
 * @module
 */
import { encodeMessage, encodeMessageFrame, formatCursorEntry, SseEvent, type Json, type PresenceChange, type PresenceClient } from '@tidings/protocol';
import type { PresenceEntry, PresenceEvent, Publication } from './brokers/broker.js';
import { frameText } from './framing.js';

const CRLF = Buffer.from('\r\n');

/** `body` framed as one HTTP/1.1 chunk: `size CRLF body CRLF`. */
const asChunk = (body: Buffer): Buffer => Buffer.concat([Buffer.from(`${body.length.toString(16)}\r\n`), body, CRLF]);

export class EncodedPublication {
  readonly pub: Publication;
  #json: string | undefined;
  #ws: Buffer | undefined;
  #sse: Buffer | undefined;
  #entry: string | undefined;
  #sseSingle: Buffer | undefined;
  #sseChunk: Buffer | undefined;

  /**
   * @param arrivedAt when the publication reached this node (`performance.now()`), for the delivery
   * latency metric; negative (the default) for one replayed from history.
   */
  constructor(
    pub: Publication,
    readonly arrivedAt = -1,
  ) {
    this.pub = pub;
  }

  /** The {@link Message} JSON text. */
  get json(): string {
    return (this.#json ??= encodeMessage(this.pub.channel, this.pub.position, this.pub.type, this.pub.data, this.pub.ephemeral));
  }

  /** A complete unmasked WebSocket text frame carrying a `message` frame. */
  get wsFrame(): Buffer {
    return (this.#ws ??= frameText(encodeMessageFrame(this.json)));
  }

  /**
   * `event:` and `data:` lines of the SSE event; the stream appends its own `id:` line and the
   * blank line that dispatches the event. The message JSON has no raw newlines (JSON escapes them).
   */
  get sseEvent(): Buffer {
    return (this.#sse ??= Buffer.from(`event: ${this.pub.type ?? 'message'}\ndata: ${this.json}\n`));
  }

  /** This publication's cursor entry, `channel=epoch.seq36`. */
  get cursorEntry(): string {
    return (this.#entry ??= formatCursorEntry(this.pub.channel, this.pub.position));
  }

  /** The whole SSE event for a single-channel stream, whose `id:` is just this cursor entry. */
  get sseSingle(): Buffer {
    return (this.#sseSingle ??= Buffer.from(`event: ${this.pub.type ?? 'message'}\ndata: ${this.json}\nid: ${this.cursorEntry}\n\n`));
  }

  /** {@link sseSingle} as one HTTP/1.1 chunk (`size CRLF event CRLF`): what a chunked stream writes to its socket. */
  get sseSingleChunk(): Buffer {
    return (this.#sseChunk ??= asChunk(this.sseSingle));
  }
}

/**
 * A presence entry as clients see it: `info` parsed from the JSON text the broker carries (left out
 * when there is none, or when it is not JSON, so one bad entry never breaks a frame).
 */
export function presenceClient(entry: PresenceEntry): PresenceClient {
  const { client, user, node } = entry;
  if (entry.info === undefined) return { client, user, node };
  let info: Json;
  try {
    info = JSON.parse(entry.info) as Json;
  } catch {
    return { client, user, node };
  }
  return { client, user, info, node };
}

/**
 * A join or leave with its wire encodings, each built at most once and shared by every subscriber of
 * the channel on this node: the WebSocket `join` / `leave` frame and the SSE `tidings:join` /
 * `tidings:leave` event. The SSE event has no `id:` line: it does not move the stream's cursor.
 */
export class EncodedPresence {
  readonly event: PresenceEvent;
  #json: string | undefined;
  #ws: Buffer | undefined;
  #sse: Buffer | undefined;
  #sseChunk: Buffer | undefined;

  constructor(event: PresenceEvent) {
    this.event = event;
  }

  /** The {@link PresenceChange} JSON text: `{"channel":..,"client":{..}}`. */
  get json(): string {
    if (this.#json === undefined) {
      const change: PresenceChange = { channel: this.event.channel, client: presenceClient(this.event.entry) };
      this.#json = JSON.stringify(change);
    }
    return this.#json;
  }

  /** A complete unmasked WebSocket text frame: `{"type":"join","channel":..,"client":{..}}`. */
  get wsFrame(): Buffer {
    return (this.#ws ??= frameText(`{"type":"${this.event.kind}",${this.json.slice(1)}`));
  }

  /** The whole SSE event (no `id:`: the stream's cursor stays where it was). */
  get sseEvent(): Buffer {
    const name = this.event.kind === 'join' ? SseEvent.join : SseEvent.leave;
    return (this.#sse ??= Buffer.from(`event: ${name}\ndata: ${this.json}\n\n`));
  }

  /** {@link sseEvent} as one HTTP/1.1 chunk, shared by every chunked stream. */
  get sseEventChunk(): Buffer {
    return (this.#sseChunk ??= asChunk(this.sseEvent));
  }
}
