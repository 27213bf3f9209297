/**
 * Upgrades to protocols other than WebSocket (`Upgrade: h2c`, ...) are optional for a server to
 * honour (RFC 9110, section 7.8), so the gateway ignores them and answers the request as plain
 * HTTP/1.1. Node hands such requests to the `upgrade` listener with the raw socket and an ended
 * request (the body, if any, is still on the socket); this rebuilds the request with its body (by
 * `content-length`) and gives it a response object on that socket.
 * @module
 */
import { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { TidingsError } from '@tidings/protocol';
import { refuseOnSocket } from '../admission.js';

/** True when the request asks for a WebSocket (and not some other protocol). */
export function wantsWebSocket(req: IncomingMessage): boolean {
  const upgrade = req.headers.upgrade;
  if (upgrade === undefined) return false;
  // What clients send, before the general form (a comma-separated list, in any case).
  if (upgrade === 'websocket') return true;
  return upgrade.split(',').some((p) => p.trim().toLowerCase() === 'websocket');
}

/** Answers `req` as a plain request through `handle`, then closes the connection. */
export function answerAsPlain(req: IncomingMessage, socket: Duplex, head: Buffer, handle: (req: IncomingMessage, res: ServerResponse) => Promise<void> | undefined): void {
  // Node's server let go of this socket at the upgrade: nothing else listens to it now. A write after
  // the peer left (EPIPE) must not become an uncaught error, and the peer's FIN ends it as Node would.
  socket.on('error', () => socket.destroy());
  socket.on('end', () => socket.end());
  if (req.headers['transfer-encoding'] !== undefined) {
    refuseOnSocket(socket, new TidingsError('bad_request', 'send a content-length with a body, or no Upgrade header'));
    return;
  }
  const plain = new IncomingMessage(socket as Socket);
  plain.method = req.method;
  plain.url = req.url;
  plain.headers = req.headers;
  plain.rawHeaders = req.rawHeaders;
  plain.httpVersionMajor = req.httpVersionMajor;
  plain.httpVersionMinor = req.httpVersionMinor;
  plain.httpVersion = req.httpVersion;
  const res = new ServerResponse(plain);
  res.shouldKeepAlive = false;
  res.assignSocket(socket as Socket);
  res.on('finish', () => {
    res.detachSocket(socket as Socket);
    socket.end();
  });
  let left = Number(req.headers['content-length'] ?? 0);
  if (!Number.isSafeInteger(left) || left < 0) left = 0;
  const done = (): void => {
    plain.complete = true;
    plain.push(null);
  };
  const take = (chunk: Buffer): void => {
    if (left === 0) return;
    const part = chunk.subarray(0, left);
    left -= part.length;
    plain.push(part);
    if (left === 0) {
      socket.off('data', take);
      done();
    }
  };
  if (left === 0) done();
  else {
    take(head);
    if (left > 0) socket.on('data', take);
  }
  // Read to the end even without a body (later bytes are dropped: this connection closes after the
  // answer), or a peer that leaves is never noticed and its stream (SSE, a held poll) stays open.
  socket.resume();
  // `handle` answers every failure itself and never rejects.
  void handle(plain, res);
}
