/**
 * The cursor text of the positions a client knows (channels without one start from now).
 * @module
 */
import { formatCursor, type Channel, type Position } from '@tidings/protocol';

export function knownCursor(subs: ReadonlyMap<Channel, Position | undefined>): string {
  const known = new Map<Channel, Position>();
  for (const [channel, p] of subs) if (p !== undefined) known.set(channel, p);
  return formatCursor(known);
}
