/**
 * Subscription parameters of the SSE and long-poll endpoints: `channel` (repeated, or
 * comma-separated) and a cursor (`Last-Event-ID` header, `lastEventId` or `cursor` query).
 * @module
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Attachment } from '../sink.js';
import type { Query } from './target.js';
import {
  channelProblem,
  MAX_CURSOR_CHANNELS,
  parseCursor,
  TidingsError,
  type Channel,
  type Position,
} from '@tidings/protocol';

export interface StreamParams {
  readonly channels: Channel[];
  /** Channel to the position to resume from; channels absent start from now. */
  readonly cursor: Map<Channel, Position>;
}

/** Parses channels and cursor; throws `bad_channel` / `bad_cursor` / `bad_request`. */
export function streamParams(query: Query, cursorText: string | undefined): StreamParams {
  const channels: Channel[] = [];
  for (const value of query.getAll('channel')) {
    // Most streams name one channel: its value is the channel, with no list to split.
    if (value.indexOf(',') === -1) addChannel(channels, value);
    else for (const channel of value.split(',')) addChannel(channels, channel);
  }
  if (channels.length === 0) throw new TidingsError('bad_request', 'name at least one channel: ?channel=news');
  // Entries for channels not requested are ignored, so a cursor survives a change of channel list.
  const cursor = cursorText === undefined ? new Map<Channel, Position>() : parseCursor(cursorText);
  for (const channel of cursor.keys()) if (!channels.includes(channel)) cursor.delete(channel);
  return { channels, cursor };
}

/**
 * Adds a requested channel once; throws `bad_channel` naming it when it is not a channel name, and
 * `limit_exceeded` at once when it is one too many (a head of thousands is not compared pairwise).
 */
function addChannel(channels: Channel[], channel: string): void {
  const problem = channelProblem(channel);
  if (problem !== undefined) throw new TidingsError('bad_channel', `${problem}: '${channel.slice(0, 64)}'`, channel.slice(0, 200));
  if (channels.includes(channel)) return;
  if (channels.length === MAX_CURSOR_CHANNELS) throw new TidingsError('limit_exceeded', `at most ${MAX_CURSOR_CHANNELS} channels per stream`);
  channels.push(channel);
}

/**
 * Subscribes a stream's channels in order; a refusal names the channel it is about, so a client can
 * end that subscription and keep the others.
 */
export async function subscribeAll(session: Attachment, channels: readonly Channel[], cursor: ReadonlyMap<Channel, Position>): Promise<void> {
  for (const channel of channels) {
    try {
      await session.subscribe(channel, cursor.get(channel));
    } catch (err) {
      throw err instanceof TidingsError && err.code !== 'unavailable' ? err.about(channel) : err;
    }
  }
}

/** The SSE resume cursor: the browser's `Last-Event-ID` wins over the `lastEventId` query. */
export function sseCursorText(req: { readonly headers: IncomingHttpHeaders }, query: Query): string | undefined {
  const header = req.headers['last-event-id'];
  if (typeof header === 'string' && header !== '') return header;
  return query.get('lastEventId') ?? undefined;
}
