/**
 * Derived epochs, as the broker contract specifies them (see `broker.ts`): a channel's epoch is a
 * function of the broker's life, its bucket's generation and its name, so a channel without a
 * stream has a well-defined epoch and nothing is stored for it. Every broker uses these two
 * functions, so every node of a shared store computes the same epoch.
 * @module
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Channel } from '@tidings/protocol';

/** How many generation counters there are; a channel uses the one at {@link bucketOf}. */
export const GENERATION_BUCKETS = 1024;

/** The channel's generation bucket: FNV-1a 32-bit of its UTF-8 bytes, modulo {@link GENERATION_BUCKETS}. */
export function bucketOf(channel: Channel): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < channel.length; i++) {
    const c = channel.charCodeAt(i);
    // Channel names are ASCII (one UTF-8 byte per character); anything else hashes its UTF-8 bytes.
    if (c > 0x7f) return fnv1a(Buffer.from(channel, 'utf8'));
    h = Math.imul(h ^ c, 0x01000193);
  }
  return (h >>> 0) % GENERATION_BUCKETS;
}

function fnv1a(bytes: Uint8Array): number {
  let h = 0x811c9dc5;
  for (const b of bytes) h = Math.imul(h ^ b, 0x01000193);
  return (h >>> 0) % GENERATION_BUCKETS;
}

/**
 * The epoch a stream of `channel` created in this life at this generation gets:
 * sha256 of `life:generation:channel`, first 6 bytes big-endian, base 36, last 8 digits (zero-padded).
 */
export function deriveEpoch(life: string, generation: number, channel: Channel): string {
  const input = `${life}:${generation}:${channel}`;
  let epoch = derived.get(input);
  if (epoch === undefined) {
    const digest = createHash('sha256').update(input, 'utf8').digest();
    epoch = digest.readUIntBE(0, 6).toString(36).padStart(8, '0').slice(-8);
    // First in, first out: the oldest derivation goes when the cache is full.
    if (derived.size >= DERIVED_CACHE) derived.delete(derived.keys().next().value as string);
    derived.set(input, epoch);
  }
  return epoch;
}

/**
 * Recent derivations. A channel with subscribers but no stream gets its epoch derived at every
 * position check (every channel a node holds, every `positionCheck`), and a hash costs microseconds:
 * at 10,000 such channels that was a 150 ms pause per check.
 */
const derived = new Map<string, string>();
const DERIVED_CACHE = 16_384;

/** A new random id: 8 lower-case base-36 characters (also a valid epoch). */
export function newEpoch(): string {
  return randomBytes(6).readUIntBE(0, 6).toString(36).padStart(8, '0').slice(-8);
}

/** A new random broker life: 16 base-36 characters. */
export function newLife(): string {
  return newEpoch() + newEpoch();
}
