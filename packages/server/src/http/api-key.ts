/**
 * The server API's credential: `Authorization: Bearer <api key>`.
 * @module
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { TidingsError } from '@tidings/protocol';

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

/** Throws `unauthorized` unless the request carries `Authorization: Bearer <apiKey>`. */
export function checkApiKey(req: IncomingMessage, apiKey: string): void {
  const header = req.headers.authorization ?? '';
  const match = /^Bearer\s+(\S+)$/i.exec(header);
  // Compare digests so the comparison takes the same time whatever the length.
  if (match === null || !timingSafeEqual(digest(match[1] as string), digest(apiKey))) {
    throw new TidingsError('unauthorized', 'send Authorization: Bearer <api key>');
  }
}
