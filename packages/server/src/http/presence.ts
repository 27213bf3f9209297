/**
 * `GET /api/presence?channel=` (server API, API key) and `GET /presence?channel=` (connected clients
 * on SSE or long polling, with the permission to subscribe to the channel): who is present in a
 * channel of a presence namespace, across every node. Body: `{ channel, clients }`.
 * @module
 */
import type { ServerResponse } from 'node:http';
import { channelProblem, TidingsError, type Channel, type PresenceResult } from '@tidings/protocol';
import { sendJson } from './respond.js';
import type { Query } from './target.js';

/** The one `channel` parameter; throws `bad_request` / `bad_channel`. */
function channelParam(query: Query): Channel {
  const values = query.getAll('channel');
  const channel = values[0];
  if (values.length !== 1 || channel === undefined) throw new TidingsError('bad_request', 'name exactly one channel: ?channel=room');
  const problem = channelProblem(channel);
  if (problem !== undefined) throw new TidingsError('bad_channel', `${problem}: '${channel.slice(0, 64)}'`);
  return channel;
}

/** Answers with who is present in the requested channel, as `list` sees it. */
export async function handlePresence(res: ServerResponse, query: Query, list: (channel: Channel) => Promise<PresenceResult>): Promise<void> {
  sendJson(res, 200, await list(channelParam(query)));
}
