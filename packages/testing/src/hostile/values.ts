/**
 * Channel names, positions and cursors: real ones to mutate, forged ones, and ones that are not
 * positions at all.
 * @module
 */
import fc from 'fast-check';
import { formatPosition } from '@tidings/protocol';
import { ALNUM, mutationArb, NAME_CHARS, SEQ36, stringOf, type HostileContext } from './attack.js';
// ---------------------------------------------------------------------------------------------
// Channels, positions, cursors

/** Builds the channel-level arbitraries for a context. */
export function channels(ctx: HostileContext) {
  const { open, locked, ephemeral, secret } = ctx.namespaces;
  const name = stringOf(NAME_CHARS, 1, 24);
  const fresh = fc.tuple(fc.constantFrom(open, locked, ephemeral, secret, 'demo', 'typing'), name).map(([ns, n]) => `${ns}:${n}`);
  const knownArb = fc.constantFrom(...ctx.known.map((k) => k.channel));
  /** Names that parse but are refused by policy: unknown namespaces, over-long, the default namespace. */
  const policy = fc.oneof(
    fc.tuple(stringOf(ALNUM, 1, 32), name).map(([ns, n]) => `${ns}:${n}`),
    stringOf(NAME_CHARS.replace(':', ''), 1, 24),
    fc.constant(`${'n'.repeat(32)}:${'x'.repeat(200 - 33)}`),
  );
  const invalid = fc.oneof(
    fc.constantFrom('', ' ', ':', '::', ':x', 'x:', `${open}:`, 'a b', 'a,b', 'a=b', 'a\tb', 'é', '😀', '\u0000', 'x'.repeat(201), `${'n'.repeat(33)}:x`, 'a\nb', '%41', '..', 'open:a b'),
    fc.string({ maxLength: 30 }),
    fc.string({ unit: 'grapheme', maxLength: 12 }),
  );
  const valid = fc.oneof({ arbitrary: fresh, weight: 4 }, { arbitrary: knownArb, weight: 3 }, { arbitrary: policy, weight: 1 });
  const any = fc.oneof({ arbitrary: valid, weight: 3 }, { arbitrary: invalid, weight: 1 });
  const safe = (arb: fc.Arbitrary<string>): fc.Arbitrary<string> => arb.filter((c) => !c.startsWith(ctx.forbiddenPrefix));
  return { fresh: safe(fresh), known: knownArb, valid: safe(valid), invalid: safe(invalid), any: safe(any) };
}

/** Position values, from exact to forged to not positions at all. */
export function positions(ctx: HostileContext) {
  const epoch = stringOf(ALNUM, 1, 16);
  const seq = fc.oneof(fc.nat(50), fc.maxSafeNat(), fc.constantFrom(0, 1, 2 ** 31, 2 ** 32, 2 ** 53 - 1));
  const real = fc.constantFrom(...ctx.known.map((k) => k.position));
  const forged = fc.oneof(
    real,
    real.chain((p) => fc.integer({ min: 1, max: 1_000_000 }).map((d) => ({ epoch: p.epoch, seq: p.seq + d }))),
    real.map((p) => ({ epoch: p.epoch, seq: Math.max(0, p.seq - 1) })),
    fc.record({ epoch, seq }),
  );
  const garbage: fc.Arbitrary<unknown> = fc.oneof(
    fc.constantFrom(null, 0, 'x', [], {}, { epoch: 'a' }, { seq: 1 }, { epoch: '', seq: 1 }, { epoch: 'x'.repeat(17), seq: 1 }),
    fc.constantFrom({ epoch: 'a', seq: -1 }, { epoch: 'a', seq: 1.5 }, { epoch: 'a', seq: 2 ** 53 }, { epoch: 'a', seq: '1' }, { epoch: 'a-b', seq: 1 }),
    fc.jsonValue({ maxDepth: 2 }),
  );
  return { real, forged, garbage, any: fc.oneof({ arbitrary: forged, weight: 3 }, { arbitrary: garbage, weight: 1 }) };
}

/**
 * Cursor text (poll `cursor`, SSE `Last-Event-ID`): valid cursors of real positions, then every
 * way of getting them wrong: wrong epochs, seqs past 2^53 or ahead of the channel, duplicates,
 * stray separators, too many entries, too long, unicode and control bytes.
 */
export function cursorArb(ctx: HostileContext): fc.Arbitrary<string> {
  const ch = channels(ctx);
  const pos = positions(ctx);
  const entry = fc.oneof(
    fc.tuple(ch.known, pos.forged).map(([c, p]) => `${c}=${formatPosition(p)}`),
    fc.tuple(ch.valid, pos.forged).map(([c, p]) => `${c}=${formatPosition(p)}`),
    fc.tuple(ch.known, stringOf(ALNUM, 1, 16), stringOf(SEQ36, 1, 14)).map(([c, e, s]) => `${c}=${e}.${s}`),
  );
  const valid = fc.array(entry, { minLength: 1, maxLength: 6 }).map((es) => es.join(','));
  const separators = fc.tuple(valid, fc.constantFrom(',', ',,', '=', '==', '.', '..', ';', ' ', '\t', '=,', ',=', '%2C', '+')).chain(([v, sep]) =>
    fc.constantFrom(`${v}${sep}`, `${sep}${v}`, v.replace(',', sep), v.replace('=', sep), v.replace('.', sep), `${v},${v}`),
  );
  const duplicate = fc.tuple(ch.known, pos.forged, pos.forged).map(([c, a, b]) => `${c}=${formatPosition(a)},${c}=${formatPosition(b)}`);
  const tooMany = fc.integer({ min: 65, max: 300 }).map((n) => Array.from({ length: n }, (_, i) => `c${i}=a.${i.toString(36)}`).join(','));
  const tooLong = fc.integer({ min: 15_000, max: 40_000 }).map((n) => `a=b.${'1'.repeat(n)}`);
  const hugeSeq = fc.tuple(ch.known, fc.constantFrom('zzzzzzzzzzz', 'zzzzzzzzzzzz', '1y2p0ij32e8e7', '2gosa7pa2gv', '-1', '1e9', '0x1', 'A')).map(([c, s]) => `${c}=aaaa.${s}`);
  return fc.oneof(
    { arbitrary: valid, weight: 4 },
    { arbitrary: separators, weight: 2 },
    { arbitrary: duplicate, weight: 1 },
    { arbitrary: hugeSeq, weight: 1 },
    { arbitrary: mutationArb(valid), weight: 3 },
    { arbitrary: tooMany, weight: 1 },
    { arbitrary: tooLong, weight: 1 },
    { arbitrary: fc.string({ unit: 'grapheme', maxLength: 40 }), weight: 1 },
  );
}

