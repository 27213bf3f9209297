/**
 * A refused WebSocket upgrade, told the only way a browser can read it: the handshake completes and
 * its first and last frame is a close frame with the refusal's code and reason. The bytes are
 * written straight to the socket, so each refusal in a reconnect storm costs one hash and one write,
 * not a WebSocket object with its parser and close-handshake timer.
 * @module
 */
import { createHash } from 'node:crypto';
import type { HttpRequest } from '../admission.js';
import { frameClose } from '../framing.js';

/** RFC 6455 section 1.3. */
const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
/** A base64-encoded 16-byte nonce. */
const KEY = /^[+/0-9A-Za-z]{22}==$/;
/** An HTTP token (RFC 9110 section 5.6.2): what a subprotocol name is. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/**
 * The `101` answer to `req` followed by a close frame, or undefined when `req` is not a handshake
 * this can answer (then the caller lets `ws` refuse it with its `400`). A requested subprotocol is
 * echoed (the first one, as `ws` picks by default): a browser that asked for one fails a handshake
 * that names none, and would then not see the close code.
 */
export function refusedHandshake(req: Pick<HttpRequest, 'method' | 'headers'>, code: number, reason: string): Buffer | undefined {
  const key = req.headers['sec-websocket-key'];
  const version = req.headers['sec-websocket-version'];
  if (req.method !== 'GET' || req.headers.upgrade?.toLowerCase() !== 'websocket') return undefined;
  if (key === undefined || !KEY.test(key) || (version !== '13' && version !== '8')) return undefined;
  let protocol = '';
  const asked = req.headers['sec-websocket-protocol'];
  if (asked !== undefined) {
    const first = asked.split(',', 1)[0]?.trim() ?? '';
    if (!TOKEN.test(first)) return undefined;
    protocol = `Sec-WebSocket-Protocol: ${first}\r\n`;
  }
  const accept = createHash('sha1').update(key + GUID).digest('base64');
  const head = `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n${protocol}\r\n`;
  return Buffer.concat([Buffer.from(head, 'latin1'), frameClose(code, reason)]);
}
