/**
 * WebSocket transport: turns an upgraded HTTP request into a {@link Sink} plus a stream of inbound
 * text frames. Publications are written as pre-framed bytes straight to the socket, corked per
 * tick; control frames go through `ws`. Nothing here knows about sessions, the hub or brokers.
 * @module
 */
import type { Socket } from 'node:net';
import { CloseCode, jsonCodec, type CloseName, type Gap, type RequestId, type ServerFrame, type SubscribeResult } from '@tidings/protocol';
import WebSocket from 'ws';
import type { EncodedPublication } from '../encoded.js';
import { TickWriter } from '../flush.js';
import { frameText } from './ws-frame.js';
import type { Sink } from '../session.js';

/** The heartbeat frame, framed once for every connection. */
const HEARTBEAT = frameText('{"type":"heartbeat"}');

export class WebSocketConnection implements Sink {
  /** Set by a pong or any inbound frame; cleared by each heartbeat sweep. */
  alive = true;
  readonly #out: TickWriter;

  constructor(
    readonly ws: WebSocket,
    socket: Socket,
  ) {
    this.#out = new TickWriter(socket);
    ws.on('pong', this.#markAlive);
  }

  readonly #markAlive = (): void => {
    this.alive = true;
  };

  get open(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  get bufferedBytes(): number {
    return this.#out.backlog;
  }

  frame(frame: ServerFrame): void {
    if (!this.open) return;
    this.#out.hold();
    this.ws.send(jsonCodec.encodeServer(frame));
  }

  subscribed(result: SubscribeResult, id: RequestId | undefined): void {
    if (id !== undefined) this.frame({ type: 'reply', id, result });
  }

  message(enc: EncodedPublication): void {
    if (this.ws.readyState === WebSocket.OPEN) this.#out.write(enc.wsFrame);
  }

  gap(gap: Gap): void {
    this.frame({ type: 'gap', gap });
  }

  /**
   * Heartbeat sweep: terminates a peer that missed the last ping; pings the rest and sends them a
   * heartbeat frame, the liveness signal a browser client can see. Returns false when terminated.
   */
  heartbeat(): boolean {
    if (!this.alive) {
      this.close('heartbeat_timeout', 'no pong within the heartbeat interval');
      return false;
    }
    this.alive = false;
    if (this.open) {
      this.ws.ping();
      this.#out.write(HEARTBEAT);
    }
    return true;
  }

  close(name: CloseName, reason: string): void {
    if (name === 'heartbeat_timeout') {
      this.ws.terminate();
      return;
    }
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) {
      // Close reasons are limited to 123 bytes by RFC 6455.
      this.ws.close(CloseCode[name].code, reason.slice(0, 120));
      // A slow consumer may never read the close frame queued behind its backlog: free it soon.
      if (name === 'slow_consumer') setTimeout(() => this.ws.terminate(), 1000).unref();
    }
  }
}
