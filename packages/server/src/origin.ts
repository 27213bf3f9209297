/**
 * Which browser origins may use the gateway with credentials. With no `allowedOrigins`, every origin
 * may read the client endpoints (CORS `*`, which browsers never combine with cookies), and a token
 * in a cookie counts only for requests from the gateway's own origin or from no browser at all. With
 * a list, WebSocket upgrades from other origins are refused, CORS answers name the requesting origin
 * (with credentials) only when it is listed, and cookie tokens count only from listed origins.
 * @module
 */
import type { IncomingHttpHeaders } from 'node:http';

export interface OriginPolicy {
  /** Whether a request with these headers may carry credentials a browser adds by itself (cookies) and may upgrade. */
  allows(headers: IncomingHttpHeaders): boolean;
  /**
   * CORS headers for a client endpoint's response to a request with these headers: what a browser
   * checks on the response itself (who may read it, which headers it may see). The same object for
   * every request from a given kind of origin where it can be, as held streams keep it.
   */
  cors(headers: IncomingHttpHeaders): Readonly<Record<string, string>>;
  /** CORS headers for the answer to a preflight (`OPTIONS`): the response headers plus the methods, request headers and how long to cache them. */
  preflight(headers: IncomingHttpHeaders): Readonly<Record<string, string>>;
  /** Whether a list was configured (then foreign origins are refused, not just left without cookies). */
  readonly restricted: boolean;
}

/** What a preflight answer adds to the response headers. */
const PREFLIGHT: Readonly<Record<string, string>> = {
  'access-control-allow-methods': 'GET, POST, OPTIONS',
  'access-control-allow-headers': 'authorization, content-type, last-event-id',
  'access-control-max-age': '600',
};
const EXPOSE = 'retry-after';
/** Any origin may read (no list configured). */
const ANY: Readonly<Record<string, string>> = Object.freeze({ 'access-control-allow-origin': '*', 'access-control-expose-headers': EXPOSE });
/** An origin that is not listed: nothing it may read, and caches must tell origins apart. */
const UNLISTED: Readonly<Record<string, string>> = Object.freeze({ vary: 'origin' });

/** `scheme://host[:port]`, lower-cased, as browsers send it in Origin. */
export function normalizeOrigin(origin: string): string | undefined {
  try {
    const u = new URL(origin);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') return undefined;
    return u.origin.toLowerCase();
  } catch {
    return undefined;
  }
}

/** Whether `origin` is the gateway's own (same host and port as the Host header). */
function sameOrigin(origin: string, headers: IncomingHttpHeaders): boolean {
  const host = headers.host;
  if (host === undefined) return false;
  try {
    return new URL(origin).host.toLowerCase() === host.toLowerCase();
  } catch {
    return false;
  }
}

export function originPolicy(allowedOrigins: readonly string[]): OriginPolicy {
  const listed = new Set(allowedOrigins.map((o) => normalizeOrigin(o) ?? o));
  const restricted = listed.size > 0;
  const isListed = (origin: string): boolean => listed.has(normalizeOrigin(origin) ?? '');
  return {
    restricted,
    allows(headers) {
      const origin = headers.origin;
      // No Origin: not a browser's cross-origin request (servers, curl, same-origin navigations).
      if (origin === undefined) return true;
      return sameOrigin(origin, headers) || isListed(origin);
    },
    cors(headers) {
      const origin = headers.origin;
      if (!restricted) return ANY;
      if (origin !== undefined && isListed(origin)) {
        return { 'access-control-allow-origin': origin, 'access-control-allow-credentials': 'true', 'access-control-expose-headers': EXPOSE, vary: 'origin' };
      }
      return UNLISTED;
    },
    preflight(headers) {
      const cors = this.cors(headers);
      return cors === UNLISTED ? cors : { ...cors, ...PREFLIGHT };
    },
  };
}
