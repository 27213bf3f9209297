/**
 * Interoperability with a real browser's EventSource (headless Chromium): a page on the gateway's
 * origin opens a plain `new EventSource('/sse?...')`; the server drops the stream and the browser's
 * own reconnect, carrying `Last-Event-ID`, must yield exactly the missed publications (or an
 * explicit gap when history no longer holds them).
 */
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseCursor, type Gap, type Message, type Position } from '@tidings/protocol';
import { launchChromium, startGateway, TEST_API_KEY, type TestGateway } from '@tidings/testing';
import { range, recordSseRequests, type SseRequest } from './support.js';

/** What an in-page listener saw. */
interface Seen {
  readonly type: string;
  readonly data: string;
  readonly lastEventId: string;
  readonly readyState: number;
}

declare global {
  interface Window {
    __tidingsSeen?: Seen[];
  }
}

/** Event names every recorder listens for, besides the ones a test adds. */
const BASE_EVENTS = ['open', 'error', 'tidings:welcome', 'tidings:gap', 'tidings:error', 'message'];

/** A plain EventSource in a page; what its listeners saw is kept in `window.__tidingsSeen`. */
class PageRecorder {
  last: Seen[] = [];

  private constructor(readonly page: Page) {}

  static async open(page: Page, path: string, names: readonly string[] = []): Promise<PageRecorder> {
    await page.evaluate(
      ({ path, names }) => {
        const seen: Seen[] = [];
        window.__tidingsSeen = seen;
        const es = new EventSource(path);
        for (const name of names) {
          es.addEventListener(name, (e: Event) => {
            const m = e instanceof MessageEvent ? e : undefined;
            seen.push({ type: e.type, data: typeof m?.data === 'string' ? m.data : '', lastEventId: m?.lastEventId ?? '', readyState: es.readyState });
          });
        }
      },
      { path, names: [...BASE_EVENTS, ...names] },
    );
    return new PageRecorder(page);
  }

  async seen(): Promise<Seen[]> {
    this.last = await this.page.evaluate(() => window.__tidingsSeen ?? []);
    return this.last;
  }

  named(type: string): Seen[] {
    return this.last.filter((s) => s.type === type);
  }

  messages(): Message[] {
    return this.last.filter((s) => !['open', 'error'].includes(s.type) && !s.type.startsWith('tidings:')).map((s) => JSON.parse(s.data) as Message);
  }

  gaps(): Gap[] {
    return this.named('tidings:gap').map((s) => JSON.parse(s.data) as Gap);
  }

  /** Polls the page until `predicate` holds on what it saw. */
  async until(predicate: (r: this) => boolean, timeoutMs = 8000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      await this.seen();
      if (predicate(this)) return;
      if (Date.now() > deadline) {
        throw new Error(`browser: condition not met within ${timeoutMs} ms; saw ${JSON.stringify(this.last.map((s) => [s.type, s.lastEventId])).slice(0, 800)}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

/** Publishes a batch in one request, so it lands well within the client's 100 ms retry delay. */
async function publishBatch(gw: TestGateway, batch: { channel: string; data: unknown; type?: string }[]): Promise<Position[]> {
  const res = await fetch(`${gw.url}/api/publish`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${TEST_API_KEY}` },
    body: JSON.stringify(batch),
  });
  const body = (await res.json()) as { results: { position: Position }[] };
  expect(res.status).toBe(200);
  return body.results.map((r) => r.position);
}

/** Event types with every publication type folded into `message`. */
const kinds = (seen: Seen[]): string[] =>
  seen.map((s) => (['open', 'error'].includes(s.type) || s.type.startsWith('tidings:') ? s.type : 'message'));

describe('browser EventSource (headless Chromium) against /sse', () => {
  let gw: TestGateway;
  let browser: Browser;
  let context: BrowserContext | undefined;
  let log: { readonly requests: SseRequest[]; stop(): void } | undefined;
  let n = 0;
  const channel = (ns = ''): string => `${ns === '' ? '' : `${ns}:`}browser-${++n}`;

  /** A fresh context and a page on the gateway's origin, so `/sse` is same-origin. */
  const openPage = async (): Promise<Page> => {
    context = await browser.newContext();
    const page = await context.newPage();
    const res = await page.goto(`${gw.url}/`);
    expect(res?.status()).toBe(200);
    return page;
  };
  const epochOf = (r: PageRecorder, c: string): string => {
    const start = parseCursor(r.named('tidings:welcome')[0]?.lastEventId ?? '').get(c);
    expect(start?.seq).toBe(0);
    return (start as Position).epoch;
  };

  beforeAll(async () => {
    gw = await startGateway({ demo: true, sseRetry: 100, namespaces: { small: { historySize: 3 } } });
    browser = await launchChromium();
  });
  afterEach(async () => {
    log?.stop();
    log = undefined;
    await context?.close();
    context = undefined;
  });
  afterAll(async () => {
    await browser?.close();
    await gw?.close();
  });

  it('receives publications live, then after a server drop resumes with Last-Event-ID: exactly the missed ones, in order', async () => {
    const c = channel();
    log = recordSseRequests(gw);
    const page = await openPage();
    // Same origin: the page was served by the gateway, and EventSource is given a relative URL.
    expect(await page.evaluate(() => location.origin)).toBe(gw.url);
    const r = await PageRecorder.open(page, `/sse?channel=${encodeURIComponent(c)}`, ['chat.message']);
    await r.until((x) => x.named('tidings:welcome').length === 1);
    const epoch = epochOf(r, c);

    await gw.publish(c, { n: 1 });
    await gw.publish(c, { n: 2 }, { type: 'chat.message' });
    await gw.publish(c, { n: 3 });
    await r.until((x) => x.messages().length === 3);
    expect(r.last.slice(-3).map((s) => [s.type, s.lastEventId])).toEqual([
      ['message', `${c}=${epoch}.1`],
      ['chat.message', `${c}=${epoch}.2`],
      ['message', `${c}=${epoch}.3`],
    ]);

    const droppedAt = Date.now();
    gw.gateway.disconnectAll();
    expect(await publishBatch(gw, range(4, 9).map((i) => ({ channel: c, data: { n: i } })))).toEqual(range(4, 9).map((seq) => ({ epoch, seq })));
    await r.until((x) => x.messages().length === 9);
    await gw.publish(c, { n: 10 });
    await r.until((x) => x.messages().length === 10);

    expect(r.messages()).toEqual(
      range(1, 10).map((i) => ({ channel: c, position: { epoch, seq: i }, ...(i === 2 ? { type: 'chat.message' } : {}), data: { n: i } })),
    );
    expect(r.named('message').concat(r.named('chat.message')).map((s) => s.lastEventId).sort()).toEqual(
      range(1, 10).map((seq) => `${c}=${epoch}.${seq.toString(36)}`).sort(),
    );
    expect(kinds(r.last)).toEqual([
      'open',
      'tidings:welcome',
      ...Array<string>(3).fill('message'),
      'tidings:error',
      'error',
      'open',
      'tidings:welcome',
      ...Array<string>(7).fill('message'),
    ]);
    // The browser's error event comes while it is reconnecting (CONNECTING), not closed for good.
    expect(r.named('error').map((s) => s.readyState)).toEqual([0]);
    // The close reason carries no id, so the event keeps the last id (the spec's last event ID buffer).
    expect(r.named('tidings:error').map((s) => [JSON.parse(s.data) as unknown, s.lastEventId])).toEqual([
      [{ code: 'restart', reason: 'server restarting' }, `${c}=${epoch}.3`],
    ]);

    // What reached the server: the browser's own reconnect carried the last id.
    expect(log.requests.map((q) => q.lastEventId)).toEqual([undefined, `${c}=${epoch}.3`]);
    expect(log.requests.map((q) => q.url)).toEqual([`/sse?channel=${c}`, `/sse?channel=${c}`]);
    expect(r.named('tidings:welcome')[1]?.lastEventId).toBe(`${c}=${epoch}.3`);
    const delay = (log.requests[1]?.at ?? 0) - droppedAt;
    expect(delay).toBeGreaterThanOrEqual(90);
    expect(delay).toBeLessThan(2500);
  });

  it('resumes every channel of a two-channel stream from one Last-Event-ID', async () => {
    const [a, b] = [channel(), channel()];
    log = recordSseRequests(gw);
    const page = await openPage();
    const r = await PageRecorder.open(page, `/sse?channel=${encodeURIComponent(a)}&channel=${encodeURIComponent(b)}`);
    await r.until((x) => x.named('tidings:welcome').length === 1);
    const [ea, eb] = [epochOf(r, a), epochOf(r, b)];
    expect(r.named('tidings:welcome')[0]?.lastEventId).toBe(`${a}=${ea}.0,${b}=${eb}.0`);

    await gw.publish(a, 'a1');
    await gw.publish(b, 'b1');
    await gw.publish(a, 'a2');
    await r.until((x) => x.messages().length === 3);
    // Every id carries the position of both channels, in the request's channel order.
    expect(r.named('message').map((s) => s.lastEventId)).toEqual([`${a}=${ea}.1,${b}=${eb}.0`, `${a}=${ea}.1,${b}=${eb}.1`, `${a}=${ea}.2,${b}=${eb}.1`]);

    gw.gateway.disconnectAll();
    await publishBatch(gw, [
      { channel: b, data: 'b2' },
      { channel: a, data: 'a3' },
      { channel: b, data: 'b3' },
      { channel: a, data: 'a4' },
    ]);
    await r.until((x) => x.messages().length === 7);
    await gw.publish(b, 'b4');
    await r.until((x) => x.messages().length === 8);

    const msgs = r.messages();
    expect(msgs.filter((m) => m.channel === a).map((m) => m.data)).toEqual(['a1', 'a2', 'a3', 'a4']);
    expect(msgs.filter((m) => m.channel === b).map((m) => m.data)).toEqual(['b1', 'b2', 'b3', 'b4']);
    expect(msgs.filter((m) => m.channel === a).map((m) => m.position)).toEqual(range(1, 4).map((seq) => ({ epoch: ea, seq })));
    expect(msgs.filter((m) => m.channel === b).map((m) => m.position)).toEqual(range(1, 4).map((seq) => ({ epoch: eb, seq })));
    // After the reconnect: exactly the four missed ones, then the live one.
    expect(msgs.slice(3).map((m) => m.data).sort()).toEqual(['a3', 'a4', 'b2', 'b3', 'b4']);
    expect(msgs.at(-1)?.data).toBe('b4');

    expect(log.requests.map((q) => q.lastEventId)).toEqual([undefined, `${a}=${ea}.2,${b}=${eb}.1`]);
    expect(r.named('tidings:welcome').map((s) => s.lastEventId)).toEqual([`${a}=${ea}.0,${b}=${eb}.0`, `${a}=${ea}.2,${b}=${eb}.1`]);
    expect(r.last.at(-1)?.lastEventId).toBe(`${a}=${ea}.4,${b}=${eb}.4`);
    expect(r.gaps()).toEqual([]);
  });

  it('gets a tidings:gap naming the channel and the lost range when history was trimmed', async () => {
    const c = channel('small');
    log = recordSseRequests(gw);
    const page = await openPage();
    const r = await PageRecorder.open(page, `/sse?channel=${encodeURIComponent(c)}`);
    await r.until((x) => x.named('tidings:welcome').length === 1);
    const epoch = epochOf(r, c);

    await gw.publish(c, 1);
    await r.until((x) => x.messages().length === 1);

    gw.gateway.disconnectAll();
    // Nine while away; history keeps the last three (8, 9, 10), so 2..7 are lost.
    await publishBatch(gw, range(2, 10).map((i) => ({ channel: c, data: i })));
    await r.until((x) => x.messages().length === 4);
    await gw.publish(c, 11);
    await r.until((x) => x.messages().length === 5);

    expect(log.requests.map((q) => q.lastEventId)).toEqual([undefined, `${c}=${epoch}.1`]);
    expect(r.gaps()).toEqual([{ channel: c, from: { epoch, seq: 1 }, to: { epoch, seq: 7 }, reason: 'trimmed' }]);
    expect(r.named('tidings:gap').map((s) => s.lastEventId)).toEqual([`${c}=${epoch}.7`]);
    expect(r.messages().map((m) => m.data)).toEqual([1, 8, 9, 10, 11]);
    // The gap comes right after the new welcome and before what follows it.
    expect(kinds(r.last).slice(-7)).toEqual(['open', 'tidings:welcome', 'tidings:gap', 'message', 'message', 'message', 'message']);
    expect(r.last.at(-1)?.lastEventId).toBe(`${c}=${epoch}.b`);
  });
});
