/**
 * A WebSocket peer at the byte level (RFC 6455): it completes the handshake over a plain TCP socket
 * and then writes whatever frames a test builds, including ones no library would send (fragments
 * out of order, invalid UTF-8, reserved opcodes, lying lengths), and it reads only if asked to.
 * @module
 */
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';

export const Opcode = { continuation: 0x0, text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa } as const;

export interface FrameOptions {
  /** FIN bit; default true. */
  readonly fin?: boolean;
  /** RSV1-3 bits (0-7); default 0. */
  readonly rsv?: number;
  /** Mask the payload as a client must; default true. */
  readonly mask?: boolean;
  /** Claim this payload length in the header instead of the real one. */
  readonly declaredLength?: number;
}

/** One frame's bytes, as a client would send it (masked unless told otherwise). */
export function clientFrame(opcode: number, payload: Buffer | string, options: FrameOptions = {}): Buffer {
  const data = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  const len = options.declaredLength ?? data.length;
  const mask = options.mask ?? true;
  const lenBytes = len < 126 ? 0 : len < 65536 ? 2 : 8;
  const head = Buffer.alloc(2 + lenBytes + (mask ? 4 : 0));
  head[0] = ((options.fin ?? true) ? 0x80 : 0) | (((options.rsv ?? 0) & 7) << 4) | (opcode & 0x0f);
  head[1] = (mask ? 0x80 : 0) | (lenBytes === 0 ? len : lenBytes === 2 ? 126 : 127);
  if (lenBytes === 2) head.writeUInt16BE(len, 2);
  if (lenBytes === 8) head.writeBigUInt64BE(BigInt(len), 2);
  if (!mask) return Buffer.concat([head, data]);
  const key = randomBytes(4);
  key.copy(head, 2 + lenBytes);
  const body = Buffer.from(data);
  for (let i = 0; i < body.length; i++) body[i] = (body[i] as number) ^ (key[i & 3] as number);
  return Buffer.concat([head, body]);
}

export interface RawWebSocket {
  readonly socket: Socket;
  /** Bytes received after the handshake (only while reading). */
  readonly received: Buffer[];
  /** Whether the server closed or reset the connection. */
  readonly closed: boolean;
  send(frame: Buffer): void;
  /** Stops reading from the socket: the server's writes pile up in the kernel and then in the server. */
  stopReading(): void;
  destroy(): void;
}

/** Opens a TCP connection to 127.0.0.1:`port`, upgrades `path` and resolves once the 101 arrives. */
export function rawWebSocket(port: number, path = '/ws', extraHeaders = ''): Promise<RawWebSocket> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const received: Buffer[] = [];
    let head = Buffer.alloc(0);
    let upgraded = false;
    let closed = false;
    const peer: RawWebSocket = {
      socket,
      received,
      get closed() {
        return closed;
      },
      send: (frame) => {
        if (!socket.destroyed) socket.write(frame);
      },
      stopReading: () => {
        socket.pause();
      },
      destroy: () => socket.destroy(),
    };
    socket.on('error', (err) => {
      closed = true;
      if (!upgraded) reject(err);
    });
    socket.on('close', () => {
      closed = true;
      if (!upgraded) reject(new Error(`closed during the handshake: ${head.toString('latin1').slice(0, 200)}`));
    });
    socket.on('data', (chunk: Buffer) => {
      if (upgraded) {
        received.push(chunk);
        return;
      }
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end === -1) return;
      if (!/^HTTP\/1\.1 101/.test(head.toString('latin1'))) {
        reject(new Error(`upgrade refused: ${head.toString('latin1').slice(0, 200)}`));
        socket.destroy();
        return;
      }
      upgraded = true;
      if (head.length > end + 4) received.push(head.subarray(end + 4));
      resolve(peer);
    });
    socket.on('connect', () => {
      const key = randomBytes(16).toString('base64');
      socket.write(
        `GET ${path} HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\nconnection: Upgrade\r\nupgrade: websocket\r\n` +
          `sec-websocket-version: 13\r\nsec-websocket-key: ${key}\r\n${extraHeaders}\r\n`,
      );
    });
  });
}
