/**
 * `POST /api/publish` (server API, API key) and `POST /send` (connected clients publishing over
 * HTTP, as SSE and long-poll clients must). One body shape: a publication or an array of them.
 * A batch is validated whole before anything is published, then published in order.
 * @module
 */
import type { HttpRequest, HttpResponse } from '../admission.js';
import { TidingsError, toPublishRequest, type PublishRequest, type PublishResult } from '@tidings/protocol';
import type { Origin, Publisher } from '../publisher.js';
import { readJson, readJsonNow, sendJson } from './respond.js';

function toRequests(body: unknown, maxBatch: number): { requests: PublishRequest[]; batch: boolean } {
  if (!Array.isArray(body)) return { requests: [toPublishRequest(body)], batch: false };
  if (body.length === 0) throw new TidingsError('bad_request', 'a batch must hold at least one publication');
  if (body.length > maxBatch) throw new TidingsError('limit_exceeded', `a batch holds at most ${maxBatch} publications`);
  const requests = body.map((item, i) => {
    try {
      return toPublishRequest(item);
    } catch (err) {
      if (err instanceof TidingsError) throw new TidingsError(err.code, `publication ${i}: ${err.message}`);
      throw err;
    }
  });
  return { requests, batch: true };
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
  requests.forEach((r, i) => {
    try {
      publisher.check(r, origin);
    } catch (err) {
      if (err instanceof TidingsError && batch) throw new TidingsError(err.code, `publication ${i}: ${err.message}`);
      throw err;
    }
  });
  const results: PublishResult[] = [];
  for (const r of requests) results.push(await publisher.publishChecked(r, origin));
  sendJson(res, 200, batch ? { results } : results[0]);
}
