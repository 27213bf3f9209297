/**
 * The request heads the fast lane serves itself: a strict subset of HTTP/1.1 (RFC 9112), read whole
 * from one buffer. A head outside it is not refused here: the lane hands the connection to Node's
 * HTTP server, whose parser answers it, so nothing malformed is ever judged by this code.
 *
 * In the subset: `GET <path>[?query] HTTP/1.1` or `POST <path>[?query] HTTP/1.1` for a path whose
 * method the lane serves; header lines `name: value` with a token name and a value of visible ASCII,
 * spaces and tabs; a `Host`; no header twice; no `Expect`, and a `Connection` of `keep-alive` or
 * `close` only. A GET has no body; a POST's is sized by `Content-Length` (digits only, at most the
 * lane's body limit), never chunked (`Transfer-Encoding`). Lines end with CRLF; the head with an
 * empty line.
 *
 * A WebSocket upgrade is in the subset too, for a path where the lane reads upgrades: a GET with
 * `Upgrade: websocket` (that one protocol, in any case), a `Connection` whose options include
 * `upgrade` (besides `keep-alive` and `close`), and no body. Node's parser hands such a head to its
 * `upgrade` listeners; a head with only one of the two headers is a plain request to Node, and
 * outside the subset here.
 * @module
 */

/** The paths whose requests the lane reads, by method. */
export interface LaneRoutes {
  readonly GET: ReadonlySet<string>;
  readonly POST: ReadonlySet<string>;
  /** The paths whose WebSocket upgrades the lane reads. */
  readonly UPGRADE: ReadonlySet<string>;
}

/** What the lane learned of a request head in the subset. */
export interface LaneHead {
  readonly method: 'GET' | 'POST';
  /** The request target as sent (origin-form). */
  readonly url: string;
  /** Header names in lower case; every value trimmed, none repeated. */
  readonly headers: Record<string, string>;
  /** The client asked to close the connection after the answer. */
  readonly close: boolean;
  /** A WebSocket upgrade (a GET). */
  readonly upgrade: boolean;
  /** The head's length in bytes, its empty line included. */
  readonly length: number;
  /** The body's length in bytes (`Content-Length`; 0 without one). */
  readonly bodyLength: number;
}

/** Headers read at most; a head with more is Node's to judge. */
export const MAX_LANE_HEADERS = 64;

const HEAD_END = Buffer.from('\r\n\r\n');
/** What ends a request line in the subset, after its target. */
const VERSION = ' HTTP/1.1';
/** A `Content-Length` the lane reads: digits, no sign, no list. */
const LENGTH = /^[0-9]{1,15}$/;
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
/**
 * Header names clients send, by length: a name read from a head is one of these constants when it
 * is one, in any case, rather than a new lower-cased string. (A header's name is a key of the
 * headers object, and a string made at run time must first be looked up among V8's internalized
 * strings to be one; Node's parser does the same with its known fields.)
 */
const KNOWN_NAMES = new Map<number, readonly string[]>();
for (const name of [
  'host', 'connection', 'upgrade', 'origin', 'cookie', 'authorization', 'user-agent', 'accept', 'accept-encoding', 'accept-language',
  'cache-control', 'pragma', 'content-type', 'content-length', 'last-event-id', 'referer', 'x-forwarded-for', 'x-real-ip',
  'sec-websocket-key', 'sec-websocket-version', 'sec-websocket-extensions', 'sec-websocket-protocol', 'sec-fetch-mode', 'sec-fetch-site', 'sec-fetch-dest',
]) {
  KNOWN_NAMES.set(name.length, [...(KNOWN_NAMES.get(name.length) ?? []), name]);
}

/** The name `text[from, to)` in lower case: a constant when it is a known one. */
function headerName(text: string, from: number, to: number): string {
  const known = KNOWN_NAMES.get(to - from);
  if (known !== undefined) {
    next: for (const name of known) {
      // Lower case by the 0x20 bit: the names are letters, digits and '-', which a token's other characters never become.
      for (let i = 0; i < name.length; i++) if ((text.charCodeAt(from + i) | 0x20) !== name.charCodeAt(i)) continue next;
      return name;
    }
  }
  return text.slice(from, to).toLowerCase();
}

/** Headers that put a request outside the subset: a body, an HTTP/2 switch, an interim answer. */
const OUTSIDE = new Set(['transfer-encoding', 'expect', 'http2-settings']);

/** `value` without the spaces and tabs around it. */
function trimOws(value: string): string {
  let from = 0;
  let to = value.length;
  while (from < to && isOws(value.charCodeAt(from))) from++;
  while (to > from && isOws(value.charCodeAt(to - 1))) to--;
  return value.slice(from, to);
}

/** What `Connection` asks for: bits. */
const CLOSE = 1;
const UPGRADE = 2;
/** The options of `Connection: value`; undefined when it names anything but keep-alive, close and upgrade. */
function connectionOptions(value: string): number | undefined {
  // What clients send, before the general form (a comma-separated list, in any case).
  if (value === 'Upgrade' || value === 'upgrade') return UPGRADE;
  let asked = 0;
  for (const part of value.toLowerCase().split(',')) {
    const option = trimOws(part);
    if (option === 'close') asked |= CLOSE;
    else if (option === 'upgrade') asked |= UPGRADE;
    else if (option !== 'keep-alive') return undefined;
  }
  return asked;
}

/** Whether `buf` starts with `GET ` or `POST `: a connection that is not the lane's is mostly told by its first bytes. */
function laneMethod(buf: Buffer): boolean {
  if (buf.length < 5) return false;
  if (buf[0] === 0x47) return buf[1] === 0x45 && buf[2] === 0x54 && buf[3] === 0x20;
  return buf[0] === 0x50 && buf[1] === 0x4f && buf[2] === 0x53 && buf[3] === 0x54 && buf[4] === 0x20;
}

/** A request line in the subset: its method, its target, and what the lane serves at its path. */
interface RequestLine {
  readonly method: 'GET' | 'POST';
  readonly target: string;
  /** The lane serves the method at the path. */
  readonly plain: boolean;
  /** The lane reads WebSocket upgrades at the path (a GET). */
  readonly upgrade: boolean;
}

/**
 * The request line `text[0, end)`, when it is in the subset and the lane serves its path under its
 * method (or reads upgrades there). The line is read in place, not cut from the head first: a string
 * cut from another is read through it, character by character, at several times the cost.
 */
function requestLine(text: string, end: number, routes: LaneRoutes): RequestLine | undefined {
  // `GET /target HTTP/1.1` or `POST /target HTTP/1.1`, the target of visible ASCII: read by hand, as a
  // match would make an array and two strings per request. The method is the constant: it is a key
  // (`routes[method]`), and a string made at run time is first looked up among V8's internalized
  // strings on every such use.
  const method = text.startsWith('GET /') ? 'GET' : text.startsWith('POST /') ? 'POST' : undefined;
  const to = end - VERSION.length;
  if (method === undefined || !text.startsWith(VERSION, to)) return undefined;
  const from = method.length + 1;
  if (to <= from) return undefined;
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x21 || c > 0x7e) return undefined;
  }
  const target = text.slice(from, to);
  const query = target.indexOf('?');
  const path = query === -1 ? target : target.slice(0, query);
  const plain = routes[method].has(path);
  const upgrade = method === 'GET' && routes.UPGRADE.has(path);
  return plain || upgrade ? { method, target, plain, upgrade } : undefined;
}

const PREFIXES = [Buffer.from('GET '), Buffer.from('POST ')];

/**
 * Whether `buf` is the start of a head the lane may read once the rest comes: no head end yet, less
 * than `maxSize` bytes, and the request line (as far as it came) one the lane reads. Pipelined
 * requests are cut anywhere by the reads they arrive in.
 */
export function headMayFollow(buf: Buffer, routes: LaneRoutes, maxSize: number): boolean {
  if (buf.length >= maxSize || buf.indexOf(HEAD_END) !== -1) return false;
  if (!PREFIXES.some((prefix) => prefix.subarray(0, Math.min(prefix.length, buf.length)).equals(buf.subarray(0, prefix.length)))) return false;
  const eol = buf.indexOf('\r\n');
  return eol === -1 ? buf.indexOf(0x0a) === -1 : requestLine(buf.toString('latin1', 0, eol), eol, routes) !== undefined;
}

/**
 * The request head at the start of `buf`, when it is whole, at most `maxSize` bytes, in the subset,
 * for a path of `routes` under its method (or, an upgrade, of `routes.UPGRADE`), and (a POST) with a
 * body of at most `maxBody` bytes; undefined for anything else. The body need not be in `buf` yet.
 */
export function readLaneHead(buf: Buffer, routes: LaneRoutes, maxSize: number, maxBody: number): LaneHead | undefined {
  if (!laneMethod(buf)) return undefined;
  const end = buf.indexOf(HEAD_END);
  if (end === -1 || end + HEAD_END.length > maxSize) return undefined;
  const text = buf.toString('latin1', 0, end);
  let eol = text.indexOf('\r\n');
  const line = requestLine(text, eol === -1 ? text.length : eol, routes);
  if (line === undefined) return undefined;
  const { method, target } = line;
  let bodyLength = 0;
  // A plain object, as Node's: a header named like an Object.prototype member is found as present and left to Node.
  const headers: Record<string, string> = {};
  let asked = 0;
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
    const key = headerName(text, from, colon);
    if (key in headers || OUTSIDE.has(key)) return undefined;
    const value = text.slice(start, stop);
    if (key === 'content-length') {
      if (!LENGTH.test(value)) return undefined;
      bodyLength = Number(value);
      if (bodyLength > (method === 'GET' ? 0 : maxBody)) return undefined;
    }
    if (key === 'connection') {
      const options = connectionOptions(value);
      if (options === undefined) return undefined;
      asked = options;
    }
    headers[key] = value;
  }
  if (headers.host === undefined) return undefined;
  // Node's parser takes a head as an upgrade when it has both headers; one without the other is a plain request.
  const { upgrade: protocol } = headers;
  const upgrade = protocol !== undefined && (asked & UPGRADE) !== 0;
  if (upgrade) {
    // A WebSocket handshake, without a body (what follows its head is the client's first frames).
    if (!line.upgrade || protocol.toLowerCase() !== 'websocket' || headers['content-length'] !== undefined) return undefined;
  } else if (!line.plain || protocol !== undefined || (asked & UPGRADE) !== 0) return undefined;
  return { method, url: target, headers, close: (asked & CLOSE) !== 0, upgrade, length: end + HEAD_END.length, bodyLength };
}
