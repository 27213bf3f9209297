/**
 * fast-check arbitraries for the protocol grammar, shared by the protocol and server tests.
 * They are written from the grammar in packages/protocol/src/channel.ts and position.ts, not by
 * calling the validators, so a validator that drifts from the grammar is caught.
 */
import fc from 'fast-check';
import { MAX_CHANNEL_LENGTH, MAX_CURSOR_CHANNELS, MAX_TYPE_LENGTH, type Position } from '@tidings/protocol';

const LETTERS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const DIGITS = '0123456789';
/** Characters of an epoch. */
export const ALNUM = LETTERS + DIGITS;
/** Characters of a namespace. */
export const NAMESPACE_CHARS = ALNUM + '_-';
/** Characters of a channel name (after the namespace); `:` is allowed there. */
export const NAME_CHARS = ALNUM + '_.-@/:';
/** Characters of a bare channel (no namespace): a `:` would make the prefix a namespace. */
export const BARE_CHARS = ALNUM + '_.-@/';
/** Characters of one word of a message type. */
export const TYPE_WORD_CHARS = ALNUM + '_-';

const chars = (set: string): fc.Arbitrary<string> => fc.constantFrom(...set.split(''));

/** A string of `set` characters with a length in [min, max]. */
export const stringOf = (set: string, minLength: number, maxLength: number): fc.Arbitrary<string> =>
  fc.string({ unit: chars(set), minLength, maxLength });

/** A bare channel in the default namespace. */
export const bareChannelArb = stringOf(BARE_CHARS, 1, 40);
/** `namespace:name`. */
export const namespacedChannelArb = fc
  .tuple(stringOf(NAMESPACE_CHARS, 1, 32), stringOf(NAME_CHARS, 1, 40))
  .map(([ns, name]) => `${ns}:${name}`);
/** Channels at or near the length limit. */
export const longChannelArb = fc.oneof(
  stringOf(BARE_CHARS, MAX_CHANNEL_LENGTH - 3, MAX_CHANNEL_LENGTH),
  fc
    .tuple(stringOf(NAMESPACE_CHARS, 32, 32), stringOf(NAME_CHARS, MAX_CHANNEL_LENGTH - 33 - 3, MAX_CHANNEL_LENGTH - 33))
    .map(([ns, name]) => `${ns}:${name}`),
);
/** Any valid channel. */
export const channelArb: fc.Arbitrary<string> = fc.oneof(
  { arbitrary: bareChannelArb, weight: 4 },
  { arbitrary: namespacedChannelArb, weight: 4 },
  { arbitrary: longChannelArb, weight: 1 },
);

/** 1-16 letters or digits. */
export const epochArb = stringOf(ALNUM, 1, 16);
/** Any safe non-negative integer, biased to small values and the extremes. */
export const seqArb: fc.Arbitrary<number> = fc.oneof(
  fc.nat(100),
  fc.nat(),
  fc.maxSafeNat(),
  fc.constantFrom(0, 1, 35, 36, 2 ** 32, Number.MAX_SAFE_INTEGER - 1, Number.MAX_SAFE_INTEGER),
);
export const positionArb: fc.Arbitrary<Position> = fc.record({ epoch: epochArb, seq: seqArb });

/** Entries of a valid cursor: distinct channels, at most 64. */
export const cursorEntriesArb: fc.Arbitrary<[string, Position][]> = fc.oneof(
  { arbitrary: fc.uniqueArray(fc.tuple(channelArb, positionArb), { selector: ([channel]) => channel, maxLength: MAX_CURSOR_CHANNELS }), weight: 4 },
  // Large cursors, up to the limit of 64 channels.
  {
    arbitrary: fc.uniqueArray(fc.tuple(channelArb, positionArb), { selector: ([channel]) => channel, minLength: 48, maxLength: MAX_CURSOR_CHANNELS }),
    weight: 1,
  },
);

/** A valid message type: dot-separated words, at most 64 characters, not one an EventSource reserves. */
export const messageTypeArb: fc.Arbitrary<string> = fc
  .array(stringOf(TYPE_WORD_CHARS, 1, 12), { minLength: 1, maxLength: 4 })
  .map((words) => words.join('.'))
  .filter((t) => t.length <= MAX_TYPE_LENGTH && t !== 'error' && t !== 'open');
