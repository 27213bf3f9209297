/**
 * Server-to-client WebSocket framing (RFC 6455 section 5.2): FIN set, no mask, no extensions. A
 * publication is framed once and the same bytes go to every subscriber's socket; control replies
 * are framed here too, so every byte a connection sends passes through its one bounded output.
 * @module
 */

const OP_TEXT = 0x1;
const OP_CLOSE = 0x8;
const OP_PONG = 0xa;

function frame(opcode: number, payload: string | Buffer): Buffer {
  const len = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length;
  const header = len < 126 ? 2 : len < 65536 ? 4 : 10;
  const buf = Buffer.allocUnsafe(header + len);
  buf[0] = 0x80 | opcode;
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
  if (typeof payload === 'string') buf.write(payload, header, 'utf8');
  else payload.copy(buf, header);
  return buf;
}

/** A complete text frame for `text`. */
export function frameText(text: string): Buffer {
  return frame(OP_TEXT, text);
}

/** A pong control frame echoing a ping's payload (at most 125 bytes, as RFC 6455 requires of pings). */
export function framePong(payload: Buffer): Buffer {
  return frame(OP_PONG, payload.subarray(0, 125));
}

/** The most reason bytes a close frame holds: a control frame's 125, less the 2-byte code. */
const MAX_REASON = 123;

/**
 * A close reason as RFC 6455 allows it: at most 123 bytes of whole UTF-8, cut at a character boundary.
 * (`ws` throws on a longer one.)
 */
export function closeReason(reason: string): Buffer {
  const text = Buffer.from(reason, 'utf8');
  if (text.length <= MAX_REASON) return text;
  let end = MAX_REASON;
  while (end > 0 && ((text[end] ?? 0) & 0xc0) === 0x80) end--;
  return text.subarray(0, end);
}

/** A close frame with `code` and `reason` (cut by {@link closeReason}). */
export function frameClose(code: number, reason: string): Buffer {
  const text = closeReason(reason);
  const payload = Buffer.allocUnsafe(2 + text.length);
  payload.writeUInt16BE(code, 0);
  text.copy(payload, 2);
  return frame(OP_CLOSE, payload);
}
