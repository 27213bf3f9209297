/**
 * Admission parses an origin-form request target as one absolute URL (the cheaper parse), and must
 * read every target exactly as it did against a base: the same URL, or the same refusal. A plain
 * target is split by hand and its URL made only when asked: it must read as the URL and its
 * `URLSearchParams` read it.
 */
import fc from 'fast-check';
import { expect, it } from 'vitest';
import { TidingsError } from '@tidings/protocol';
import { parseTarget, Target, type Query } from '../../packages/server/src/http/target.js';

/**
 * Whether a URL parser would rewrite the target's path: a backslash (read as `/`) or a `.` / `..`
 * segment, also percent-encoded (resolved away), once tabs and newlines are dropped.
 */
function rewritten(target: string): boolean {
  const path = target.split(/[?#]/)[0]?.replace(/[\t\n\r]/g, '') ?? '';
  return path.includes('\\') || path.split('/').some((segment) => ['.', '..'].includes(segment.replace(/%2e/gi, '.')));
}

/** The parse against a base, which the fast form must match; a path it would rewrite is refused instead. */
function againstBase(target: string): string {
  if (rewritten(target)) return 'refused';
  try {
    return new URL(target, 'http://gateway').href;
  } catch {
    return 'refused';
  }
}

function parsed(target: string): string {
  try {
    return parseTarget(target).href;
  } catch (err) {
    expect(err).toBeInstanceOf(TidingsError);
    return 'refused';
  }
}

// What makes URL parsing differ: slashes either way, dot segments, percent signs, query and fragment
// marks, an authority's marks, tabs, newlines and other controls, spaces, non-ASCII.
const char = fc.constantFrom('/', '\\', '.', '..', '%', '%2e', '%zz', '?', '#', '@', ':', '[', ']', 'a', 'Z', '0', '=', '&', '+', ' ', '\t', '\n', '\r', '\u0000', '\u001f', '\u007f', 'é', '😀');
const target = fc.tuple(fc.constantFrom('/', '//', '/\\', '\\', '', 'http://h', 'x'), fc.array(char, { maxLength: 12 })).map(([start, rest]) => start + rest.join(''));

it('reads any target as it is read against a base, and refuses one whose path that parse would rewrite', () => {
  fc.assert(
    fc.property(target, (t) => {
      expect(parsed(t)).toBe(againstBase(t));
    }),
    { numRuns: 20_000 },
  );
  for (const t of ['/poll?channel=a&cursor=a%3Dx.1', '/a/../b', '/./x?y#z', '//evil/x', '/\\evil', '/x\ty', 'http://other/ws']) expect(parsed(t), t).toBe(againstBase(t));
  // Past a proxy's rule for `/metrics`, these would reach it.
  for (const t of ['/a\\..\\metrics', '/%2e%2e/metrics', '/a/%2E./metrics', '/x/../metrics', '/.\t./metrics', 'http://h/a/../metrics']) expect(parsed(t), t).toBe('refused');
  for (const t of ['/poll?channel=a..b', '/a.b/c', '/..a/b', '/sse?x=/../']) expect(parsed(t), t).not.toBe('refused');
});

/** What a `URL` and its `URLSearchParams` make of a target: the reading `Target` must match. */
function reading(t: string, read: (t: string) => { pathname: string; href: () => string; query: Query }): unknown {
  let target;
  try {
    target = read(t);
  } catch (err) {
    expect(err).toBeInstanceOf(TidingsError);
    return 'refused';
  }
  const params = Object.fromEntries(NAMES.map((n) => [n, [target.query.get(n), target.query.getAll(n), target.query.has(n)]]));
  return { pathname: target.pathname, href: target.href(), params };
}
const NAMES = ['channel', 'cursor', 'a', 'é', '', ' ', 'a b', '+'];
const byUrl = (t: string) => {
  const url = parseTarget(t);
  return { pathname: url.pathname, href: () => url.href, query: url.searchParams };
};
const byTarget = (t: string) => {
  const target = Target.of(t);
  return { pathname: target.pathname, href: () => target.url.href, query: target };
};

// Plain paths and queries (the hand-split form) with every escape that decodes differently, and
// characters that make a target need the full parser.
const pathPart = fc.constantFrom('a', 'Z', '0', '-', '_', '~', '/', '.', '%', '%2e', '\\', ' ', 'é', ':', '@', '!');
const queryPart = fc.constantFrom('channel', 'cursor', 'a', '=', '&', '+', '%2B', '%20', '%', '%z', '%zz', '%C3%A9', '%E9', '%ED%A0%80', '%EF%BB%BF', '%00', '?', '#', '"', "'", '<', ' ', 'é', '`', ':', '/', ',', '%3A');
const plainish = fc
  .tuple(fc.array(pathPart, { maxLength: 6 }), fc.option(fc.array(queryPart, { maxLength: 14 })))
  .map(([path, query]) => `/${path.join('')}${query === null ? '' : `?${query.join('')}`}`);

it('reads a target as a URL and its URLSearchParams read it: the path, every parameter, the URL, or the refusal', () => {
  fc.assert(
    fc.property(fc.oneof(plainish, target), (t) => {
      expect(reading(t, byTarget)).toEqual(reading(t, byUrl));
    }),
    { numRuns: 20_000 },
  );
  for (const t of ['/poll?channel=news&cursor=news%3Aab%3A12&timeout=0', '/poll?channel=a,b&channel=c', '/ws', '/', '/poll?', '/poll?&&=&a', '/p?a=b?c=d', '/p?a=%zz&b=1', '/p?+a+=+b+', '/p?a=+%C3%A9+', '/p?a=%E9+x', '/p?a=+%zz+%3A'])
    expect(reading(t, byTarget), t).toEqual(reading(t, byUrl));
});
