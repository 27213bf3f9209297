/**
 * What a client's requests say about its subscriptions: the `channel=` parameters and the cursor text
 * of the positions it knows (channels without one start from now).
 * @module
 */
import { formatCursor, type Channel, type Position } from '@tidings/protocol';

export function knownCursor(subs: ReadonlyMap<Channel, Position | undefined>): string {
  const known = new Map<Channel, Position>();
  for (const [channel, p] of subs) if (p !== undefined) known.set(channel, p);
  return formatCursor(known);
}

/** The `channel=` query parameters for a set of channels. */
export function channelQuery(wanted: ReadonlyMap<Channel, unknown>): string[] {
  return [...wanted.keys()].map((c) => `channel=${encodeURIComponent(c)}`);
}
