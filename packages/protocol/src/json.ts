/**
 * Limits on untrusted JSON text, checked by one iterative pass before `JSON.parse` sees it:
 * nesting deeper than {@link MAX_JSON_DEPTH} (every later recursive walk of the value, such as
 * `JSON.stringify`, would overflow the stack), and number literals `JSON.parse` would silently
 * change (`1e400` to Infinity, `1e-400` to 0, integers beyond 2^53 - 1 to a neighbour).
 * Syntax is left to `JSON.parse`: for valid JSON the scan tokenizes exactly, and for anything else
 * the parser refuses the text anyway.
 * @module
 */
import { TidingsError } from './codes.js';

/** Deepest array/object nesting accepted: System.Text.Json's default, far beyond real payloads (rarely 10) and shallow enough for any recursive walk. */
export const MAX_JSON_DEPTH = 64;

const QUOTE = 0x22;
const PLUS = 0x2b;
const MINUS = 0x2d;
const DOT = 0x2e;
const ZERO = 0x30;
const NINE = 0x39;
const UPPER_E = 0x45;
const OPEN_BRACKET = 0x5b;
const BACKSLASH = 0x5c;
const CLOSE_BRACKET = 0x5d;
const LOWER_E = 0x65;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;

/** Integers of at most this many digits are always safe (2^53 - 1 has 16). */
const SAFE_DIGITS = 15;
/**
 * A decimal `d.ddd` x 10^e whose integer digits + e stay within this, and whose fraction digits - e
 * also do, is finite and (unless all its digits are 0) not 0, without asking `Number`: 10^300 is
 * below the largest double (1.8e308) and 10^-300 above the smallest (4.9e-324).
 */
const SAFE_EXPONENT = 300;
/** Longest literal quoted back in a reason. */
const QUOTED = 32;

/** The literal `text[start, end)` for a reason, shortened so a huge literal is not echoed back. */
function quote(text: string, start: number, end: number): string {
  return end - start > QUOTED ? `${text.slice(start, start + QUOTED)}...` : text.slice(start, end);
}

/**
 * One pass over untrusted JSON text, without recursion and in O(length). Throws
 * `TidingsError('bad_json')` as soon as arrays/objects nest deeper than `maxDepth` (a bare scalar
 * is depth 0, `[]` depth 1), so such text never reaches `JSON.parse`. Returns the reason for the
 * first number literal `JSON.parse` would change, or `undefined`: a number is only worth refusing
 * once the text is known to be JSON, so the caller parses first and malformed text keeps the
 * parser's message. Brackets and digits inside strings are skipped, escapes included.
 */
export function scanJson(text: string, maxDepth: number = MAX_JSON_DEPTH): string | undefined {
  if (typeof text !== 'string') throw new TidingsError('bad_json', 'JSON text must be a string');
  const n = text.length;
  let depth = 0;
  let problem: string | undefined;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      // Skip the string: a backslash escapes the next character, whatever it is.
      i += 1;
      for (;;) {
        if (i >= n) return problem; // unterminated: JSON.parse refuses it
        const s = text.charCodeAt(i);
        i += 1;
        if (s === QUOTE) break;
        if (s === BACKSLASH) i += 1;
      }
    } else if (c === OPEN_BRACKET || c === OPEN_BRACE) {
      depth += 1;
      if (depth > maxDepth) throw new TidingsError('bad_json', `JSON nested deeper than ${maxDepth} levels at position ${i}`);
      i += 1;
    } else if (c === CLOSE_BRACKET || c === CLOSE_BRACE) {
      depth -= 1;
      // More closers than openers: not JSON, and the parser says so.
      if (depth < 0) return problem;
      i += 1;
    } else if (c === MINUS || (c >= ZERO && c <= NINE)) {
      // -?digits(.digits)?([eE][+-]?digits)? ; malformed literals are left to JSON.parse.
      const start = i;
      if (c === MINUS) i += 1;
      let nonZero = false;
      const intStart = i;
      let d = 0;
      while (i < n && (d = text.charCodeAt(i)) >= ZERO && d <= NINE) {
        if (d !== ZERO) nonZero = true;
        i += 1;
      }
      const intDigits = i - intStart;
      let fracDigits = 0;
      let decimal = false;
      if (i < n && text.charCodeAt(i) === DOT) {
        decimal = true;
        i += 1;
        const fracStart = i;
        while (i < n && (d = text.charCodeAt(i)) >= ZERO && d <= NINE) {
          if (d !== ZERO) nonZero = true;
          i += 1;
        }
        fracDigits = i - fracStart;
      }
      let exponent = 0;
      if (i < n && ((d = text.charCodeAt(i)) === LOWER_E || d === UPPER_E)) {
        decimal = true;
        i += 1;
        let negative = false;
        if (i < n && ((d = text.charCodeAt(i)) === PLUS || d === MINUS)) {
          negative = d === MINUS;
          i += 1;
        }
        while (i < n && (d = text.charCodeAt(i)) >= ZERO && d <= NINE) {
          if (exponent < 1e6) exponent = exponent * 10 + (d - ZERO); // capped: only its size matters
          i += 1;
        }
        if (negative) exponent = -exponent;
      }
      if (problem === undefined) {
        if (!decimal) {
          if (intDigits > SAFE_DIGITS && (intDigits > SAFE_DIGITS + 1 || !Number.isSafeInteger(Number(text.slice(start, i))))) {
            problem = `integer ${quote(text, start, i)} at position ${start} is beyond 2^53 - 1, past which integers cannot be kept exactly; send it as a string`;
          }
        } else if (intDigits + exponent > SAFE_EXPONENT || exponent - fracDigits < -SAFE_EXPONENT) {
          // Near a double's limits only the parser's own conversion can tell.
          const value = Number(text.slice(start, i));
          if (!Number.isFinite(value)) {
            problem = `number ${quote(text, start, i)} at position ${start} is too large for a double (it would become Infinity); send it as a string`;
          } else if (value === 0 && nonZero) {
            problem = `number ${quote(text, start, i)} at position ${start} is too small for a double (it would become 0); send it as a string`;
          }
        }
      }
    } else {
      // Whitespace, `,` `:`, the letters of true/false/null, or text the parser refuses.
      i += 1;
    }
  }
  return problem;
}
