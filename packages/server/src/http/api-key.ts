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

/**
 * Whether `presented` is `proven`, in a time that depends on `proven` alone: every character of
 * `proven` is compared, whatever `presented` is (lengths that differ already make it false; a
 * character read past the end of `presented` is NaN, 0 to the bitwise operators).
 */
export function sameAsProven(presented: string, proven: string): boolean {
  let diff = presented.length ^ proven.length;
  for (let i = 0; i < proven.length; i++) diff |= presented.charCodeAt(i) ^ proven.charCodeAt(i);
  return diff === 0;
}

/**
 * The `Authorization` value each connection last proved the key with, and the key it proved. A
 * backend publishing over keep-alive presents the same value on every request, and hashing it costs
 * more than the rest of the check: a value equal to the one its own connection proved is taken as
 * proven again. Any other value (another client's, over a proxy's shared connection) is checked in
 * full. Held weakly: an entry goes with its connection.
 */
const proven = new WeakMap<object, { readonly value: string; readonly apiKey: string }>();

/** Whether the request carries `Authorization: Bearer <apiKey>`. */
export function hasApiKey(req: { readonly headers: IncomingHttpHeaders; readonly socket?: object | null }, apiKey: string): boolean {
  const value = req.headers.authorization;
  if (value === undefined) return false;
  const socket = req.socket ?? undefined;
  const seen = socket === undefined ? undefined : proven.get(socket);
  if (seen !== undefined && seen.apiKey === apiKey && sameAsProven(value, seen.value)) return true;
  const match = BEARER.exec(value);
  if (match === null || !sameKey(match[1] as string, apiKey)) return false;
  if (socket !== undefined) proven.set(socket, { value, apiKey });
  return true;
}

/** Throws `unauthorized` unless the request carries `Authorization: Bearer <apiKey>`. */
export function checkApiKey(req: { readonly headers: IncomingHttpHeaders; readonly socket?: object | null }, apiKey: string): void {
  if (!hasApiKey(req, apiKey)) throw new TidingsError('unauthorized', 'send Authorization: Bearer <api key>');
}
