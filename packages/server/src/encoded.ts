/**
 * A publication with its wire encodings, each built at most once and shared by every subscriber:
 * the message JSON, the WebSocket frame (header included) and the SSE event body. Nothing here is
 * per subscriber; the per-stream SSE `id:` line is written separately by the SSE transport.
 * @module
 */
import { encodeMessage, encodeMessageFrame, formatCursorEntry } from '@tidings/protocol';
import type { Publication } from './brokers/broker.js';
import { frameText } from './framing.js';

export class EncodedPublication {
  readonly pub: Publication;
  #json: string | undefined;
  #ws: Buffer | undefined;
  #sse: Buffer | undefined;
  #entry: string | undefined;
  #sseSingle: Buffer | undefined;

  constructor(pub: Publication) {
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
}
