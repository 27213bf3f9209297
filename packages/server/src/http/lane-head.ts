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
const REQUEST_LINE = /^GET (\/[\x21-\x7e]*) HTTP\/1\.1$/;
/** `tchar` of RFC 9110 (the characters of a header name), by character code. */
const TCHAR = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") TCHAR[c.charCodeAt(0)] = 1;
const isOws = (c: number): boolean => c === 0x20 || c === 0x09;

/** Whether `name` is a token (RFC 9110): what a header name may be. */
export function isToken(name: string): boolean {
  if (name.length === 0) return false;
  for (let i = 0; i < name.length; i++) if (TCHAR[name.charCodeAt(i)] !== 1) return false;
  return true;
}
/** Headers that put a request outside the subset: a body, a protocol switch, an interim answer. */
const OUTSIDE = new Set(['transfer-encoding', 'upgrade', 'expect', 'http2-settings']);

/** `value` without the spaces and tabs around it. */
function trimOws(value: string): string {
  let from = 0;
  let to = value.length;
  while (from < to && isOws(value.charCodeAt(from))) from++;
  while (to > from && isOws(value.charCodeAt(to - 1))) to--;
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
  // The method first: most connections that are not the lane's (WebSocket upgrades, SSE,
  // publishing) are told by their first bytes, before the head is looked at.
  if (buf.length < 5 || buf[0] !== 0x47 || buf[1] !== 0x45 || buf[2] !== 0x54 || buf[3] !== 0x20) return undefined;
  const end = buf.indexOf(HEAD_END);
  if (end === -1 || end + HEAD_END.length > maxSize) return undefined;
  const text = buf.toString('latin1', 0, end);
  let eol = text.indexOf('\r\n');
  const target = REQUEST_LINE.exec(eol === -1 ? text : text.slice(0, eol))?.[1];
  if (target === undefined) return undefined;
  const query = target.indexOf('?');
  if (!paths.has(query === -1 ? target : target.slice(0, query))) return undefined;
  // A plain object, as Node's: a header named like an Object.prototype member is found as present and left to Node.
  const headers: Record<string, string> = {};
  let close = false;
  let count = 0;
  while (eol !== -1) {
    if (++count > MAX_LANE_HEADERS) return undefined;
    const from = eol + 2;
    eol = text.indexOf('\r\n', from);
    const to = eol === -1 ? text.length : eol;
    // One pass over the line: a token, a colon, then a value of visible ASCII, spaces and tabs.
    let colon = from;
    while (colon < to && TCHAR[text.charCodeAt(colon)] === 1) colon++;
    if (colon === from || colon === to || text.charCodeAt(colon) !== 0x3a) return undefined;
    let start = colon + 1;
    let stop = to;
    for (let i = start; i < to; i++) {
      const c = text.charCodeAt(i);
      if (c !== 0x09 && (c < 0x20 || c > 0x7e)) return undefined;
    }
    while (start < stop && isOws(text.charCodeAt(start))) start++;
    while (stop > start && isOws(text.charCodeAt(stop - 1))) stop--;
    const key = text.slice(from, colon).toLowerCase();
    if (key in headers || OUTSIDE.has(key)) return undefined;
    const value = text.slice(start, stop);
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
