/**
 * Raw HTTP over a plain TCP socket, for requests no well-behaved client would send: broken request
 * lines, oversized headers, bodies that never arrive, upgrade headers of other protocols. It reads
 * the first response's status line and headers, and as much of the body as arrives before the
 * connection closes or the timeout passes.
 * @module
 */
import { connect, type Socket } from 'node:net';

export interface RawResponse {
  /** 0 when no status line arrived. */
  readonly status: number;
  readonly headers: Record<string, string>;
  /** Everything after the header block, as received. */
  readonly body: string;
  /** Whether the server closed the connection before the timeout. */
  readonly closed: boolean;
  /** Milliseconds from the first byte sent to the close, or to the timeout. */
  readonly elapsed: number;
}

export interface RawRequestOptions {
  /** Give up (and report what arrived) after this many ms. Default 5000. */
  readonly timeoutMs?: number;
  /** Resolve as soon as a complete status line and header block arrived. */
  readonly untilHeaders?: boolean;
  /** Called with the socket once connected: to send more, slowly, or not at all. */
  readonly then?: (socket: Socket) => void;
}

/** Parses a status line and headers from the start of `text`, when complete. */
export function parseHead(text: string): { status: number; headers: Record<string, string>; body: string } | undefined {
  const end = text.indexOf('\r\n\r\n');
  if (end === -1) return undefined;
  const [statusLine = '', ...lines] = text.slice(0, end).split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? 0);
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { status, headers, body: text.slice(end + 4) };
}

/** Sends `text` (latin1, byte for byte) to 127.0.0.1:`port` and collects the answer. */
export function rawRequest(port: number, text: string | Buffer, options: RawRequestOptions = {}): Promise<RawResponse> {
  const timeoutMs = options.timeoutMs ?? 5000;
  return new Promise((resolve) => {
    const started = Date.now();
    let received = '';
    let settled = false;
    const socket = connect(port, '127.0.0.1');
    const finish = (closed: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      const head = parseHead(received);
      resolve({ status: head?.status ?? 0, headers: head?.headers ?? {}, body: head?.body ?? received, closed, elapsed: Date.now() - started });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      received += chunk;
      if (options.untilHeaders === true && parseHead(received) !== undefined) finish(false);
    });
    socket.on('close', () => finish(true));
    socket.on('error', () => finish(true));
    socket.on('connect', () => {
      socket.write(typeof text === 'string' ? Buffer.from(text, 'latin1') : text);
      options.then?.(socket);
    });
  });
}
