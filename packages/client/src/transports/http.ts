/**
 * Upstream over HTTP, shared by the SSE and long-polling transports: `POST /send`, `POST /rpc` and
 * `GET /presence`.
 * @module
 */
import {
  isErrorCode,
  TidingsError,
  type Channel,
  type ErrorCode,
  type Json,
  type PresenceResult,
  type PublishRequest,
  type PublishResult,
} from '@tidings/protocol';
import { connectionLost, type Platform, type TransportContext } from './transport.js';

/** Headers with the bearer token, when there is one. */
export function authHeaders(ctx: TransportContext): Record<string, string> {
  return ctx.token === undefined ? {} : { authorization: `Bearer ${ctx.token}` };
}

/** A `Retry-After` header in ms (seconds or an HTTP date), when present. */
export function retryAfterOf(res: Response): number | undefined {
  const value = res.headers.get('retry-after');
  if (value === null) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

/** Turns a non-2xx reply into a coded error; network failures become `unavailable`. */
export function postJson(ctx: TransportContext, path: string, body: unknown, signal?: AbortSignal): Promise<unknown> {
  return fetchJson(ctx, path, { method: 'POST', headers: { 'content-type': 'application/json', ...authHeaders(ctx) }, body: JSON.stringify(body), ...(signal === undefined ? {} : { signal }) });
}

/**
 * The code of a refusal without the gateway's coded body (a proxy's own answer): what the status
 * says, as near as the table of codes goes.
 */
function codeOfStatus(status: number): ErrorCode {
  const known: Partial<Record<number, ErrorCode>> = {
    401: 'unauthorized',
    403: 'forbidden',
    404: 'not_found',
    405: 'method_not_allowed',
    408: 'request_timeout',
    413: 'too_large',
    415: 'unsupported_media_type',
    429: 'limit_exceeded',
    431: 'header_too_large',
  };
  return known[status] ?? (status >= 500 ? 'internal' : 'bad_request');
}

/**
 * One JSON request; a non-2xx reply with the server's coded body becomes that error. A network
 * failure, or 502/503/504 without one (a proxy whose gateway is down, or one shutting down), is a
 * lost connection: sent again after the reconnect. Any other status without a coded body (a
 * proxy that refuses the route, a captive portal) is an answer: the call fails with the status.
 */
async function fetchJson(ctx: TransportContext, path: string, init: RequestInit): Promise<unknown> {
  let res: Response;
  try {
    res = await ctx.platform.fetch(`${ctx.baseUrl}${path}`, init);
  } catch (err) {
    throw connectionLost(`request failed: ${(err as Error).message}`);
  }
  const value = (await res.json().catch(() => undefined)) as { error?: { code?: unknown; reason?: unknown } } | undefined;
  // Given up while the body arrived (the connection went away, the caller's timeout): the answer is lost with it.
  if (init.signal?.aborted === true) throw connectionLost('request aborted');
  if (!res.ok) {
    const code = value?.error?.code;
    if (!isErrorCode(code)) {
      if (isOutage(res.status)) throw connectionLost(`HTTP ${res.status}`);
      throw new TidingsError(codeOfStatus(res.status), `HTTP ${res.status} from ${path.replace(/\?.*/, '')} without the gateway's error body (an answer from a proxy?)`);
    }
    throw new TidingsError(code, typeof value?.error?.reason === 'string' ? value.error.reason : `HTTP ${res.status}`);
  }
  return value;
}

/** `POST /refresh` for an SSE stream's session. */
export async function httpRefresh(ctx: TransportContext, session: string, token: string): Promise<void> {
  await fetchJson(ctx, '/refresh', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ session, token }) });
}

export async function httpPublish(ctx: TransportContext, req: PublishRequest, signal?: AbortSignal): Promise<PublishResult> {
  return (await postJson(ctx, '/send', req, signal)) as PublishResult;
}

export async function httpPresence(ctx: TransportContext, channel: Channel, signal?: AbortSignal): Promise<PresenceResult> {
  return (await fetchJson(ctx, `/presence?channel=${encodeURIComponent(channel)}`, { headers: authHeaders(ctx), cache: 'no-store', ...(signal === undefined ? {} : { signal }) })) as PresenceResult;
}

export async function httpRequest(ctx: TransportContext, method: string, data: Json | undefined, signal?: AbortSignal): Promise<Json> {
  const body = (await postJson(ctx, '/rpc', data === undefined ? { method } : { method, data }, signal)) as { result: Json };
  return body.result;
}

/** What a proxy answers when the gateway behind it is down (and the gateway itself while shutting down): an outage. */
const OUTAGE_STATUS = new Set([502, 503, 504]);

/**
 * Whether the gateway answers plain HTTP, within `timeout` ms: the test that tells "this transport
 * is blocked here" (reachable: fall back) from "the server is down" (an outage: retry the same
 * transport with backoff).
 *
 * It asks `GET /poll` without a channel, which the gateway refuses at once (400) before looking at
 * credentials, with CORS headers, so a browser on another origin can read the answer (`/healthz`
 * has no CORS header, and a browser turns an unreadable answer into a network error). Any answer
 * but 502/503/504 means reachable; a network error, a timeout or one of those is an outage.
 */
export async function reachable(platform: Platform, baseUrl: string, timeout: number, signal?: AbortSignal): Promise<boolean> {
  const ctrl = new AbortController();
  const abort = (): void => ctrl.abort();
  signal?.addEventListener('abort', abort);
  const timer = platform.setTimeout(abort, timeout);
  try {
    const res = await platform.fetch(`${baseUrl}/poll`, { signal: ctrl.signal, cache: 'no-store' });
    await res.arrayBuffer().catch(() => undefined);
    return !OUTAGE_STATUS.has(res.status);
  } catch {
    return false;
  } finally {
    platform.clearTimeout(timer);
    signal?.removeEventListener('abort', abort);
  }
}

/** Statuses of refusals that asking again the same way never changes: a malformed or forbidden request, a route that is not there. */
const PERMANENT_STATUS = new Set([400, 403, 404, 405, 413, 415, 431]);

/**
 * A stream request (SSE, poll) the gateway itself refused (its coded body) for a reason that is not
 * about one channel and that asking again never changes (a malformed request, a forbidden origin or
 * cookie): the code, to end the client `failed` with it rather than retry in silence forever.
 */
export function permanentRefusal(status: number, body: { error?: { code?: unknown } } | undefined): ErrorCode | undefined {
  const code = body?.error?.code;
  return PERMANENT_STATUS.has(status) && isErrorCode(code) ? code : undefined;
}

/** Whether an HTTP status means the gateway is down behind a proxy (or shutting down), not that it refused. */
export function isOutage(status: number): boolean {
  return OUTAGE_STATUS.has(status);
}

/**
 * A stream request (SSE, poll) refused for one of its channels (forbidden, unknown namespace, bad
 * channel or position): reports it as that subscription's error and returns true, so the transport
 * lets the client drop the subscription and go on with the rest instead of failing the connection.
 */
export function channelRefused(
  status: number,
  body: { error?: { code?: unknown; reason?: unknown; channel?: unknown } } | undefined,
  wanted: ReadonlyMap<string, unknown>,
  report: (channel: string, error: { code: ErrorCode; reason: string }) => void,
): boolean {
  const error = body?.error;
  const channel = error?.channel;
  // 429 naming a channel: one subscription too many for the server's `maxSubscriptions`.
  if (status !== 400 && status !== 403 && status !== 404 && !(status === 429 && error?.code === 'limit_exceeded')) return false;
  if (typeof channel !== 'string' || !wanted.has(channel) || !isErrorCode(error?.code)) return false;
  report(channel, { code: error.code, reason: typeof error.reason === 'string' ? error.reason : `HTTP ${status}` });
  return true;
}
