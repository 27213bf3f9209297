/**
 * `POST /refresh`: a new token for an SSE stream (which cannot send anything upstream), without
 * reconnecting. Body `{ "session": "<id from tidings:welcome>", "token": "<new token>" }`; the token
 * may come as `Authorization: Bearer` instead. The token must verify and be for the stream's user;
 * the stream keeps its subscriptions and its expiry moves. Answers `{ expiresAt }` (ms, or null), or
 * 404 `not_found` when this node holds no such session of the token's user (it closed, or it lives on
 * another node: the client then reconnects with the new token, resuming exactly). The token is checked
 * first, and another user's session is answered as none: which sessions are live is told to nobody.
 * @module
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { MAX_TOKEN_LENGTH, TidingsError } from '@tidings/protocol';
import type { Identity } from '../auth.js';
import { readJson, sendJson } from './respond.js';

/** What a refresh needs of a session. */
export interface Refreshable {
  readonly identity: Identity;
  refresh(token: string): Promise<number | undefined>;
}

/**
 * `verify` checks a token (and refuses when the gateway has none to refresh); `find` looks the
 * session up on this node; `forward` (a cluster) hands the refresh to the node holding the session,
 * resolving false when no node could hold it (or throwing `limit_exceeded` past its rate).
 */
export async function handleRefresh(
  req: IncomingMessage,
  res: ServerResponse,
  verify: (token: string) => Promise<Identity>,
  find: (id: string) => Refreshable | undefined,
  forward: (id: string, token: string, user: string) => Promise<boolean>,
  maxBody: number,
): Promise<void> {
  const body = await readJson(req, Math.min(maxBody, 64 * 1024));
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new TidingsError('bad_request', 'the body must be { "session", "token" }');
  const { session, token: inBody } = body as { session?: unknown; token?: unknown };
  const bearer = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(req.headers.authorization ?? '')?.[1];
  const token = bearer ?? inBody;
  if (typeof session !== 'string' || session === '' || session.length > 128) throw new TidingsError('bad_request', 'session must be the id from tidings:welcome');
  if (typeof token !== 'string' || token === '' || token.length > MAX_TOKEN_LENGTH) throw new TidingsError('bad_request', 'a token is required (Authorization: Bearer, or token in the body)');
  const { user } = await verify(token);
  const found = find(session);
  if (found !== undefined && found.identity.user === user) {
    sendJson(res, 200, { expiresAt: (await found.refresh(token)) ?? null });
    return;
  }
  // Held by another node: that node applies it (and refuses it for another user).
  if (found === undefined && (await forward(session, token, user))) {
    sendJson(res, 202, { forwarded: true });
    return;
  }
  throw new TidingsError('not_found', 'no such session; reconnect with the new token');
}
