/**
 * Helpers of the admin dashboard tests: plain HTTP with chosen headers, logging in for a cookie, and
 * a reader of `GET /admin/events` that keeps every tick.
 */
import { request, type ClientRequest, type IncomingHttpHeaders } from 'node:http';
import { SseParser } from '@tidings/client';
import { Signal } from '@tidings/testing';
import type { ClusterTick } from '../../packages/server/src/admin/view.js';

export type { ClusterTick };

export interface Answer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

/** One request on a fresh connection. */
export function http(url: string, method: 'GET' | 'POST', headers: Record<string, string> = {}, body?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, agent: false, headers: body === undefined ? headers : { 'content-length': String(Buffer.byteLength(body)), ...headers } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** The coded error of an answer. */
export const codeOf = (a: Answer): string | undefined => (JSON.parse(a.body) as { error?: { code?: string } }).error?.code;

/** Logs in with `key`; the answer, and the cookie to send (`name=value`) when it was accepted. */
export async function login(url: string, key: string): Promise<{ answer: Answer; cookie: string }> {
  const answer = await http(`${url}/admin/login`, 'POST', { 'content-type': 'application/json' }, JSON.stringify({ key }));
  const set = answer.headers['set-cookie']?.[0] ?? '';
  return { answer, cookie: set.split(';')[0] ?? '' };
}

/** An open `GET /admin/events` stream and what it sent. */
export class AdminFeedReader {
  readonly ticks: ClusterTick[] = [];
  readonly events: Array<{ event: string; data: string }> = [];
  status = 0;
  ended = false;
  readonly #signal = new Signal();
  readonly #parser = new SseParser();
  #req: ClientRequest | undefined;

  static open(url: string, headers: Record<string, string>): Promise<AdminFeedReader> {
    const reader = new AdminFeedReader();
    return new Promise((resolve, reject) => {
      const req = request(`${url}/admin/events`, { agent: false, headers: { accept: 'text/event-stream', ...headers } }, (res) => {
        reader.status = res.statusCode ?? 0;
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          for (const e of reader.#parser.feed(chunk)) {
            reader.events.push({ event: e.event, data: e.data });
            if (e.event === 'tick') reader.ticks.push(JSON.parse(e.data) as ClusterTick);
          }
          reader.#signal.wake();
        });
        const end = (): void => {
          reader.ended = true;
          reader.#signal.wake();
        };
        res.on('end', end);
        res.on('error', end);
        resolve(reader);
      });
      req.on('error', reject);
      req.end();
      reader.#req = req;
    });
  }

  get last(): ClusterTick | undefined {
    return this.ticks[this.ticks.length - 1];
  }

  /** Resolves once the latest tick satisfies `predicate`. */
  async untilTick(predicate: (t: ClusterTick) => boolean, timeoutMs = 8000): Promise<ClusterTick> {
    await this.#signal.until(
      () => this.last !== undefined && predicate(this.last),
      timeoutMs,
      () => `admin feed: condition not met; last tick ${JSON.stringify(this.last)}`,
    );
    return this.last as ClusterTick;
  }

  until(predicate: (r: this) => boolean, timeoutMs = 5000): Promise<void> {
    return this.#signal.until(() => predicate(this), timeoutMs, () => `admin feed: condition not met (${this.events.length} events)`);
  }

  close(): void {
    this.#req?.destroy();
  }
}
