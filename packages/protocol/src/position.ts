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

/** Longest epoch, and most base-36 digits of a seq. */
const MAX_EPOCH = 16;
const MAX_SEQ_DIGITS = 11;
/** ASCII letters and digits, an epoch's characters: 1. */
const ALNUM = new Uint8Array(128);
/** The value of each base-36 digit of a seq (digits, lower-case letters); -1 for any other character. */
const DIGIT36 = new Int8Array(128).fill(-1);
for (let i = 0; i < 36; i++) DIGIT36['0123456789abcdefghijklmnopqrstuvwxyz'.charCodeAt(i)] = i;
for (const c of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789') ALNUM[c.charCodeAt(0)] = 1;

/** Most channels one cursor may carry. */
export const MAX_CURSOR_CHANNELS = 64;
/** Longest cursor text accepted. */
export const MAX_CURSOR_LENGTH = MAX_CURSOR_CHANNELS * 240;

/** Why `value` is not a valid position, or undefined. */
export function positionProblem(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null) return 'position must be an object { epoch, seq }';
  const { epoch, seq } = value as { epoch?: unknown; seq?: unknown };
  if (typeof epoch !== 'string' || !isEpoch(epoch, 0, epoch.length)) return 'position.epoch must be 1-16 letters or digits';
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
  return positionIn(text, 0, text.length);
}

/**
 * Parses `text[from, to)` as `epoch.seq36`, read in place: a cursor is parsed on every poll and SSE
 * reconnect, and cutting its parts out to test them against patterns made parsing a one-entry cursor
 * take about 2.5 times as long.
 */
function positionIn(text: string, from: number, to: number): Position | undefined {
  const dot = text.indexOf('.', from);
  const digits = to - dot - 1;
  if (dot === -1 || digits < 1 || digits > MAX_SEQ_DIGITS || !isEpoch(text, from, dot)) return undefined;
  // Exact while below 2^53; a seq of more is rounded to at least 2^53, which is not a safe integer.
  let seq = 0;
  for (let i = dot + 1; i < to; i++) {
    const c = text.charCodeAt(i);
    const digit = c < 128 ? (DIGIT36[c] as number) : -1;
    if (digit < 0) return undefined;
    seq = seq * 36 + digit;
  }
  return Number.isSafeInteger(seq) ? { epoch: text.slice(from, dot), seq } : undefined;
}

/** Whether `text[from, to)` is an epoch: 1 to 16 ASCII letters or digits. */
function isEpoch(text: string, from: number, to: number): boolean {
  if (to - from < 1 || to - from > MAX_EPOCH) return false;
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i);
    if (c >= 128 || ALNUM[c] === 0) return false;
  }
  return true;
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
  let entries = 1;
  for (let comma = text.indexOf(','); comma !== -1; comma = text.indexOf(',', comma + 1)) {
    if (++entries > MAX_CURSOR_CHANNELS) throw new TidingsError('bad_cursor', `cursor names more than ${MAX_CURSOR_CHANNELS} channels`);
  }
  // Each entry is read in place, between its commas.
  for (let from = 0; from <= text.length; ) {
    let end = text.indexOf(',', from);
    if (end === -1) end = text.length;
    // The entry's last `=` (at `end` is a comma or nothing); one before `from` is another entry's.
    const eq = text.lastIndexOf('=', end);
    if (eq < from) throw new TidingsError('bad_cursor', 'cursor entry must be channel=epoch.seq');
    const channel = text.slice(from, eq);
    const problem = channelProblem(channel);
    if (problem !== undefined) throw new TidingsError('bad_cursor', `cursor entry: ${problem}`);
    const p = positionIn(text, eq + 1, end);
    if (p === undefined) throw new TidingsError('bad_cursor', `cursor entry for ${channel} has a malformed position`);
    if (cursor.has(channel)) throw new TidingsError('bad_cursor', `cursor names ${channel} twice`);
    cursor.set(channel, p);
    from = end + 1;
  }
  return cursor;
}
