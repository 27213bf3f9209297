/**
 * The shipped TLS setup (docs/deploy/nginx: tidings-tls.conf and tidings-locations.conf, HTTP/2
 * offered as in nginx-tls.conf) run by a real nginx with a throwaway self-signed certificate, in
 * front of a gateway: WebSocket over wss://, SSE over https:// on HTTP/1.1 and HTTP/2, publishing
 * over https://, and resume (Last-Event-ID, a WebSocket `since`) through TLS; then a real browser,
 * whose page is on HTTP/2, with an EventSource and a WebSocket on the same origin.
 */
import { connect as http2Connect, constants as h2 } from 'node:http2';
import { request as httpsRequest } from 'node:https';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser } from 'playwright-core';
import { SseParser, type SseEvent } from '@tidings/client';
import { parseCursor, type Message, type PublishResult, type ReplyFrame, type SubscribeResult } from '@tidings/protocol';
import {
  chromiumAvailable,
  cleanupAfterEach,
  launchChromium,
  RawWsClient,
  startGateway,
  startTlsNginx,
  TEST_API_KEY,
  until,
  type TestGateway,
  type TlsNginx,
} from '@tidings/testing';

let gw: TestGateway;
let nginx: TlsNginx;
let n = 0;
const channel = (): string => `tls-${++n}`;
const cleanup = cleanupAfterEach();

beforeAll(async () => {
  gw = await startGateway({ sseRetry: 100 });
  nginx = await startTlsNginx([gw.port]);
});
afterAll(async () => {
  await nginx?.close();
  await gw?.close();
});

/** An SSE stream read over https:// (HTTP/1.1), trusting only the throwaway certificate. */
interface TlsStream {
  readonly status: number;
  readonly contentType: string | undefined;
  readonly events: SseEvent[];
  close(): void;
}

function openSse(path: string, lastEventId?: string): Promise<TlsStream> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { accept: 'text/event-stream' };
    if (lastEventId !== undefined) headers['last-event-id'] = lastEventId;
    const req = httpsRequest(`${nginx.url}${path}`, { ca: nginx.ca, headers, agent: false }, (res) => {
      const events: SseEvent[] = [];
      const parser = new SseParser();
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => events.push(...parser.feed(chunk)));
      res.on('error', () => undefined);
      const stream = { status: res.statusCode ?? 0, contentType: res.headers['content-type'], events, close: () => req.destroy() };
      cleanup.push(() => stream.close());
      resolve(stream);
    });
    req.on('error', reject);
    req.end();
  });
}

/** `POST /api/publish` over https://. */
function publish(channelName: string, data: unknown): Promise<PublishResult> {
  const body = JSON.stringify({ channel: channelName, data });
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      `${nginx.url}/api/publish`,
      {
        method: 'POST',
        ca: nginx.ca,
        agent: false,
        headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(text) as PublishResult) : reject(new Error(`publish: ${res.statusCode} ${text}`))));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const messagesOf = (events: readonly SseEvent[]): Message[] => events.filter((e) => e.event === 'message').map((e) => JSON.parse(e.data) as Message);

async function wsConnect(): Promise<RawWsClient> {
  const ws = await RawWsClient.connect(nginx.wsUrl, { ca: nginx.ca });
  cleanup.push(() => ws.close());
  return ws;
}

describe('nginx with TLS in front of a gateway', () => {
  it('delivers a publication made over https:// to a WebSocket on wss:// and an SSE stream on https://', async () => {
    const c = channel();
    const ws = await wsConnect();
    const reply = (await ws.request({ type: 'subscribe', channel: c })) as ReplyFrame;
    expect(reply.type).toBe('reply');
    const sse = await openSse(`/sse?channel=${c}`);
    expect([sse.status, sse.contentType]).toEqual([200, 'text/event-stream; charset=utf-8']);
    await until(() => sse.events.some((e) => e.event === 'tidings:welcome'), 5000, 'SSE welcome');

    const published = await publish(c, { hello: 'tls' });
    const expected: Message = { channel: c, position: published.position, data: { hello: 'tls' } };
    await ws.until((x) => x.ofType('message').length === 1);
    await until(() => messagesOf(sse.events).length === 1, 5000, 'SSE message');
    expect(ws.ofType('message').map((f) => f.message)).toEqual([expected]);
    expect(messagesOf(sse.events)).toEqual([expected]);
  });

  it('resumes an SSE stream from Last-Event-ID through TLS with exactly the missed publications', async () => {
    const c = channel();
    const first = await openSse(`/sse?channel=${c}`);
    await until(() => first.events.some((e) => e.event === 'tidings:welcome'), 5000, 'SSE welcome');
    const p1 = await publish(c, 1);
    await until(() => messagesOf(first.events).length === 1, 5000, 'the first message');
    const lastEventId = first.events.at(-1)?.id ?? '';
    expect(parseCursor(lastEventId).get(c)).toEqual(p1.position);
    first.close();

    await publish(c, 2);
    await publish(c, 3);
    const again = await openSse(`/sse?channel=${c}`, lastEventId);
    await until(() => messagesOf(again.events).length === 2, 5000, 'the missed messages');
    await publish(c, 4);
    await until(() => messagesOf(again.events).length === 3, 5000, 'the live message');
    const { epoch } = p1.position;
    expect(messagesOf(again.events).map((m) => [m.position.seq, m.data])).toEqual([
      [2, 2],
      [3, 3],
      [4, 4],
    ]);
    expect(messagesOf(again.events).every((m) => m.position.epoch === epoch)).toBe(true);
    expect(again.events.filter((e) => e.event === 'tidings:gap')).toEqual([]);
  });

  it('resumes a WebSocket subscription from its position through TLS', async () => {
    const c = channel();
    const p1 = await publish(c, 1);
    await publish(c, 2);
    await publish(c, 3);
    const ws = await wsConnect();
    const reply = (await ws.request({ type: 'subscribe', channel: c, since: p1.position })) as ReplyFrame;
    expect((reply.result as SubscribeResult).recovered).toBe(true);
    await ws.until((x) => x.ofType('message').length === 2);
    expect(ws.ofType('message').map((f) => f.message.data)).toEqual([2, 3]);
  });

  it('streams SSE over HTTP/2 unbuffered, event by event', async () => {
    const c = channel();
    const session = http2Connect(nginx.url, { ca: nginx.ca });
    cleanup.push(() => session.destroy());
    session.on('error', () => undefined);
    const stream = session.request({ [h2.HTTP2_HEADER_PATH]: `/sse?channel=${c}`, accept: 'text/event-stream' });
    const events: SseEvent[] = [];
    const parser = new SseParser();
    let status = 0;
    stream.on('response', (headers) => (status = Number(headers[h2.HTTP2_HEADER_STATUS])));
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => events.push(...parser.feed(chunk)));
    stream.on('error', () => undefined);
    await until(() => events.some((e) => e.event === 'tidings:welcome'), 5000, 'SSE welcome over HTTP/2');
    expect(status).toBe(200);
    expect(session.alpnProtocol).toBe('h2');
    for (const i of [1, 2, 3]) {
      await publish(c, i);
      // Each one arrives before the next is published: nothing waits in a buffer.
      await until(() => messagesOf(events).length === i, 5000, `message ${i} over HTTP/2`);
    }
  });

  it('is refused by a client that does not trust the certificate', async () => {
    await expect(RawWsClient.connect(nginx.wsUrl)).rejects.toThrow(/self[- ]signed/i);
  });
});

describe.skipIf(!chromiumAvailable())('a browser through nginx with TLS', () => {
  let browser: Browser;
  beforeAll(async () => {
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
  });

  it('loads the page over HTTP/2 and gets publications on an EventSource and a WebSocket, resuming the EventSource after a drop', async () => {
    const c = channel();
    // The certificate is throwaway: this context accepts it (the Node clients above check it with `ca`).
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    cleanup.push(() => context.close());
    const page = await context.newPage();
    await page.goto(`${nginx.url}/healthz`);
    expect(await page.evaluate(() => (performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming).nextHopProtocol)).toBe('h2');

    await page.evaluate(
      ([wsUrl, ch]) =>
        new Promise<void>((resolve, reject) => {
          const seen = { sse: [] as unknown[], ws: [] as unknown[] };
          Object.assign(window, { seen });
          let ready = 0;
          const one = (): void => {
            if (++ready === 2) resolve();
          };
          const es = new EventSource(`/sse?channel=${ch}`);
          es.addEventListener('tidings:welcome', one, { once: true });
          es.addEventListener('message', (e) => seen.sse.push(JSON.parse(e.data as string)));
          const ws = new WebSocket(wsUrl);
          ws.onerror = () => reject(new Error('WebSocket failed'));
          ws.onopen = () => ws.send(JSON.stringify({ type: 'subscribe', id: 1, channel: ch }));
          ws.onmessage = (e) => {
            const frame = JSON.parse(e.data as string) as { type: string; message?: unknown };
            if (frame.type === 'reply') one();
            if (frame.type === 'message') seen.ws.push(frame.message);
          };
        }),
      [nginx.wsUrl, c] as const,
    );
    const seen = (): Promise<{ sse: Message[]; ws: Message[] }> => page.evaluate(() => (window as unknown as { seen: { sse: Message[]; ws: Message[] } }).seen);

    await publish(c, 1);
    await expect.poll(async () => (await seen()).sse.length + (await seen()).ws.length, { timeout: 5000 }).toBe(2);
    // The gateway drops the EventSource: the browser reconnects by itself with Last-Event-ID.
    gw.gateway.disconnectAll();
    await publish(c, 2);
    await publish(c, 3);
    await expect.poll(async () => (await seen()).sse.map((m) => m.data), { timeout: 5000 }).toEqual([1, 2, 3]);
    expect((await seen()).ws.map((m) => m.data)).toEqual([1]);
  });
});
