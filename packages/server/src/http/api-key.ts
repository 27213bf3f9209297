/**
 * The server API's credential: `Authorization: Bearer <api key>`.
 * @module
 */
import { hash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { TidingsError } from '@tidings/protocol';

const BEARER = /^Bearer\s+(\S+)$/i;
/** The key's digest, computed once per key. */
const digests = new Map<string, Buffer>();

function digest(text: string): Buffer {
  return hash('sha256', text, 'buffer');
}

/** Whether two texts are equal, compared by digest so that it takes the same time whatever the lengths. */
export function sameText(a: string, b: string): boolean {
  return timingSafeEqual(digest(a), digest(b));
}

/** Whether `presented` is `apiKey`, compared by digest so that it takes the same time whatever the lengths. */
export function sameKey(presented: string, apiKey: string): boolean {
  let known = digests.get(apiKey);
  if (known === undefined) {
    if (digests.size > 16) digests.clear();
    known = digest(apiKey);
    digests.set(apiKey, known);
  }
  return timingSafeEqual(digest(presented), known);
}

/** Whether the request carries `Authorization: Bearer <apiKey>`. */
export function hasApiKey(req: { readonly headers: IncomingHttpHeaders }, apiKey: string): boolean {
  const match = BEARER.exec(req.headers.authorization ?? '');
  return match !== null && sameKey(match[1] as string, apiKey);
}

/** Throws `unauthorized` unless the request carries `Authorization: Bearer <apiKey>`. */
export function checkApiKey(req: { readonly headers: IncomingHttpHeaders }, apiKey: string): void {
  if (!hasApiKey(req, apiKey)) throw new TidingsError('unauthorized', 'send Authorization: Bearer <api key>');
}
