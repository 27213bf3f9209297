/**
 * A raw WebSocket protocol client for tests: sends JSON frames, matches replies by id, and keeps
 * every frame it received.
 * @module
 */
import type { ClientFrame, ServerFrame } from '@tidings/protocol';
import WebSocket from 'ws';
import { Signal } from './wait.js';

/** A client frame without its id (the client assigns one). */
export type FrameWithoutId = ClientFrame extends infer F ? (F extends unknown ? Omit<F, 'id'> : never) : never;

export class RawWsClient {
  readonly frames: ServerFrame[] = [];
  readonly ws: WebSocket;
  closeCode: number | undefined;
  closeReason = '';
  #nextId = 1;
  readonly #signal = new Signal();

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on('message', (data: Buffer) => {
      this.frames.push(JSON.parse(data.toString('utf8')) as ServerFrame);
      this.#signal.wake();
    });
    ws.on('close', (code, reason) => {
      this.closeCode = code;
      this.closeReason = reason.toString();
      this.#signal.wake();
    });
    ws.on('error', () => this.#signal.wake());
  }

  /** Connects and waits for the `welcome` frame. */
  static async connect(url: string, options: WebSocket.ClientOptions = {}): Promise<RawWsClient> {
    const ws = new WebSocket(url, options);
    const client = new RawWsClient(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    });
    await client.until((c) => c.frames.some((f) => f.type === 'welcome'));
    return client;
  }

  get closed(): boolean {
    return this.closeCode !== undefined;
  }

  /** Sends a raw text frame. */
  sendText(text: string): void {
    this.ws.send(text);
  }

  send(frame: ClientFrame): void {
    this.ws.send(JSON.stringify(frame));
  }

  /** Sends a frame with a fresh id and resolves with the `reply` or `error` frame for it. */
  async request(frame: FrameWithoutId, timeoutMs = 5000): Promise<ServerFrame> {
    const id = this.#nextId++;
    this.send({ ...frame, id });
    let found: ServerFrame | undefined;
    await this.until(() => {
      found = this.frames.find((f) => (f.type === 'reply' || f.type === 'error' || f.type === 'pong') && f.id === id);
      return found !== undefined;
    }, timeoutMs);
    return found as ServerFrame;
  }

  /** Frames of a given type. */
  ofType<T extends ServerFrame['type']>(type: T): Array<Extract<ServerFrame, { type: T }>> {
    return this.frames.filter((f): f is Extract<ServerFrame, { type: T }> => f.type === type);
  }

  until(predicate: (c: this) => boolean, timeoutMs = 5000): Promise<void> {
    return this.#signal.until(() => predicate(this), timeoutMs, () => `WS: condition not met (${this.frames.length} frames)`, 100);
  }

  /** Drops the TCP connection without a close handshake. */
  terminate(): void {
    this.ws.terminate();
  }

  close(): void {
    this.ws.close();
  }
}
