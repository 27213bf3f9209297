/**
 * Positions and cursors. A position names one publication in one channel: the `epoch` (one life
 * of the channel's stream) and `seq`, which grows by exactly 1 per publication within an epoch.
 * A cursor maps many channels to positions; its compact text form is the SSE `id:` and the
 * long-poll `cursor`: `channel=epoch.seq` entries (seq in base 36) joined by `,`.
 * @module
 */
import { channelProblem, type Channel } from './channel.js';
import { TidingsError } from './codes.js';

/** Where a publication sits in its channel. `seq` 0 means "before the first publication". */
export interface Position {
  readonly epoch: string;
  readonly seq: number;
}

/** A position per channel. */
export type Cursor = ReadonlyMap<Channel, Position>;

const EPOCH = /^[A-Za-z0-9]{1,16}$/;
const SEQ36 = /^[0-9a-z]{1,11}$/;

/** Most channels one cursor may carry. */
export const MAX_CURSOR_CHANNELS = 64;
/** Longest cursor text accepted. */
export const MAX_CURSOR_LENGTH = MAX_CURSOR_CHANNELS * 240;

/** Why `value` is not a valid position, or undefined. */
export function positionProblem(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null) return 'position must be an object { epoch, seq }';
  const { epoch, seq } = value as { epoch?: unknown; seq?: unknown };
  if (typeof epoch !== 'string' || !EPOCH.test(epoch)) return 'position.epoch must be 1-16 letters or digits';
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0) {
    return 'position.seq must be a non-negative integer';
  }
  return undefined;
}

/** Validates an untrusted position; throws `bad_position`. */
export function toPosition(value: unknown): Position {
  const problem = positionProblem(value);
  if (problem !== undefined) throw new TidingsError('bad_position', problem);
  const { epoch, seq } = value as Position;
  return { epoch, seq };
}

/** True when both name the same publication. */
export function samePosition(a: Position, b: Position): boolean {
  return a.epoch === b.epoch && a.seq === b.seq;
}

/** `epoch.seq36`: the compact text of one position. */
export function formatPosition(p: Position): string {
  return `${p.epoch}.${p.seq.toString(36)}`;
}

/** Parses `epoch.seq36`; undefined when malformed. */
export function parsePosition(text: string): Position | undefined {
  const dot = text.indexOf('.');
  if (dot === -1) return undefined;
  const epoch = text.slice(0, dot);
  const seq36 = text.slice(dot + 1);
  if (!EPOCH.test(epoch) || !SEQ36.test(seq36)) return undefined;
  const seq = parseInt(seq36, 36);
  return Number.isSafeInteger(seq) ? { epoch, seq } : undefined;
}

/** One cursor entry's text: `channel=epoch.seq36`. */
export function formatCursorEntry(channel: Channel, p: Position): string {
  return `${channel}=${formatPosition(p)}`;
}

/** Encodes a cursor; entries keep the map's order. */
export function formatCursor(cursor: Cursor): string {
  const parts: string[] = [];
  for (const [channel, p] of cursor) parts.push(formatCursorEntry(channel, p));
  return parts.join(',');
}

/**
 * Parses cursor text from an untrusted source (a poll `cursor`, an SSE `Last-Event-ID`).
 * Throws `bad_cursor` with the reason when anything is malformed; the empty string is the empty cursor.
 */
export function parseCursor(text: string): Map<Channel, Position> {
  const cursor = new Map<Channel, Position>();
  if (text === '') return cursor;
  if (text.length > MAX_CURSOR_LENGTH) throw new TidingsError('bad_cursor', 'cursor is too long');
  const entries = text.split(',');
  if (entries.length > MAX_CURSOR_CHANNELS) {
    throw new TidingsError('bad_cursor', `cursor names more than ${MAX_CURSOR_CHANNELS} channels`);
  }
  for (const entry of entries) {
    const eq = entry.lastIndexOf('=');
    if (eq === -1) throw new TidingsError('bad_cursor', 'cursor entry must be channel=epoch.seq');
    const channel = entry.slice(0, eq);
    const problem = channelProblem(channel);
    if (problem !== undefined) throw new TidingsError('bad_cursor', `cursor entry: ${problem}`);
    const p = parsePosition(entry.slice(eq + 1));
    if (p === undefined) throw new TidingsError('bad_cursor', `cursor entry for ${channel} has a malformed position`);
    if (cursor.has(channel)) throw new TidingsError('bad_cursor', `cursor names ${channel} twice`);
    cursor.set(channel, p);
  }
  return cursor;
}
