/**
 * Server-to-client WebSocket framing (RFC 6455 section 5.2): FIN set, no mask, no extensions.
 * Used to frame a publication once and write the same bytes to every subscriber's socket.
 * Safe to interleave with the `ws` library's own sends because, without permessage-deflate,
 * `ws` writes each frame synchronously and whole.
 * @module
 */

/** A complete text frame for `text`. */
export function frameText(text: string): Buffer {
  const len = Buffer.byteLength(text);
  const header = len < 126 ? 2 : len < 65536 ? 4 : 10;
  const buf = Buffer.allocUnsafe(header + len);
  buf[0] = 0x81; // FIN + opcode 1 (text)
  if (header === 2) {
    buf[1] = len;
  } else if (header === 4) {
    buf[1] = 126;
    buf.writeUInt16BE(len, 2);
  } else {
    buf[1] = 127;
    buf.writeUInt32BE(Math.floor(len / 2 ** 32), 2);
    buf.writeUInt32BE(len >>> 0, 6);
  }
  buf.write(text, header, 'utf8');
  return buf;
}
