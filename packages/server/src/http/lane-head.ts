/**
 * The request heads the fast lane serves itself: a strict subset of HTTP/1.1 (RFC 9112), read whole
 * from one buffer. A head outside it is not refused here: the lane hands the connection to Node's
 * HTTP server, whose parser answers it, so nothing malformed is ever judged by this code.
 *
 * In the subset: `GET <path>[?query] HTTP/1.1` for a path the lane serves; header lines `name: value`
 * with a token name and a value of visible ASCII, spaces and tabs; a `Host`; no header twice; no
 * body (`Content-Length` other than 0, `Transfer-Encoding`), no `Upgrade` or `Expect`, and a
 * `Connection` of `keep-alive` or `close` only. Lines end with CRLF; the head with an empty line.
 * @module
 */

/** What the lane learned of a request head in the subset. */
export interface LaneHead {
  /** The request target as sent (origin-form). */
  readonly url: string;
  /** Header names in lower case; every value trimmed, none repeated. */
  readonly headers: Record<string, string>;
  /** The client asked to close the connection after the answer. */
  readonly close: boolean;
  /** The head's length in bytes, its empty line included. */
  readonly length: number;
}

/** Headers read at most; a head with more is Node's to judge. */
export const MAX_LANE_HEADERS = 64;

const HEAD_END = Buffer.from('\r\n\r\n');
/** Lane paths are short: a request whose path runs longer is not the lane's. */
const MAX_PATH = 64;
const REQUEST_LINE = /^GET (\/[\x21-\x7e]*) HTTP\/1\.1$/;
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** A field value before trimming: visible ASCII, spaces and tabs (no obs-text, no controls). */
const FIELD_VALUE = /^[\t\x20-\x7e]*$/;
/** Headers that put a request outside the subset: a body, a protocol switch, an interim answer. */
const OUTSIDE = new Set(['transfer-encoding', 'upgrade', 'expect', 'http2-settings']);

/** `value` without the spaces and tabs around it (linear: no regular expression that could backtrack). */
function trimOws(value: string): string {
  let from = 0;
  let to = value.length;
  while (from < to && (value.charCodeAt(from) === 0x20 || value.charCodeAt(from) === 0x09)) from++;
  while (to > from && (value.charCodeAt(to - 1) === 0x20 || value.charCodeAt(to - 1) === 0x09)) to--;
  return value.slice(from, to);
}

/** Whether `Connection: value` asks to close; undefined when it names anything but keep-alive and close. */
function connectionClose(value: string): boolean | undefined {
  let close = false;
  for (const part of value.toLowerCase().split(',')) {
    const option = trimOws(part);
    if (option === 'close') close = true;
    else if (option !== 'keep-alive') return undefined;
  }
  return close;
}

/**
 * The request head at the start of `buf`, when it is whole, at most `maxSize` bytes, in the subset
 * and for one of `paths`; undefined for anything else.
 */
export function readLaneHead(buf: Buffer, paths: ReadonlySet<string>, maxSize: number): LaneHead | undefined {
  // The method and path first: most connections that are not the lane's (WebSocket upgrades, SSE,
  // publishing) are told by their first bytes, before the head is looked at.
  if (buf.length < 5 || buf[0] !== 0x47 || buf[1] !== 0x45 || buf[2] !== 0x54 || buf[3] !== 0x20) return undefined;
  let stop = 4;
  while (stop < buf.length && stop < MAX_PATH && buf[stop] !== 0x3f && buf[stop] !== 0x20) stop++;
  if (!paths.has(buf.toString('latin1', 4, stop))) return undefined;
  const end = buf.indexOf(HEAD_END);
  if (end === -1 || end + HEAD_END.length > maxSize) return undefined;
  const lines = buf.toString('latin1', 0, end).split('\r\n');
  if (lines.length - 1 > MAX_LANE_HEADERS) return undefined;
  const target = REQUEST_LINE.exec(lines[0] as string)?.[1];
  if (target === undefined) return undefined;
  const headers: Record<string, string> = Object.create(null) as Record<string, string>;
  let close = false;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i] as string;
    const colon = line.indexOf(':');
    if (colon <= 0) return undefined;
    const name = line.slice(0, colon);
    const raw = line.slice(colon + 1);
    if (!TOKEN.test(name) || !FIELD_VALUE.test(raw)) return undefined;
    const key = name.toLowerCase();
    if (key in headers || OUTSIDE.has(key)) return undefined;
    const value = trimOws(raw);
    if (key === 'content-length' && value !== '0') return undefined;
    if (key === 'connection') {
      const asked = connectionClose(value);
      if (asked === undefined) return undefined;
      close = asked;
    }
    headers[key] = value;
  }
  if (headers.host === undefined) return undefined;
  return { url: target, headers, close, length: end + HEAD_END.length };
}
