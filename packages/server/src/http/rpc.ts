/**
 * `POST /rpc`: clients on SSE or long polling call a server method over HTTP, with the same rules as
 * the WebSocket `rpc` frame.
 * @module
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { TidingsError, toClientFrame, type Json } from '@tidings/protocol';
import type { Identity } from '../auth.js';
import { callRpc, type RpcHandlers } from '../commands.js';
import { readJson, sendJson } from './respond.js';

/** Validates a body `{ method, data? }` as an `rpc` frame would be. */
function rpcBody(body: unknown): { method: string; data: Json | undefined } {
  const frame = toClientFrame({ ...(typeof body === 'object' && body !== null ? body : {}), type: 'rpc', id: 0 });
  if (frame.type !== 'rpc') throw new TidingsError('bad_request', 'body must be { method, data? }');
  return { method: frame.method, data: frame.data };
}

/** Reads, runs and answers one call. */
export async function handleRpc(req: IncomingMessage, res: ServerResponse, rpc: RpcHandlers, identity: Identity, maxBody: number): Promise<void> {
  const { method, data } = rpcBody(await readJson(req, maxBody));
  sendJson(res, 200, { result: await callRpc(rpc, method, data, identity) });
}
