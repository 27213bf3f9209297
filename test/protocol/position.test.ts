/**
 * Positions and cursors: text round-trips, literal fixtures, and that parsing untrusted cursor
 * text only ever yields a valid cursor or a `bad_cursor` error.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  channelProblem,
  formatCursor,
  formatCursorEntry,
  formatPosition,
  MAX_CURSOR_CHANNELS,
  MAX_CURSOR_LENGTH,
  parseCursor,
  parsePosition,
  positionProblem,
  samePosition,
  TidingsError,
  toPosition,
  type Position,
} from '@tidings/protocol';
import { channelArb, cursorEntriesArb, epochArb, positionArb, seqArb, stringOf } from './arbitraries.js';

const RUNS = { numRuns: 1000 };

/** Runs `fn`, returning the TidingsError it threw (failing on any other outcome). */
function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(TidingsError);
    return (err as TidingsError).code;
  }
  throw new Error('expected a TidingsError, nothing was thrown');
}

/** parseCursor either returns a fully valid cursor or throws bad_cursor; anything else fails. */
function checkParseOutcome(text: string): Map<string, Position> | undefined {
  let cursor: Map<string, Position>;
  try {
    cursor = parseCursor(text);
  } catch (err) {
    if (!(err instanceof TidingsError)) throw new Error(`parseCursor threw a non-TidingsError for ${JSON.stringify(text)}: ${String(err)}`);
    if (err.code !== 'bad_cursor') throw new Error(`parseCursor threw code ${err.code} for ${JSON.stringify(text)}`);
    return undefined;
  }
  expect(cursor.size).toBeLessThanOrEqual(MAX_CURSOR_CHANNELS);
  for (const [channel, p] of cursor) {
    expect(channelProblem(channel)).toBeUndefined();
    expect(positionProblem(p)).toBeUndefined();
  }
  // What parses re-parses to the same cursor from its canonical text.
  expect([...parseCursor(formatCursor(cursor))]).toEqual([...cursor]);
  return cursor;
}

describe('formatPosition / parsePosition', () => {
  it.each([
    [{ epoch: 'ab12cd34', seq: 0 }, 'ab12cd34.0'],
    [{ epoch: 'ab12cd34', seq: 46 }, 'ab12cd34.1a'],
    [{ epoch: 'E', seq: 35 }, 'E.z'],
    [{ epoch: 'E', seq: 36 }, 'E.10'],
    [{ epoch: 'Zz9', seq: 1295 }, 'Zz9.zz'],
    [{ epoch: '0123456789abcdef', seq: Number.MAX_SAFE_INTEGER }, '0123456789abcdef.2gosa7pa2gv'],
  ])('%o <-> %s', (p, text) => {
    expect(formatPosition(p)).toBe(text);
    expect(parsePosition(text)).toEqual(p);
  });

  it('accepts leading zeros in the seq (not canonical, same value)', () => {
    expect(parsePosition('e.01')).toEqual({ epoch: 'e', seq: 1 });
    expect(parsePosition('e.00000000000')).toEqual({ epoch: 'e', seq: 0 });
  });

  it.each([
    '',
    'e',
    'e1',
    '.1',
    'e.',
    'e.-1',
    'e.+1',
    'e.1.2',
    'e.A', // seq is lower-case base 36
    'e. 1',
    'e.1 ',
    ' e.1',
    'e-1.1',
    'e_1.1',
    'ü.1',
    'e.ü',
    '01234567890abcdefg.1', // epoch of 17+
    'abcdefghijklmnopq.1', // epoch of 17
    'e.2gosa7pa2gw', // 2^53, not a safe integer
    'e.zzzzzzzzzzz', // 11 digits, far beyond safe
    'e.000000000001', // 12 digits
  ])('rejects %j', (text) => {
    expect(parsePosition(text)).toBeUndefined();
  });

  it('round-trips every valid position', () => {
    fc.assert(
      fc.property(positionArb, (p) => {
        const text = formatPosition(p);
        expect(text).toMatch(/^[A-Za-z0-9]{1,16}\.[0-9a-z]{1,11}$/);
        expect(parsePosition(text)).toEqual(p);
      }),
      RUNS,
    );
  });

  it('parses only what it can format back (canonically, up to leading zeros)', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), stringOf('aZ09.-z ', 0, 20)), (text) => {
        const p = parsePosition(text);
        if (p === undefined) return;
        expect(positionProblem(p)).toBeUndefined();
        const [epoch, seq36] = text.split('.');
        expect(p.epoch).toBe(epoch);
        expect(formatPosition(p)).toBe(`${epoch}.${(seq36 ?? '').replace(/^0+(?=.)/, '')}`);
      }),
      RUNS,
    );
  });
});

describe('positionProblem / toPosition / samePosition', () => {
  it('accepts valid positions and copies only epoch and seq', () => {
    expect(positionProblem({ epoch: 'a', seq: 0 })).toBeUndefined();
    expect(toPosition({ epoch: 'ab12', seq: 7, extra: true })).toEqual({ epoch: 'ab12', seq: 7 });
    expect(Object.keys(toPosition({ epoch: 'ab12', seq: 7, extra: true }))).toEqual(['epoch', 'seq']);
  });

  it.each([
    [null, 'position must be an object { epoch, seq }'],
    ['a.1', 'position must be an object { epoch, seq }'],
    [{ seq: 1 }, 'position.epoch must be 1-16 letters or digits'],
    [{ epoch: '', seq: 1 }, 'position.epoch must be 1-16 letters or digits'],
    [{ epoch: 'a.b', seq: 1 }, 'position.epoch must be 1-16 letters or digits'],
    [{ epoch: 'a'.repeat(17), seq: 1 }, 'position.epoch must be 1-16 letters or digits'],
    [{ epoch: 'a' }, 'position.seq must be a non-negative integer'],
    [{ epoch: 'a', seq: -1 }, 'position.seq must be a non-negative integer'],
    [{ epoch: 'a', seq: 1.5 }, 'position.seq must be a non-negative integer'],
    [{ epoch: 'a', seq: Number.NaN }, 'position.seq must be a non-negative integer'],
    [{ epoch: 'a', seq: Number.MAX_SAFE_INTEGER + 1 }, 'position.seq must be a non-negative integer'],
    [{ epoch: 'a', seq: '1' }, 'position.seq must be a non-negative integer'],
  ])('rejects %o with %j', (value, reason) => {
    expect(positionProblem(value)).toBe(reason);
    expect(() => toPosition(value)).toThrow(reason);
    expect(codeOf(() => toPosition(value))).toBe('bad_position');
  });

  it('compares epoch and seq', () => {
    expect(samePosition({ epoch: 'a', seq: 1 }, { epoch: 'a', seq: 1 })).toBe(true);
    expect(samePosition({ epoch: 'a', seq: 1 }, { epoch: 'a', seq: 2 })).toBe(false);
    expect(samePosition({ epoch: 'a', seq: 1 }, { epoch: 'A', seq: 1 })).toBe(false);
  });
});

/**
 * The cursor's grammar as patterns and splits: the reference the parser (which reads entries in
 * place, by hand) must agree with, outcome for outcome and reason for reason.
 */
function referenceCursor(text: string): Map<string, Position> {
  const cursor = new Map<string, Position>();
  if (text === '') return cursor;
  if (text.length > MAX_CURSOR_LENGTH) throw new TidingsError('bad_cursor', 'cursor is too long');
  const entries = text.split(',');
  if (entries.length > MAX_CURSOR_CHANNELS) throw new TidingsError('bad_cursor', `cursor names more than ${MAX_CURSOR_CHANNELS} channels`);
  for (const entry of entries) {
    const eq = entry.lastIndexOf('=');
    if (eq === -1) throw new TidingsError('bad_cursor', 'cursor entry must be channel=epoch.seq');
    const channel = entry.slice(0, eq);
    const problem = channelProblem(channel);
    if (problem !== undefined) throw new TidingsError('bad_cursor', `cursor entry: ${problem}`);
    const m = /^([A-Za-z0-9]{1,16})\.([0-9a-z]{1,11})$/.exec(entry.slice(eq + 1));
    const seq = m === null ? Number.NaN : parseInt(m[2] as string, 36);
    if (m === null || !Number.isSafeInteger(seq)) throw new TidingsError('bad_cursor', `cursor entry for ${channel} has a malformed position`);
    if (cursor.has(channel)) throw new TidingsError('bad_cursor', `cursor names ${channel} twice`);
    cursor.set(channel, { epoch: m[1] as string, seq });
  }
  return cursor;
}

/** What parsing gives: the entries, or the error's code and reason. */
function outcome(parse: (text: string) => Map<string, Position>, text: string): unknown {
  try {
    return [...parse(text)];
  } catch (err) {
    return err instanceof TidingsError ? `${err.code}: ${err.message}` : err;
  }
}

describe('parseCursor against its reference grammar', () => {
  /** Near-valid cursors: valid entries, each maybe cut, doubled, or with a character changed. */
  const nearCursorArb = fc
    .tuple(cursorEntriesArb, fc.array(fc.tuple(fc.nat(), stringOf('=.,:aZ9z ü', 0, 3)), { maxLength: 3 }))
    .map(([entries, edits]) => {
      let text = formatCursor(new Map(entries));
      for (const [at, insert] of edits) {
        const i = text.length === 0 ? 0 : at % text.length;
        text = text.slice(0, i) + insert + text.slice(i + (at % 2));
      }
      return text;
    });

  it('agrees on near-valid cursors, seqs around 2^53 or of around 11 digits, and arbitrary strings', () => {
    // Seqs around 2^53, and small ones padded with zeros to around the most digits allowed.
    const bigSeqArb = fc.bigInt({ min: 2n ** 53n - 40n, max: 2n ** 53n + 40n }).map((n) => `a=e.${n.toString(36)}`);
    const paddedSeqArb = fc.tuple(fc.nat(), fc.integer({ min: 9, max: 13 })).map(([n, width]) => `a=e.${n.toString(36).padStart(width, '0')}`);
    fc.assert(
      fc.property(fc.oneof(nearCursorArb, bigSeqArb, paddedSeqArb, stringOf('ab:=.,1z ', 0, 30), fc.string()), (text) => {
        expect(outcome(parseCursor, text)).toEqual(outcome(referenceCursor, text));
      }),
      { numRuns: 5000 },
    );
  });
});

describe('formatCursor / parseCursor', () => {
  it('parses literal fixtures', () => {
    expect([...parseCursor('news=ab12cd34.1a')]).toEqual([['news', { epoch: 'ab12cd34', seq: 46 }]]);
    expect([...parseCursor('chat:room-1=E1.0,news=x.zz,a/b@c.d=Q.10')]).toEqual([
      ['chat:room-1', { epoch: 'E1', seq: 0 }],
      ['news', { epoch: 'x', seq: 1295 }],
      ['a/b@c.d', { epoch: 'Q', seq: 36 }],
    ]);
    // A name may contain ':' after the namespace.
    expect([...parseCursor('ns:a:b=e.1')]).toEqual([['ns:a:b', { epoch: 'e', seq: 1 }]]);
    expect(parseCursor('').size).toBe(0);
  });

  it('formats literal fixtures in map order', () => {
    const cursor = new Map<string, Position>([
      ['news', { epoch: 'ab12cd34', seq: 46 }],
      ['chat:room-1', { epoch: 'E1', seq: 0 }],
    ]);
    expect(formatCursor(cursor)).toBe('news=ab12cd34.1a,chat:room-1=E1.0');
    expect(formatCursor(new Map())).toBe('');
    expect(formatCursorEntry('a', { epoch: 'b', seq: 36 })).toBe('a=b.10');
  });

  it('round-trips every valid cursor, keeping entry order', () => {
    fc.assert(
      fc.property(cursorEntriesArb, (entries) => {
        const text = formatCursor(new Map(entries));
        expect(text.length).toBeLessThanOrEqual(MAX_CURSOR_LENGTH);
        expect([...parseCursor(text)]).toEqual(entries);
      }),
      RUNS,
    );
  });

  it('accepts the largest cursor: 64 channels of 200 characters at the largest positions', () => {
    const entries: [string, Position][] = Array.from({ length: MAX_CURSOR_CHANNELS }, (_, i) => [
      `${String(i).padStart(2, '0')}${'x'.repeat(198)}`,
      { epoch: 'E'.repeat(16), seq: Number.MAX_SAFE_INTEGER },
    ]);
    const text = formatCursor(new Map(entries));
    expect(text.length).toBe(64 * (200 + 1 + 16 + 1 + 11) + 63);
    expect([...parseCursor(text)]).toEqual(entries);
  });

  it('rejects 65 channels and over-long text', () => {
    const entries = Array.from({ length: MAX_CURSOR_CHANNELS + 1 }, (_, i) => `c${i}=e.1`);
    expect(() => parseCursor(entries.join(','))).toThrow(`cursor names more than ${MAX_CURSOR_CHANNELS} channels`);
    expect(codeOf(() => parseCursor(entries.join(',')))).toBe('bad_cursor');
    expect(codeOf(() => parseCursor('a'.repeat(MAX_CURSOR_LENGTH + 1)))).toBe('bad_cursor');
    expect(() => parseCursor('a'.repeat(MAX_CURSOR_LENGTH + 1))).toThrow('cursor is too long');
  });

  it.each([
    ['news', 'cursor entry must be channel=epoch.seq'],
    [',', 'cursor entry must be channel=epoch.seq'],
    ['news=e.1,', 'cursor entry must be channel=epoch.seq'],
    [',news=e.1', 'cursor entry must be channel=epoch.seq'],
    ['=e.1', 'cursor entry: channel must not be empty'],
    ['a==e.1', 'cursor entry: channel may contain only letters, digits and _ . - @ / :'],
    ['a b=e.1', 'cursor entry: channel may contain only letters, digits and _ . - @ / :'],
    [':a=e.1', 'cursor entry: namespace must be 1-32 letters, digits, _ or -'],
    ['news=', 'cursor entry for news has a malformed position'],
    ['news=e', 'cursor entry for news has a malformed position'],
    ['news=e.1 ', 'cursor entry for news has a malformed position'],
    ['news=e.Z', 'cursor entry for news has a malformed position'],
    ['news=e.2gosa7pa2gw', 'cursor entry for news has a malformed position'],
    ['news=e.1,news=f.2', 'cursor names news twice'],
  ])('rejects %j: %s', (text, reason) => {
    expect(() => parseCursor(text)).toThrow(reason);
    expect(codeOf(() => parseCursor(text))).toBe('bad_cursor');
  });

  it('rejects arbitrary strings with bad_cursor and nothing else', () => {
    let parsed = 0;
    fc.assert(
      fc.property(fc.string(), (text) => {
        if (checkParseOutcome(text) !== undefined) parsed++;
      }),
      RUNS,
    );
    // fc.string() rarely forms a valid cursor: the empty string (or a lucky `a=b.c`).
    expect(parsed).toBeLessThan(RUNS.numRuns / 2);
  });

  it('rejects arbitrary unicode (full code point range) with bad_cursor and nothing else', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'binary' }), fc.string({ unit: 'grapheme' })), (text) => {
        checkParseOutcome(text);
      }),
      RUNS,
    );
  });

  it('handles strings over the cursor alphabet (often valid) without ever throwing anything else', () => {
    let parsed = 0;
    let rejected = 0;
    fc.assert(
      fc.property(stringOf('ab:=.,1z ', 0, 30), (text) => {
        if (checkParseOutcome(text) === undefined) rejected++;
        else parsed++;
      }),
      RUNS,
    );
    expect(parsed).toBeGreaterThan(20);
    expect(rejected).toBeGreaterThan(20);
  });

  it('every truncation of a valid cursor parses to a valid cursor or bad_cursor', () => {
    fc.assert(
      fc.property(cursorEntriesArb, fc.nat(), (entries, n) => {
        const text = formatCursor(new Map(entries));
        const cut = text.slice(0, text.length === 0 ? 0 : n % (text.length + 1));
        const cursor = checkParseOutcome(cut);
        if (cursor !== undefined && cursor.size > 0) {
          // A truncation that parses keeps a prefix of the channels, the last one possibly shortened.
          const names = [...cursor.keys()];
          const prefix = entries.slice(0, names.length - 1).map(([c]) => c);
          expect(names.slice(0, -1)).toEqual(prefix);
        }
      }),
      RUNS,
    );
  });

  it('every single-character mutation of a valid cursor parses to a valid cursor or bad_cursor', () => {
    const specials = fc.constantFrom(',', '=', '.', ':', ' ', '\n', '\u0000', 'é', '😀', '\ud800', 'A', 'z', '0', '-', '%', '"');
    fc.assert(
      fc.property(
        cursorEntriesArb.filter((e) => e.length > 0),
        fc.nat(),
        fc.constantFrom('insert', 'replace', 'delete'),
        specials,
        (entries, n, op, ch) => {
          const text = formatCursor(new Map(entries));
          const i = n % text.length;
          const mutated =
            op === 'insert'
              ? text.slice(0, i) + ch + text.slice(i)
              : op === 'replace'
                ? text.slice(0, i) + ch + text.slice(i + 1)
                : text.slice(0, i) + text.slice(i + 1);
          checkParseOutcome(mutated);
        },
      ),
      RUNS,
    );
  });

  it('rejects a valid cursor with a character that is never valid spliced in a channel', () => {
    fc.assert(
      fc.property(channelArb, epochArb, seqArb, fc.constantFrom(' ', '\t', '\n', 'é', '#', '?', '+', '"'), fc.nat(), (c, epoch, seq, bad, n) => {
        const i = n % (c.length + 1);
        const channel = c.slice(0, i) + bad + c.slice(i);
        const text = formatCursorEntry(channel, { epoch, seq });
        expect(codeOf(() => parseCursor(text))).toBe('bad_cursor');
      }),
      RUNS,
    );
  });
});
