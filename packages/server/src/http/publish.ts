/**
 * `POST /api/publish` (server API, API key) and `POST /send` (connected clients publishing over
 * HTTP, as SSE and long-poll clients must). One body shape: a publication or an array of them.
 * A batch is checked whole (policy, rates, sizes, the host's publish hook) before anything is
 * published, then published in order.
 * @module
 */
import type { HttpRequest, HttpResponse } from '../admission.js';
import { TidingsError, toPublishRequest, type PublishRequest, type PublishResult } from '@tidings/protocol';
import { RetryLater } from '../limits.js';
import type { Origin, Publisher } from '../publisher.js';
import { readJson, readJsonNow, sendJson } from './respond.js';

function toRequests(body: unknown, maxBatch: number): { requests: PublishRequest[]; batch: boolean } {
  if (!Array.isArray(body)) return { requests: [toPublishRequest(body)], batch: false };
  if (body.length === 0) throw new TidingsError('bad_request', 'a batch must hold at least one publication');
  if (body.length > maxBatch) throw new TidingsError('limit_exceeded', `a batch holds at most ${maxBatch} publications`);
  return { requests: body.map((item, i) => inBatch(i, () => toPublishRequest(item))), batch: true };
}

/** Reads, validates and publishes a body; replies with the position(s). */
export async function handlePublish(
  req: HttpRequest,
  res: HttpResponse,
  publisher: Publisher,
  origin: Origin,
  limits: { maxBody: number; maxBatch: number },
): Promise<void> {
  // A body the lane read whole is parsed at once: one promise fewer per publication.
  const body = req.body === undefined ? await readJson(req, limits.maxBody) : readJsonNow(req, req.body, limits.maxBody);
  const { requests, batch } = toRequests(body, limits.maxBatch);
  if (!batch) {
    const [r] = requests as [PublishRequest];
    publisher.check(r, origin);
    sendJson(res, 200, await publisher.publishChecked(r, origin));
    return;
  }
  // Every publication passes every check (policy, rate, size, the host's hook) before any is published.
  const data = requests.map((r, i) =>
    inBatch(i, () => {
      publisher.check(r, origin);
      return publisher.encode(r);
    }),
  );
  if (publisher.asks(origin)) {
    for (let i = 0; i < requests.length; i++) await inBatch(i, () => publisher.authorizePublish(requests[i] as PublishRequest, data[i] as string, origin));
  }
  // Published in order; a broker failing partway leaves the ones before it published (retry with idempotency keys).
  const results: PublishResult[] = [];
  for (let i = 0; i < requests.length; i++) results.push(await publisher.publishEncoded(requests[i] as PublishRequest, data[i] as string, origin));
  sendJson(res, 200, { results });
}

/** Runs `f` for publication `i` of a batch: a refusal names the publication, and keeps when to retry. */
function inBatch<T>(i: number, f: () => T): T {
  const named = (err: unknown): never => {
    if (err instanceof RetryLater) throw new RetryLater(err.code, `publication ${i}: ${err.message}`, err.retryAfter);
    if (err instanceof TidingsError) throw new TidingsError(err.code, `publication ${i}: ${err.message}`);
    throw err;
  };
  try {
    const out = f();
    return (out instanceof Promise ? out.catch(named) : out) as T;
  } catch (err) {
    return named(err);
  }
}
