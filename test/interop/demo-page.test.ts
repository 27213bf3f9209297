/**
 * The demo page at `/` in real headless Chromium: two visitors (separate browser contexts) chat on
 * `demo:lobby`, first over WebSocket, then one over SSE and the other over long polling.
 */
import type { IncomingMessage } from 'node:http';
import type { Browser, BrowserContext, Page, WebSocket as PwWebSocket } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium, startGateway, type TestGateway } from '@tidings/testing';
import { DEMO_CHANNEL, waitUntil } from './support.js';

const TIMEOUT = 8000;

/** A demo page with the WebSockets it has open and any uncaught page errors. */
interface Visitor {
  readonly page: Page;
  readonly sockets: Set<PwWebSocket>;
  readonly errors: string[];
}

const text = async (page: Page, selector: string): Promise<string> => (await page.textContent(selector)) ?? '';
/** The log, newest first, as the page shows it: `#<seq><text>`. */
const logOf = (page: Page): Promise<string[]> => page.$$eval('#log li', (items) => items.map((li) => li.textContent ?? ''));

const waitForText = (page: Page, selector: string, expected: string): Promise<unknown> =>
  page.waitForFunction(([sel, want]) => document.querySelector(sel)?.textContent === want, [selector, expected] as const, { timeout: TIMEOUT });

const waitForLog = (page: Page, count: number): Promise<unknown> =>
  page.waitForFunction((n) => document.querySelectorAll('#log li').length >= n, count, { timeout: TIMEOUT });

/** Types into the form and submits it with the Send button. */
async function say(page: Page, message: string): Promise<void> {
  await page.fill('#text', message);
  await page.click('#form button');
}

describe('demo page in headless Chromium', () => {
  let gw: TestGateway;
  let browser: Browser;
  const contexts: BrowserContext[] = [];
  /** Requests to `POST /send` (how SSE and long-poll visitors publish). */
  const sends: string[] = [];
  const onRequest = (req: IncomingMessage): void => {
    if (req.url === '/send') sends.push(req.method ?? '');
  };

  const visit = async (): Promise<Visitor> => {
    const context = await browser.newContext();
    contexts.push(context);
    const page = await context.newPage();
    const visitor: Visitor = { page, sockets: new Set(), errors: [] };
    page.on('websocket', (ws) => {
      visitor.sockets.add(ws);
      ws.on('close', () => visitor.sockets.delete(ws));
    });
    page.on('pageerror', (err) => visitor.errors.push(err.message));
    const res = await page.goto(`${gw.url}/`);
    expect(res?.status()).toBe(200);
    expect(res?.headers()['content-type']).toBe('text/html; charset=utf-8');
    return visitor;
  };
  const connections = (): string => JSON.stringify(gw.gateway.connections());

  beforeAll(async () => {
    gw = await startGateway({ demo: true, sseRetry: 100 });
    gw.gateway.server.on('request', onRequest);
    browser = await launchChromium();
  });
  afterEach(async () => {
    for (const c of contexts.splice(0)) await c.close();
  });
  afterAll(async () => {
    gw?.gateway.server.off('request', onRequest);
    await browser?.close();
    await gw?.close();
  });

  it('carries messages between two visitors over WebSocket, then over SSE and long polling', async () => {
    const a = await visit();
    const b = await visit();
    for (const v of [a, b]) {
      await waitForText(v.page, '#status', 'live');
      expect(await text(v.page, '#transport')).toBe('websocket');
      expect(await v.page.isChecked('input[name=t][value=websocket]')).toBe(true);
      expect(await v.page.title()).toBe('Tidings demo');
    }
    expect(a.sockets.size).toBe(1);
    expect(b.sockets.size).toBe(1);
    expect(gw.gateway.connections()).toMatchObject({ websocket: 2, sse: 0, poll: 0 });

    // Over WebSocket: A's message reaches B (and A itself) as #1; the form clears.
    await say(a.page, 'hello from A');
    await waitForLog(b.page, 1);
    await waitForLog(a.page, 1);
    expect(await logOf(b.page)).toEqual(['#1hello from A']);
    expect(await logOf(a.page)).toEqual(['#1hello from A']);
    expect(await a.page.inputValue('#text')).toBe('');
    expect(sends).toEqual([]); // published as a WebSocket frame, not over HTTP

    // A switches to SSE: the WebSocket closes and an SSE stream opens.
    await a.page.check('input[name=t][value=sse]');
    await waitForText(a.page, '#transport', 'sse');
    await waitForText(a.page, '#status', 'live');
    await waitUntil(() => a.sockets.size === 0, () => `A still has ${a.sockets.size} WebSocket(s) open`);

    // B switches to long polling: its WebSocket closes and a poll is held open.
    await b.page.check('input[name=t][value=poll]');
    await waitForText(b.page, '#transport', 'poll');
    await waitUntil(() => b.sockets.size === 0, () => `B still has ${b.sockets.size} WebSocket(s) open`);
    await waitUntil(() => {
      const c = gw.gateway.connections();
      return c.websocket === 0 && c.sse === 1 && c.poll === 1;
    }, connections);

    // From the SSE visitor (publishes with POST /send).
    await say(a.page, 'sent over sse');
    await waitForLog(b.page, 2);
    await waitForLog(a.page, 2);
    expect(await logOf(b.page)).toEqual(['#2sent over sse', '#1hello from A']);
    expect(await logOf(a.page)).toEqual(['#2sent over sse', '#1hello from A']);

    // From the long-polling visitor.
    await say(b.page, 'sent while polling');
    await waitForLog(a.page, 3);
    await waitForLog(b.page, 3);

    // From the server's publish API.
    const published = await gw.publish(DEMO_CHANNEL, { text: 'from the server' });
    expect(published.position.seq).toBe(4);
    await waitForLog(a.page, 4);
    await waitForLog(b.page, 4);

    const expected = ['#4from the server', '#3sent while polling', '#2sent over sse', '#1hello from A'];
    expect(await logOf(a.page)).toEqual(expected);
    expect(await logOf(b.page)).toEqual(expected);
    expect(sends).toEqual(['POST', 'POST']);
    expect(await text(a.page, '#transport')).toBe('sse');
    expect(await text(b.page, '#transport')).toBe('poll');
    expect(await a.page.isChecked('input[name=t][value=sse]')).toBe(true);
    expect(await b.page.isChecked('input[name=t][value=poll]')).toBe(true);
    await waitForText(b.page, '#status', 'live');
    expect(await text(a.page, '#status')).toBe('live');
    expect(a.errors).toEqual([]);
    expect(b.errors).toEqual([]);
  });

  it('a visitor arriving after others spoke sees only newer messages, also after switching to SSE', async () => {
    const before = (await gw.publish(DEMO_CHANNEL, { text: 'said before arrival' })).position.seq;
    const a = await visit();
    await waitForText(a.page, '#status', 'live');
    await a.page.check('input[name=t][value=sse]');
    await waitForText(a.page, '#transport', 'sse');
    await waitForText(a.page, '#status', 'live');
    await waitUntil(() => gw.gateway.connections().sse === 1, connections);
    expect(await logOf(a.page)).toEqual([]);

    await gw.publish(DEMO_CHANNEL, { text: 'said after arrival' });
    await waitForLog(a.page, 1);
    expect(await logOf(a.page)).toEqual([`#${before + 1}said after arrival`]);
    // A non-text payload is shown as JSON.
    await gw.publish(DEMO_CHANNEL, { n: 7 });
    await waitForLog(a.page, 2);
    expect(await logOf(a.page)).toEqual([`#${before + 2}{"n":7}`, `#${before + 1}said after arrival`]);
    expect(a.errors).toEqual([]);
  });
});
