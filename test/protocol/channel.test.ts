/**
 * Channel names and message types: grammar fixtures, splitting, and properties against an
 * independent oracle of the grammar.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  channelProblem,
  isChannel,
  MAX_CHANNEL_LENGTH,
  MAX_TYPE_LENGTH,
  messageTypeProblem,
  parseChannel,
  TidingsError,
} from '@tidings/protocol';
import { BARE_CHARS, channelArb, messageTypeArb, NAME_CHARS, NAMESPACE_CHARS, stringOf, TYPE_WORD_CHARS } from './arbitraries.js';

const RUNS = { numRuns: 1000 };

const CHARS_PROBLEM = 'channel may contain only letters, digits and _ . - @ / :';
const NAMESPACE_PROBLEM = 'namespace must be 1-32 letters, digits, _ or -';

/** The grammar, restated without regular expressions. */
function oracleValid(c: string): boolean {
  if (c.length === 0 || c.length > MAX_CHANNEL_LENGTH) return false;
  const colon = c.indexOf(':');
  const all = (s: string, set: string): boolean => [...s].every((ch) => set.includes(ch));
  if (colon === -1) return all(c, BARE_CHARS);
  const ns = c.slice(0, colon);
  const name = c.slice(colon + 1);
  return ns.length >= 1 && ns.length <= 32 && all(ns, NAMESPACE_CHARS) && name.length > 0 && all(name, NAME_CHARS);
}

function badChannelReason(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(TidingsError);
    expect((err as TidingsError).code).toBe('bad_channel');
    expect((err as TidingsError).status).toBe(400);
    return (err as TidingsError).message;
  }
  throw new Error('expected bad_channel, nothing was thrown');
}

describe('channel grammar', () => {
  it.each([
    ['a', '', 'a'],
    ['news', '', 'news'],
    ['A-Z_0.9', '', 'A-Z_0.9'],
    ['a/b/c', '', 'a/b/c'],
    ['user@example.com', '', 'user@example.com'],
    ['.', '', '.'],
    ['_', '', '_'],
    ['chat:room-1', 'chat', 'room-1'],
    ['chat:a:b:c', 'chat', 'a:b:c'],
    ['ns:a::', 'ns', 'a::'],
    ['ns::', 'ns', ':'],
    ['my_ns-2:user/42@x.y', 'my_ns-2', 'user/42@x.y'],
    [`${'n'.repeat(32)}:x`, 'n'.repeat(32), 'x'],
    ['c'.repeat(MAX_CHANNEL_LENGTH), '', 'c'.repeat(MAX_CHANNEL_LENGTH)],
    [`ns:${'c'.repeat(MAX_CHANNEL_LENGTH - 3)}`, 'ns', 'c'.repeat(MAX_CHANNEL_LENGTH - 3)],
  ])('%j is valid: namespace %j, name %j', (channel, namespace, name) => {
    expect(channelProblem(channel)).toBeUndefined();
    expect(isChannel(channel)).toBe(true);
    expect(parseChannel(channel)).toEqual({ namespace, name });
  });

  it.each([
    [42, 'channel must be a string'],
    [null, 'channel must be a string'],
    [undefined, 'channel must be a string'],
    [['a'], 'channel must be a string'],
    ['', 'channel must not be empty'],
    ['c'.repeat(MAX_CHANNEL_LENGTH + 1), `channel is longer than ${MAX_CHANNEL_LENGTH} characters`],
    [`ns:${'c'.repeat(MAX_CHANNEL_LENGTH - 2)}`, `channel is longer than ${MAX_CHANNEL_LENGTH} characters`],
    ['a b', CHARS_PROBLEM],
    ['a,b', CHARS_PROBLEM],
    ['a=b', CHARS_PROBLEM],
    ['ns:a b', CHARS_PROBLEM],
    ['ns:a,b', CHARS_PROBLEM],
    ['ns:a=b', CHARS_PROBLEM],
    [' a', CHARS_PROBLEM],
    ['a\n', CHARS_PROBLEM],
    ['a\u0000', CHARS_PROBLEM],
    ['café', CHARS_PROBLEM],
    ['a#b', CHARS_PROBLEM],
    ['a"b', CHARS_PROBLEM],
    ['a\\b', CHARS_PROBLEM],
    [':a', NAMESPACE_PROBLEM],
    [`${'n'.repeat(33)}:x`, NAMESPACE_PROBLEM],
    ['a.b:c', NAMESPACE_PROBLEM],
    ['a@b:c', NAMESPACE_PROBLEM],
    ['a/b:c', NAMESPACE_PROBLEM],
    ['a b:c', NAMESPACE_PROBLEM],
    ['ns:', 'channel name after the namespace must not be empty'],
  ])('%j is invalid: %s', (channel, reason) => {
    expect(channelProblem(channel)).toBe(reason);
    expect(isChannel(channel)).toBe(false);
    expect(badChannelReason(() => parseChannel(channel))).toBe(reason);
  });

  it('agrees with an independent statement of the grammar on arbitrary strings', () => {
    let valid = 0;
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc.string({ unit: 'binary' }),
          stringOf(`${NAME_CHARS} ,=é`, 0, 40),
          stringOf('a:-.', 0, 40),
          channelArb,
          stringOf(BARE_CHARS, 195, 205),
        ),
        (channel) => {
          const problem = channelProblem(channel);
          expect(problem === undefined).toBe(oracleValid(channel));
          expect(isChannel(channel)).toBe(problem === undefined);
          if (problem === undefined) valid++;
          else expect(problem.length).toBeGreaterThan(0);
        },
      ),
      RUNS,
    );
    // Both branches are exercised.
    expect(valid).toBeGreaterThan(100);
    expect(valid).toBeLessThan(RUNS.numRuns - 100);
  });

  it('never throws from channelProblem/isChannel, on any value', () => {
    fc.assert(
      fc.property(fc.anything(), (value) => {
        const problem = channelProblem(value);
        expect(problem === undefined || typeof problem === 'string').toBe(true);
        expect(isChannel(value)).toBe(problem === undefined);
      }),
      RUNS,
    );
  });

  it('parseChannel splits every valid channel so the parts rebuild it', () => {
    fc.assert(
      fc.property(channelArb, (channel) => {
        const { namespace, name } = parseChannel(channel);
        expect(namespace === '' ? name : `${namespace}:${name}`).toBe(channel);
        expect(name.length).toBeGreaterThan(0);
        if (namespace === '') expect(channel).not.toContain(':');
        else expect(namespace).toMatch(/^[A-Za-z0-9_-]{1,32}$/);
      }),
      RUNS,
    );
  });

  it('parseChannel throws bad_channel (and only that) for every invalid string', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), stringOf(`${NAME_CHARS} ,=`, 0, 20)), (channel) => {
        if (oracleValid(channel)) return;
        expect(badChannelReason(() => parseChannel(channel))).toBe(channelProblem(channel));
      }),
      RUNS,
    );
  });

  it('a channel never contains `,` `=` or a space, wherever it is spliced in', () => {
    fc.assert(
      fc.property(channelArb, fc.constantFrom(',', '=', ' '), fc.nat(), (channel, bad, n) => {
        const i = n % (channel.length + 1);
        const spliced = (channel.slice(0, i) + bad + channel.slice(i)).slice(0, MAX_CHANNEL_LENGTH);
        if (!spliced.includes(bad)) return; // truncated away at the limit
        expect(channelProblem(spliced)).toBeDefined();
      }),
      RUNS,
    );
  });
});

describe('message types', () => {
  it.each(['message', 'chat.message', 'a-b_c.D9', 'x.y.z.w', 'a'.repeat(MAX_TYPE_LENGTH), '_', '-.-'])('%j is valid', (type) => {
    expect(messageTypeProblem(type)).toBeUndefined();
  });

  it.each([
    [5, 'type must be a string'],
    [null, 'type must be a string'],
    [undefined, 'type must be a string'],
    ['', `type must be 1-${MAX_TYPE_LENGTH} characters`],
    ['a'.repeat(MAX_TYPE_LENGTH + 1), `type must be 1-${MAX_TYPE_LENGTH} characters`],
    ['.a', 'type must be dot-separated words of letters, digits, _ or -'],
    ['a.', 'type must be dot-separated words of letters, digits, _ or -'],
    ['a..b', 'type must be dot-separated words of letters, digits, _ or -'],
    ['.', 'type must be dot-separated words of letters, digits, _ or -'],
    ['tidings:gap', 'type must be dot-separated words of letters, digits, _ or -'],
    ['a:b', 'type must be dot-separated words of letters, digits, _ or -'],
    ['a b', 'type must be dot-separated words of letters, digits, _ or -'],
    ['a/b', 'type must be dot-separated words of letters, digits, _ or -'],
    ['a@b', 'type must be dot-separated words of letters, digits, _ or -'],
    ['é', 'type must be dot-separated words of letters, digits, _ or -'],
    ['a\n', 'type must be dot-separated words of letters, digits, _ or -'],
    // A plain EventSource would fire its own onerror / onopen for them.
    ['error', "type 'error' is reserved (an EventSource takes it for its own error event)"],
    ['open', "type 'open' is reserved (an EventSource takes it for its own open event)"],
  ])('%j is invalid: %s', (type, reason) => {
    expect(messageTypeProblem(type)).toBe(reason);
  });

  it('accepts every generated type and rejects any type containing `:`', () => {
    fc.assert(
      fc.property(messageTypeArb, fc.nat(), (type, n) => {
        expect(messageTypeProblem(type)).toBeUndefined();
        const i = n % (type.length + 1);
        expect(messageTypeProblem(type.slice(0, i) + ':' + type.slice(i))).toBeDefined();
      }),
      RUNS,
    );
  });

  it('agrees with an independent statement of the type grammar', () => {
    const oracle = (t: string): boolean =>
      t.length >= 1 && t.length <= MAX_TYPE_LENGTH && t.split('.').every((w) => w.length > 0 && [...w].every((ch) => TYPE_WORD_CHARS.includes(ch)));
    fc.assert(
      fc.property(fc.oneof(fc.string(), stringOf('ab.-_:', 0, 70)), (type) => {
        expect(messageTypeProblem(type) === undefined).toBe(oracle(type));
      }),
      RUNS,
    );
  });
});
