/**
 * Untrusted JSON: parseJson refuses nesting deeper than MAX_JSON_DEPTH and numbers JSON.parse would
 * change, and otherwise returns exactly what JSON.parse returns. Literal fixtures, then properties
 * against JSON.parse and an independent (regex-based) oracle of the two rules.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { MAX_JSON_DEPTH, parseJson, scanJson, TidingsError } from '@tidings/protocol';
import { stringOf } from './arbitraries.js';

const LIMIT = MAX_JSON_DEPTH;
const NESTING = new RegExp(`^JSON nested deeper than ${LIMIT} levels at position \\d+$`);
const BIG_INTEGER = /^integer \S+ at position \d+ is beyond 2\^53 - 1, past which integers cannot be kept exactly; send it as a string$/;
const OVERFLOW = /^number \S+ at position \d+ is too large for a double \(it would become Infinity\); send it as a string$/;
const UNDERFLOW = /^number \S+ at position \d+ is too small for a double \(it would become 0\); send it as a string$/;

/** The reason of the bad_json TidingsError `text` is refused with (failing on any other outcome). */
function refusal(text: string): string {
  try {
    parseJson(text);
  } catch (err) {
    expect(err).toBeInstanceOf(TidingsError);
    expect((err as TidingsError).code).toBe('bad_json');
    expect((err as TidingsError).status).toBe(400);
    return (err as TidingsError).message;
  }
  throw new Error(`expected ${text.slice(0, 80)} to be refused`);
}

/** What parseJson said before the checks: the parser's own message. */
function parserReason(text: string): string {
  try {
    JSON.parse(text);
  } catch (err) {
    return `malformed JSON: ${(err as Error).message.slice(0, 120)}`;
  }
  throw new Error(`${text} is valid JSON`);
}

/** A test name for a fixture that may be thousands of characters long. */
const label = (text: string): string => (text.length > 40 ? `${text.slice(0, 24)}... (${text.length} chars)` : text);

const nestedArrays = (depth: number, inner = ''): string => '['.repeat(depth) + inner + ']'.repeat(depth);
const nestedObjects = (depth: number, inner = '1'): string => '{"a":'.repeat(depth) + inner + '}'.repeat(depth);

// ---- An independent oracle, for text JSON.parse accepts (so a regex tokenizes it exactly). ----

const TOKEN = /"(?:[^"\\]|\\[^])*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|[^]/g;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** True when JSON.parse keeps the value of the number literal `lit` (a valid JSON number). */
function numberKept(lit: string): boolean {
  if (!/[.eE]/.test(lit)) {
    const n = BigInt(lit);
    return n <= MAX_SAFE && n >= -MAX_SAFE;
  }
  const v = Number(lit);
  if (!Number.isFinite(v)) return false;
  // Zero only when every digit of the mantissa is zero.
  return v !== 0 || /^-?[0.]+(?:[eE]|$)/.test(lit);
}

/** The rule valid JSON text breaks first, if any: nesting anywhere, else a number. */
function oracle(text: string): 'ok' | 'depth' | 'number' {
  let depth = 0;
  let maxDepth = 0;
  let numbers = true;
  for (const [token] of text.matchAll(TOKEN)) {
    if (token === '[' || token === '{') maxDepth = Math.max(maxDepth, ++depth);
    else if (token === ']' || token === '}') depth -= 1;
    else if (/^-?\d/.test(token) && !numberKept(token)) numbers = false;
  }
  if (maxDepth > LIMIT) return 'depth';
  return numbers ? 'ok' : 'number';
}

/**
 * parseJson returns exactly what JSON.parse returns, or throws bad_json: the parser's message for
 * malformed text, and for valid text only when the oracle says a rule is broken, with its reason.
 */
function check(text: string): void {
  let parses = true;
  let expected: unknown;
  try {
    expected = JSON.parse(text);
  } catch {
    parses = false;
  }
  let actual: unknown;
  try {
    actual = parseJson(text);
  } catch (err) {
    if (!(err instanceof TidingsError)) throw new Error(`non-TidingsError for ${JSON.stringify(text)}: ${String(err)}`);
    if (err.code !== 'bad_json') throw new Error(`code ${err.code} for ${JSON.stringify(text)}`);
    if (!parses) {
      if (!NESTING.test(err.message)) expect(err.message).toBe(parserReason(text));
      return;
    }
    const verdict = oracle(text);
    expect(verdict, `${JSON.stringify(text)} refused: ${err.message}`).not.toBe('ok');
    if (verdict === 'depth') expect(err.message).toMatch(NESTING);
    else expect(err.message).toMatch(/send it as a string$/);
    return;
  }
  expect(parses, `${JSON.stringify(text)} accepted but JSON.parse throws`).toBe(true);
  expect(oracle(text), `${JSON.stringify(text)} accepted`).toBe('ok');
  expect(actual).toEqual(expected);
}

// ---- Arbitraries ----

const DIGITS = '0123456789';
/** Any valid JSON number literal, biased to the edges: long integers, huge and tiny exponents. */
const numberLiteralArb: fc.Arbitrary<string> = fc.oneof(
  fc.integer().map(String),
  fc.maxSafeInteger().map(String),
  fc.double({ noNaN: true, noDefaultInfinity: true }).map((d) => JSON.stringify(d)),
  fc
    .tuple(
      fc.constantFrom('', '-'),
      fc.oneof(fc.constant('0'), fc.tuple(stringOf('123456789', 1, 1), stringOf(DIGITS, 0, 24)).map(([a, b]) => a + b)),
      fc.option(fc.oneof(stringOf(DIGITS, 1, 20), fc.integer({ min: 280, max: 340 }).map((k) => '0'.repeat(k) + '1')), { nil: undefined }),
      fc.option(
        fc.tuple(fc.constantFrom('e', 'E'), fc.constantFrom('', '+', '-'), fc.oneof(fc.nat(30), fc.integer({ min: 280, max: 340 }), fc.nat(99999))),
        { nil: undefined },
      ),
    )
    .map(([sign, int, frac, exp]) => sign + int + (frac === undefined ? '' : `.${frac}`) + (exp === undefined ? '' : `${exp[0]}${exp[1]}${exp[2]}`)),
  fc.constantFrom(
    '1e400',
    '-1e400',
    '1e-400',
    '9007199254740991',
    '9007199254740992',
    '9007199254740993',
    '-9007199254740993',
    '1.5e300',
    '1.7976931348623157e308',
    '1.7976931348623159e308',
    '2.4703282292062327e-324',
    '2.4703282292062328e-324',
    '5e-324',
    '0e400',
    '0e-400',
    '-0',
    '100000000000000000000',
  ),
);

/** JSON string literals full of the characters a scanner could trip on. */
const stringLiteralArb: fc.Arbitrary<string> = fc
  .oneof(fc.string({ unit: fc.constantFrom(...'[]{}"\\,:1e-'.split('')), maxLength: 12 }), fc.string({ unit: 'binary', maxLength: 8 }))
  .map((s) => JSON.stringify(s));

const wsArb = fc.constantFrom('', '', '', ' ', '\n', '\t', '\r\n  ');

/** Valid JSON text built as text, so it can hold literals JSON.stringify never writes (1e400...). */
const { text: jsonTextArb } = fc.letrec<{ text: string; array: string; object: string }>((tie) => ({
  text: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    numberLiteralArb,
    stringLiteralArb,
    fc.constantFrom('true', 'false', 'null'),
    tie('array'),
    tie('object'),
  ),
  array: fc.tuple(wsArb, fc.array(tie('text'), { maxLength: 4 })).map(([ws, items]) => `[${ws}${items.join(`,${ws}`)}]`),
  object: fc
    .tuple(wsArb, fc.array(fc.tuple(stringLiteralArb, tie('text')), { maxLength: 4 }))
    .map(([ws, entries]) => `{${ws}${entries.map(([k, v]) => `${k}${ws}:${v}`).join(',')}}`),
}));

/** Wraps text in `levels` containers: true is an array, false an object. */
function wrap(text: string, levels: readonly boolean[]): string {
  let open = '';
  let close = '';
  for (const array of levels) {
    open += array ? '[' : '{"k":';
    close = (array ? ']' : '}') + close;
  }
  return open + text + close;
}

/** Valid JSON text near the depth limit on either side. */
const nearLimitTextArb = fc
  .tuple(jsonTextArb, fc.array(fc.boolean(), { minLength: LIMIT - 6, maxLength: LIMIT + 2 }))
  .map(([text, levels]) => wrap(text, levels));

/** JSON text with a few characters inserted, deleted or replaced. */
const mutatedTextArb = fc
  .tuple(
    fc.oneof(jsonTextArb, nearLimitTextArb),
    fc.array(fc.tuple(fc.nat(), fc.nat(2), fc.constantFrom(...'[]{}",:\\ 0129-+.eEtnx\u0000'.split(''))), { minLength: 1, maxLength: 4 }),
  )
  .map(([text, edits]) => {
    let t = text;
    for (const [at, kind, ch] of edits) {
      const i = t.length === 0 ? 0 : at % (t.length + 1);
      t = kind === 0 ? t.slice(0, i) + ch + t.slice(i) : kind === 1 ? t.slice(0, i) + t.slice(i + 1) : t.slice(0, i) + ch + t.slice(i + 1);
    }
    return t;
  });

type Value = null | boolean | number | string | Value[] | { [key: string]: Value };

/** Numbers that survive JSON text unchanged: safe integers, and doubles JSON.stringify writes with a fraction or exponent. */
const keptNumberArb = fc.oneof(
  fc.maxSafeInteger(),
  fc.double({ noNaN: true, noDefaultInfinity: true }).filter((d) => !Number.isInteger(d) || Number.isSafeInteger(d) || Math.abs(d) >= 1e21),
);

const { value: valueArb } = fc.letrec<{ value: Value; array: Value[]; object: Record<string, Value> }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constant(null),
    fc.boolean(),
    keptNumberArb,
    fc.string({ unit: 'binary', maxLength: 10 }),
    fc.string({ unit: fc.constantFrom(...'[]{}"\\'.split('')), maxLength: 10 }),
    tie('array'),
    tie('object'),
  ),
  array: fc.array(tie('value'), { maxLength: 4 }),
  object: fc.dictionary(fc.string({ maxLength: 6 }), tie('value'), { maxKeys: 4 }),
}));

function depthOf(v: Value): number {
  if (v === null || typeof v !== 'object') return 0;
  const children = Array.isArray(v) ? v : Object.values(v);
  return 1 + Math.max(0, ...children.map(depthOf));
}

// ---- Fixtures ----

describe('nesting', () => {
  it('exports a depth limit of 64 or 100', () => {
    expect([64, 100]).toContain(MAX_JSON_DEPTH);
  });

  it.each([
    ['5,000 nested arrays', nestedArrays(5000)],
    ['5,000 nested objects', nestedObjects(5000)],
    ['5,000 alternating arrays and objects', '[{"a":'.repeat(2500) + '1' + '}]'.repeat(2500)],
    ['5,000 unclosed arrays', '['.repeat(5000)],
    ['1,000,000 unclosed arrays', '['.repeat(1_000_000)],
    ['nesting after an ordinary member', `{"ok":[1,2,{"s":"x"}],"deep":${nestedArrays(5000)}}`],
  ])('refuses %s with bad_json', (_name, text) => {
    expect(refusal(text)).toMatch(NESTING);
  });

  it('names the limit and the position of the first bracket beyond it', () => {
    expect(refusal(` ${nestedArrays(LIMIT + 1)}`)).toBe(`JSON nested deeper than ${LIMIT} levels at position ${LIMIT + 1}`);
  });

  it.each([
    ['arrays', nestedArrays],
    ['objects', nestedObjects],
    ['arrays and objects', (d: number) => wrap('null', Array.from({ length: d }, (_, i) => i % 2 === 0))],
  ])('accepts %s nested exactly to the limit and refuses one level more', (_name, nest) => {
    const atLimit = nest(LIMIT);
    expect(parseJson(atLimit)).toEqual(JSON.parse(atLimit));
    expect(refusal(nest(LIMIT + 1))).toMatch(NESTING);
  });

  it('counts depth, not brackets: siblings at the limit are accepted', () => {
    const branch = nestedArrays(LIMIT - 1, '1');
    const text = `[${branch},${branch},{"a":${nestedObjects(LIMIT - 2)}}]`;
    expect(parseJson(text)).toEqual(JSON.parse(text));
  });

  it.each([
    '"[[[\\"]]]"',
    '"[[[\\\\"',
    '["\\\\",[1]]',
    '{"[":"{","\\"[":"\\\\[","]]":[]}',
    '"\\\\\\"[{"',
    JSON.stringify('['.repeat(5000)),
    JSON.stringify('{"a":'.repeat(5000)),
    JSON.stringify({ s: '\\"' + '['.repeat(100), t: '\\'.repeat(101) + '{' }),
    JSON.stringify(['1e400', '9007199254740993', '-1e-400']),
  ].map((text) => [label(text), text]))('does not count brackets or numbers inside strings: %s', (_label, text) => {
    expect(parseJson(text)).toEqual(JSON.parse(text));
  });

  it('accepts strings full of brackets at the depth limit', () => {
    const text = wrap(JSON.stringify('[{'.repeat(50) + '\\"' + ']}'), Array.from({ length: LIMIT }, () => true));
    expect(parseJson(text)).toEqual(JSON.parse(text));
    expect(refusal(`[${text}]`)).toMatch(NESTING);
  });
});

/** Numbers JSON.parse would change, and the reason each is refused with. */
const REFUSED_NUMBERS: [string, RegExp][] = [
  ['1e400', OVERFLOW],
  ['-1e400', OVERFLOW],
  ['1E+400', OVERFLOW],
  ['1.7976931348623159e308', OVERFLOW],
  [`1${'0'.repeat(400)}.5`, OVERFLOW],
  ['1e-400', UNDERFLOW],
  ['-1e-400', UNDERFLOW],
  ['2e-324', UNDERFLOW],
  [`0.${'0'.repeat(400)}1`, UNDERFLOW],
  // 2^53 itself is a double, but so is what 2^53 + 1 becomes: past MAX_SAFE_INTEGER digits are lost.
  ['9007199254740992', BIG_INTEGER],
  ['9007199254740993', BIG_INTEGER],
  ['-9007199254740993', BIG_INTEGER],
  ['12345678901234567890', BIG_INTEGER],
  ['100000000000000000000', BIG_INTEGER],
  ['[1,2,1e400]', OVERFLOW],
  ['{"n":9007199254740993}', BIG_INTEGER],
  ['{"a":[{"b":1e-400}]}', UNDERFLOW],
];

describe('numbers', () => {
  it.each(REFUSED_NUMBERS.map(([text, reason]) => [label(text), text, reason] as const))('refuses %s', (_label, text, reason) => {
    expect(refusal(text)).toMatch(reason);
  });

  it('says what to do, and where', () => {
    expect(refusal('{"id": 9007199254740993}')).toBe(
      'integer 9007199254740993 at position 7 is beyond 2^53 - 1, past which integers cannot be kept exactly; send it as a string',
    );
    expect(refusal('[1e400]')).toBe('number 1e400 at position 1 is too large for a double (it would become Infinity); send it as a string');
    expect(refusal('[0, 1e-400]')).toBe('number 1e-400 at position 4 is too small for a double (it would become 0); send it as a string');
  });

  it('does not echo a huge literal back', () => {
    expect(refusal('9'.repeat(100_000)).length).toBeLessThan(200);
  });

  it.each([
    '9007199254740991',
    '-9007199254740991',
    '1.5e300',
    '-1.5e300',
    '1.7976931348623157e308',
    '5e-324',
    '2.4703282292062328e-324',
    '1e-300',
    '0e5',
    '0.0',
    '-0',
    '-0.0',
    '0e400',
    '0E-400',
    '0.000e+999',
    '1e21',
    '0.1',
    '123.456e-7',
    `1${'0'.repeat(300)}.5`,
    `0.${'0'.repeat(300)}1`,
  ].map((text) => [label(text), text]))('accepts %s as JSON.parse reads it', (_label, text) => {
    expect(Object.is(parseJson(text), JSON.parse(text))).toBe(true);
  });
});

describe('malformed JSON', () => {
  it.each([
    '',
    ' ',
    '{"a":',
    '[1,]',
    '01',
    '1.',
    '.5',
    '-',
    '+1',
    '1e',
    'NaN',
    'Infinity',
    '"abc',
    '"\\"',
    ']',
    '[}',
    ']]][[[',
    'tru',
    '\uFEFF1',
    '"a\u0000b"',
    // Malformed text keeps the parser's message even when it also holds a number we refuse.
    '[1e400',
    '{"n":9007199254740993,}',
    '01e400',
  ])('keeps the parser message for %j', (text) => {
    expect(refusal(text)).toBe(parserReason(text));
  });
});

describe('scanJson', () => {
  it('returns nothing for JSON it would keep, the number problem for a number, and throws for nesting', () => {
    expect(scanJson('{"a":[1,2.5,"x"]}')).toBeUndefined();
    expect(scanJson('[9007199254740993, 1e400]')).toMatch(BIG_INTEGER);
    expect(() => scanJson(nestedArrays(LIMIT + 1))).toThrow(TidingsError);
  });

  it('takes another depth limit', () => {
    expect(scanJson(nestedArrays(3), 3)).toBeUndefined();
    expect(() => scanJson(nestedArrays(4), 3)).toThrow('JSON nested deeper than 3 levels at position 3');
    expect(() => scanJson('[]', 0)).toThrow('JSON nested deeper than 0 levels at position 0');
  });

  it('throws only TidingsError for a non-string', () => {
    expect(() => scanJson(undefined as unknown as string)).toThrow(TidingsError);
    expect(() => parseJson(42 as unknown as string)).toThrow(TidingsError);
  });
});

// ---- Properties ----

describe('properties', () => {
  it('(a) returns what JSON.parse returns for any JSON value within the limit with numbers it keeps', () => {
    const textArb = fc
      .tuple(valueArb, fc.array(fc.boolean(), { maxLength: LIMIT }), fc.constantFrom(undefined, 1, '\t'))
      .map(([v, levels, indent]) => {
        let value = v;
        for (const array of levels.slice(0, LIMIT - depthOf(v))) value = array ? [value] : { k: value };
        return JSON.stringify(value, null, indent);
      });
    fc.assert(
      fc.property(textArb, (text) => {
        expect(parseJson(text)).toEqual(JSON.parse(text));
      }),
      { numRuns: 1000 },
    );
  });

  it('(b) on any string, returns what JSON.parse returns or throws bad_json for a reason the oracle confirms', () => {
    fc.assert(fc.property(fc.string(), check), { numRuns: 1000 });
    // fast-check 4's full-Unicode strings (formerly fc.fullUnicodeString).
    fc.assert(fc.property(fc.string({ unit: 'binary' }), check), { numRuns: 1000 });
    fc.assert(fc.property(stringOf('[]{}",:\\ 019-+.eE', 0, 30), check), { numRuns: 1000 });
    fc.assert(fc.property(fc.oneof(jsonTextArb, nearLimitTextArb), check), { numRuns: 1500 });
    fc.assert(fc.property(mutatedTextArb, check), { numRuns: 1500 });
  });

  it('(b) refuses a number literal exactly when JSON.parse would change it', () => {
    fc.assert(
      fc.property(numberLiteralArb, fc.constantFrom('%', '[%]', '{"n": %}', '[1, "]", %, 2]'), (lit, template) => {
        const text = template.replace('%', lit);
        if (numberKept(lit)) {
          expect(Object.is(parseJson(lit), JSON.parse(lit))).toBe(true);
          expect(parseJson(text)).toEqual(JSON.parse(text));
        } else {
          const reason = refusal(text);
          const v = Number(lit);
          expect(reason).toMatch(!/[.eE]/.test(lit) ? BIG_INTEGER : Number.isFinite(v) ? UNDERFLOW : OVERFLOW);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('(c) always refuses nesting deeper than the limit', () => {
    const deepArb = fc.tuple(
      fc.array(fc.boolean(), { minLength: LIMIT + 1, maxLength: LIMIT + 300 }),
      jsonTextArb,
      fc.array(fc.tuple(stringLiteralArb, wsArb), { maxLength: 5 }),
      fc.boolean(),
    );
    fc.assert(
      fc.property(deepArb, ([levels, inner, siblings, truncate]) => {
        let text = wrap(inner, levels);
        // Ordinary members (with bracket-filled strings) before the deep one.
        for (const [s, ws] of siblings) text = `{${ws}${s}:${s},${ws}"deep":${text}}`;
        if (truncate) text = text.slice(0, text.lastIndexOf(inner) + inner.length);
        expect(refusal(text)).toMatch(NESTING);
      }),
      { numRuns: 500 },
    );
  });
});
