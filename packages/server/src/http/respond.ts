/**
 * HTTP plumbing shared by the routes: JSON replies, coded errors, bounded JSON bodies.
 * @module
 */
import { isUtf8 } from 'node:buffer';
import { IncomingMessage, ServerResponse } from 'node:http';
import type { HttpRequest, HttpResponse } from '../admission.js';
import { parseJson, TidingsError, type ErrorBody } from '@tidings/protocol';
import { errorBody } from '../errors.js';
import { RetryLater } from '../limits.js';

export { errorBody };


/** The headers of a JSON reply but its length. Frozen: the fast lane makes their lines once. */
const JSON_HEADERS = Object.freeze({ 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
/** No extra headers: one frozen empty set, which callers pass on as it is. */
export const NO_HEADERS: Readonly<Record<string, string>> = Object.freeze({});

/** Writes a JSON reply. */
export function sendJson(res: HttpResponse, status: number, body: unknown, headers: Readonly<Record<string, string>> = NO_HEADERS): void {
  const text = JSON.stringify(body);
  if (headers === NO_HEADERS && !(res instanceof ServerResponse)) {
    // A fast-lane answer: the head is the frozen set's, made once, and `end` adds the length.
    res.writeHead(status, JSON_HEADERS);
    res.end(text);
    return;
  }
  res.writeHead(status, { ...JSON_HEADERS, 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/** Writes `{ error: { code, reason } }` with the code's status; internal errors are not detailed. */
export function sendError(res: HttpResponse, err: unknown, headers: Readonly<Record<string, string>> = NO_HEADERS): void {
  if (res.destroyed) return;
  if (res.headersSent) {
    // A stream broke after it started: all that can be said is to end it. A finished answer stays.
    if (!res.writableEnded) res.destroy();
    return;
  }
  const error: ErrorBody = errorBody(err);
  const status = err instanceof TidingsError ? err.status : 500;
  // Tell clients when to come back from a temporary refusal.
  const extra = status === 503 || status === 429 ? { 'retry-after': String(err instanceof RetryLater ? Math.max(1, Math.ceil(err.retryAfter / 1000)) : 1), ...headers } : headers;
  sendJson(res, status, { error }, extra);
}

/** Reads a JSON body of at most `limit` bytes (read already on the fast lane, streamed from Node's requests); `application/json` only. */
export async function readJson(req: HttpRequest, limit: number): Promise<unknown> {
  if (req.body !== undefined) return readJsonNow(req, req.body, limit);
  checkJson(req, limit);
  if (!(req instanceof IncomingMessage)) throw new TidingsError('bad_request', 'the request has no body');
  return parseJson(utf8Text(await readBody(req, limit)));
}

/** {@link readJson} of a request whose body was read whole (`body`, the fast lane's), without a promise. */
export function readJsonNow(req: HttpRequest, body: Buffer, limit: number): unknown {
  checkJson(req, limit);
  return parseJson(utf8Text(body));
}

/**
 * A body's text, refused `bad_json` when it is not UTF-8 (RFC 8259 section 8.1): decoded leniently,
 * its bad bytes would become U+FFFD and be published changed, where a WebSocket frame with them is
 * refused (1007).
 */
function utf8Text(body: Buffer): string {
  if (!isUtf8(body)) throw new TidingsError('bad_json', 'the body is not valid UTF-8');
  return body.toString('utf8');
}

/** Refuses a body that is not JSON, or declared larger than `limit`. */
function checkJson(req: HttpRequest, limit: number): void {
  const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
  if (type !== 'application/json') {
    throw new TidingsError('unsupported_media_type', 'the body must be application/json');
  }
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (declared > limit) throw new TidingsError('too_large', `the body is larger than ${limit} bytes`);
}

/**
 * The body, at most `limit` bytes. Read with `data` and `end` listeners, not the
 * stream's async iterator, which costs an iterator, its listeners and a promise per chunk on every
 * request of the publish API.
 */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let body: Buffer | Buffer[] | undefined;
    let size = 0;
    let done = false;
    const fail = (code: 'too_large' | 'bad_request', reason: string): void => {
      if (done) return;
      done = true;
      reject(new TidingsError(code, reason));
    };
    req.on('data', (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > limit) {
        // The rest is read and dropped until the answer (which says `Connection: close`) ends the connection.
        fail('too_large', `the body is larger than ${limit} bytes`);
        return;
      }
      if (body === undefined) body = chunk;
      else if (Array.isArray(body)) body.push(chunk);
      else body = [body, chunk];
    });
    req.on('end', () => {
      if (done) return;
      done = true;
      resolve(body === undefined ? Buffer.alloc(0) : Array.isArray(body) ? Buffer.concat(body) : body);
    });
    // The connection ended, failed or timed out before the whole body arrived (`close` also comes
    // after every whole body: then nothing is made). The `error` listener stays for the life of the
    // request: an unheard `error` would take the process down.
    const cutOff = (): void => fail('bad_request', 'the request body was cut off');
    req.on('error', cutOff);
    req.on('close', cutOff);
  });
}

/**
 * Node keeps a response's head, the string it sent (about 300 bytes), as `_header` for the life of the
 * response, and reads it afterwards only as "headers sent" (`headersSent`, and the guards of
 * `setHeader`, `writeHead` and `end`). A stream lives for hours; once its head is out, a one-character
 * stand-in keeps those answers the same and lets the string go.
 */
export function forgetHead(res: HttpResponse): void {
  const head = res as unknown as { _header?: unknown; _headerSent?: unknown };
  if (head._headerSent === true && typeof head._header === 'string') head._header = ' ';
}
