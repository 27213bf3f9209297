/**
 * Admission parses an origin-form request target as one absolute URL (the cheaper parse), and must
 * read every target exactly as it did against a base: the same URL, or the same refusal.
 */
import fc from 'fast-check';
import { expect, it } from 'vitest';
import { TidingsError } from '@tidings/protocol';
import { parseTarget } from '../../packages/server/src/admission.js';

/** The parse against a base, which the fast form must match. */
function againstBase(target: string): string {
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

it('reads any target as it is read against a base', () => {
  fc.assert(
    fc.property(target, (t) => {
      expect(parsed(t)).toBe(againstBase(t));
    }),
    { numRuns: 20_000 },
  );
  for (const t of ['/poll?channel=a&cursor=a%3Dx.1', '/a/../b', '/./x?y#z', '//evil/x', '/\\evil', '/x\ty', 'http://other/ws']) expect(parsed(t), t).toBe(againstBase(t));
});
