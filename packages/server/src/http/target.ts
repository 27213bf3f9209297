/**
 * A request target, read as far as it is needed. Admission needs the path to route a request, and a
 * route its query parameters; a `URL` and its `URLSearchParams` cost more than the rest of a long
 * poll's admission. So a plain target (origin-form, a path of letters, digits, `-`, `_`, `~` and
 * slashes, and a query of visible ASCII that no URL parser changes) is split by hand, and its
 * parameters decoded as `URLSearchParams` decodes them; the `URL` is made only if someone asks for it
 * (an authentication hook). Any other target is parsed as a `URL` at once, as before.
 * @module
 */
import { TidingsError } from '@tidings/protocol';

/** What a route reads of the query: `URLSearchParams` has it too. */
export interface Query {
  get(name: string): string | null;
  getAll(name: string): string[];
  has(name: string): boolean;
}

/** A target's second character that, after a slash, makes it other than a path: a slash, a backslash, or one the URL parser drops. */
const NOT_PATH_SECOND = new Set([0x2f, 0x5c, 0x09, 0x0a, 0x0d]);

/** A path a URL parser would rewrite: a backslash, or a `.` / `..` segment (also percent-encoded). */
const REWRITTEN = /\\|(?:^|\/)(?:\.|%2e){1,2}(?:\/|$)/i;

/** The path of a request target (before its query or fragment), without the tabs and newlines a URL parser drops. */
function pathOf(target: string): string {
  const end = target.search(/[?#]/);
  return (end === -1 ? target : target.slice(0, end)).replace(/[\t\n\r]/g, '');
}

/**
 * Parses a request target. Origin-form (`/path?q`) is what clients send; absolute-form is accepted
 * when it parses. Anything else is a `bad_request`, never an exception.
 */
export function parseTarget(target: string | undefined): URL {
  if (target !== undefined && REWRITTEN.test(pathOf(target))) {
    // A URL parser resolves dot segments (`..`, `%2e%2e`) and reads `\` as `/`, so such a path would
    // reach a route other than the one it names, past a proxy's rule for that route's path.
    throw new TidingsError('bad_request', 'the request path has dot segments or backslashes');
  }
  try {
    // Origin-form, the usual case, parsed as one absolute URL: half the cost of parsing it against
    // a base (which is parsed as well). A target that starts with two slashes (either way round,
    // and the parser drops tabs and newlines first) would name a host against a base, and is parsed
    // against one as before.
    if (target !== undefined && target.charCodeAt(0) === 0x2f && !NOT_PATH_SECOND.has(target.charCodeAt(1))) return new URL(`http://gateway${target}`);
    return new URL(target ?? '/', 'http://gateway');
  } catch {
    throw new TidingsError('bad_request', 'the request target is not a valid URL');
  }
}

/** Characters a URL parser leaves as they are in a path (no dot: dot segments; no percent sign: its escapes). */
const PATH = charSet('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_~/');
/** Visible ASCII but what a special URL's query percent-encodes (`"`, `'`, `<`, `>`) and a fragment's `#`. */
const QUERY = (() => {
  const set = new Uint8Array(128);
  for (let c = 0x21; c < 0x7f; c++) set[c] = 1;
  for (const c of '"#\'<>') set[c.charCodeAt(0)] = 0;
  return set;
})();

function charSet(chars: string): Uint8Array {
  const set = new Uint8Array(128);
  for (let i = 0; i < chars.length; i++) set[chars.charCodeAt(i)] = 1;
  return set;
}

/** Whether every character of `text` from `start` to `end` is in `set`. */
function allIn(set: Uint8Array, text: string, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const c = text.charCodeAt(i);
    if (c >= 128 || set[c] === 0) return false;
  }
  return true;
}

/** Hex digits' values; -1 for any other character. */
const HEX = (() => {
  const values = new Int8Array(128).fill(-1);
  for (let i = 0; i < 16; i++) {
    values['0123456789abcdef'.charCodeAt(i)] = i;
    values['0123456789ABCDEF'.charCodeAt(i)] = i;
  }
  return values;
})();

/** The value of the hex digit at `i` of `text`, or -1. */
function hexAt(text: string, i: number): number {
  const c = text.charCodeAt(i);
  return c < 128 ? (HEX[c] as number) : -1;
}

/**
 * A name or value of an `application/x-www-form-urlencoded` query, decoded; undefined when only the
 * full parser can say. `+` is a space and an escape of ASCII its character, decoded here (the
 * escapes a client's `encodeURIComponent` makes of a cursor's separators); any other escape is
 * UTF-8, decoded by `decodeURIComponent`.
 */
function decode(text: string): string | undefined {
  let out = '';
  let from = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x2b) {
      out += `${text.slice(from, i)} `;
      from = i + 1;
    } else if (c === 0x25) {
      const high = hexAt(text, i + 1);
      const low = high < 0 || high > 7 ? -1 : hexAt(text, i + 2);
      if (low < 0) return decodeEscapes(text);
      out += text.slice(from, i) + String.fromCharCode(high * 16 + low);
      from = i + 3;
      i += 2;
    }
  }
  return from === 0 ? text : out + text.slice(from);
}

/** `decode`, for text with an escape that is not of ASCII (or not an escape). */
function decodeEscapes(text: string): string | undefined {
  try {
    return decodeURIComponent(text.replaceAll('+', ' '));
  } catch {
    // A stray `%` or bytes that are not UTF-8: `URLSearchParams` keeps or replaces them.
    return undefined;
  }
}

/** A query's names and values in order (name, value, name, value...), or undefined when one needs the full parser. */
function splitQuery(query: string): string[] | undefined {
  const pairs: string[] = [];
  let start = 0;
  while (start <= query.length) {
    let end = query.indexOf('&', start);
    if (end === -1) end = query.length;
    if (end > start) {
      const eq = query.indexOf('=', start);
      const split = eq === -1 || eq > end ? end : eq;
      const name = decode(query.slice(start, split));
      const value = split === end ? '' : decode(query.slice(split + 1, end));
      if (name === undefined || value === undefined) return undefined;
      pairs.push(name, value);
    }
    start = end + 1;
  }
  return pairs;
}

export class Target implements Query {
  readonly pathname: string;
  #url: URL | undefined;
  /** The query as sent, until its parameters are first read. */
  #query: string | undefined;
  #pairs: string[] | undefined;

  private constructor(
    private readonly raw: string | undefined,
    pathname: string,
    query: string | undefined,
    url: URL | undefined,
  ) {
    this.pathname = pathname;
    this.#query = query;
    this.#url = url;
  }

  /** Reads a request target; a target no URL parser accepts is a `bad_request`. */
  static of(target: string | undefined): Target {
    if (target !== undefined && target.charCodeAt(0) === 0x2f && target.charCodeAt(1) !== 0x2f) {
      let q = target.indexOf('?');
      if (q === -1) q = target.length;
      if (allIn(PATH, target, 1, q) && allIn(QUERY, target, q + 1, target.length)) return new Target(target, target.slice(0, q), target.slice(q + 1), undefined);
    }
    const url = parseTarget(target);
    return new Target(target, url.pathname, undefined, url);
  }

  /** The whole target as a `URL` (on the gateway's own origin for an origin-form target). */
  get url(): URL {
    return (this.#url ??= parseTarget(this.raw));
  }

  get(name: string): string | null {
    const pairs = this.#params();
    for (let i = 0; i < pairs.length; i += 2) if (pairs[i] === name) return pairs[i + 1] as string;
    return null;
  }

  getAll(name: string): string[] {
    const pairs = this.#params();
    const all: string[] = [];
    for (let i = 0; i < pairs.length; i += 2) if (pairs[i] === name) all.push(pairs[i + 1] as string);
    return all;
  }

  has(name: string): boolean {
    return this.get(name) !== null;
  }

  #params(): string[] {
    if (this.#pairs !== undefined) return this.#pairs;
    const query = this.#query;
    this.#query = undefined;
    let pairs = query === undefined ? undefined : splitQuery(query);
    if (pairs === undefined) {
      pairs = [];
      for (const [name, value] of this.url.searchParams) pairs.push(name, value);
    }
    return (this.#pairs = pairs);
  }
}
