/**
 * The demo page at `/` in real headless Chromium, built on the client SDK (`/tidings-client.js`).
 * Visitors are separate browser contexts. It covers chat over each transport, history on load,
 * fallback and upgrade, text typed while the server is down (queued, then delivered once) and a
 * gap after a restart that lost history, told in words.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { MemoryBroker } from '@tidings/server';
import { launchChromium, startGateway, type TestGateway } from '@tidings/testing';
import { DEMO_CHANNEL } from './support.js';

const TIMEOUT = 10_000;
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** A demo page and the uncaught errors it raised. */
interface Visitor {
  readonly page: Page;
  readonly errors: string[];
}

/** One chat entry as the page shows it. */
interface Entry {
  readonly seq: number | undefined;
  readonly from: string;
  readonly text: string;
  readonly note: string;
  readonly pending: boolean;
}

const chat = (page: Page): Promise<Entry[]> =>
  page.$$eval('#log li.message', (items) =>
    items.map((li) => ({
      seq: li.dataset.seq === undefined ? undefined : Number(li.dataset.seq),
      from: li.querySelector('.from')?.textContent ?? '',
      text: li.querySelector('.text')?.textContent ?? '',
      note: li.querySelector('.note')?.textContent ?? '',
      pending: li.classList.contains('pending'),
    })),
  );
/** Delivered messages as `#seq text`, in page order. */
const delivered = async (page: Page): Promise<string[]> => (await chat(page)).filter((e) => !e.pending).map((e) => `#${e.seq} ${e.text}`);
const gaps = (page: Page): Promise<string[]> => page.$$eval('#log li.gap', (items) => items.map((li) => li.textContent ?? ''));
const events = (page: Page): Promise<string[]> => page.$$eval('#events li', (items) => items.map((li) => li.lastChild?.textContent ?? ''));
const attr = async (page: Page, selector: string, name: string): Promise<string> => (await page.getAttribute(selector, name)) ?? '';

const waitForState = (page: Page, state: string, timeout = TIMEOUT): Promise<unknown> =>
  page.waitForFunction((s) => document.getElementById('status')?.dataset.state === s, state, { timeout });
const waitForTransport = (page: Page, name: string): Promise<unknown> =>
  page.waitForFunction((n) => document.getElementById('transport')?.dataset.transport === n, name, { timeout: TIMEOUT });
/** Waits until a delivered (not pending) message reads `text`. */
const waitForMessage = (page: Page, text: string, timeout = TIMEOUT): Promise<unknown> =>
  page.waitForFunction(
    (t) => Array.from(document.querySelectorAll('#log li.message:not(.pending) .text')).some((e) => e.textContent === t),
    text,
    { timeout },
  );
const waitForEvent = (page: Page, part: string): Promise<unknown> =>
  page.waitForFunction((p) => Array.from(document.querySelectorAll('#events li')).some((li) => li.textContent?.includes(p) === true), part, { timeout: TIMEOUT });

/** Types into the form and sends it with the Send button. */
async function say(page: Page, message: string): Promise<void> {
  await page.fill('#text', message);
  await page.click('#send');
}

// Restarts wait out the SDK's reconnect backoff; a loaded machine makes page loads slow.
describe('demo page in headless Chromium', { timeout: 45_000 }, () => {
  let browser: Browser;
  const contexts: BrowserContext[] = [];
  const gateways: TestGateway[] = [];

  /** A demo gateway (on `port` when given), closed after the test. */
  const serve = async (port?: number, broker?: MemoryBroker): Promise<TestGateway> => {
    const gw = await startGateway({ demo: true, ...(port === undefined ? {} : { port }) }, broker === undefined ? {} : { broker });
    gateways.push(gw);
    return gw;
  };

  /** Opens the page; `prepare` runs on the page before it loads. */
  const visit = async (gw: TestGateway, query = '', prepare?: (page: Page) => Promise<void>): Promise<Visitor> => {
    const context = await browser.newContext();
    contexts.push(context);
    const page = await context.newPage();
    const visitor: Visitor = { page, errors: [] };
    page.on('pageerror', (err) => visitor.errors.push(err.message));
    await prepare?.(page);
    const res = await page.goto(`${gw.url}/${query}`);
    expect(res?.status()).toBe(200);
    return visitor;
  };

  beforeAll(async () => {
    // The page loads the SDK from /tidings-client.js; this builds it unless it is up to date.
    execFileSync(process.execPath, ['scripts/bundle-client.mjs'], { cwd: ROOT, stdio: 'inherit' });
    browser = await launchChromium();
  });
  afterEach(async () => {
    for (const c of contexts.splice(0)) await c.close();
    for (const gw of gateways.splice(0)) await gw.close();
  });
  afterAll(async () => {
    await browser?.close();
  });

  it('two visitors chat over WebSocket and see each other typing', async () => {
    const gw = await serve();
    const a = await visit(gw);
    const b = await visit(gw);
    for (const v of [a, b]) {
      await waitForState(v.page, 'live');
      await waitForTransport(v.page, 'websocket');
      expect(await v.page.textContent('#transport')).toBe('WebSocket');
      expect(await v.page.inputValue('#transport-select')).toBe('auto');
      expect(await v.page.title()).toBe('Tidings demo');
    }
    expect(gw.gateway.connections()).toMatchObject({ websocket: 2, sse: 0, poll: 0 });
    const nameA = (await a.page.textContent('#me')) ?? '';
    expect(nameA).toMatch(/^guest-/);

    // Typing shows up on the other page (ephemeral `typing` namespace), not on one's own.
    await a.page.fill('#text', 'hel');
    await b.page.waitForFunction((n) => document.getElementById('typing')?.textContent === `${n} is typing…`, nameA, { timeout: TIMEOUT });
    expect(await a.page.textContent('#typing')).toBe('');

    await say(a.page, 'hello from A');
    await waitForMessage(b.page, 'hello from A');
    await waitForMessage(a.page, 'hello from A');
    // A chat message from someone ends their typing indicator.
    await b.page.waitForFunction(() => document.getElementById('typing')?.textContent === '', undefined, { timeout: TIMEOUT });
    await say(b.page, 'hi A');
    await waitForMessage(a.page, 'hi A');
    await waitForMessage(b.page, 'hi A');

    for (const v of [a, b]) {
      expect(await delivered(v.page)).toEqual(['#1 hello from A', '#2 hi A']);
      expect((await chat(v.page)).map((e) => e.note)).toEqual(['', '']);
    }
    expect((await chat(b.page))[0]?.from).toBe(`${nameA}:`);
    expect(await a.page.inputValue('#text')).toBe('');
    expect(await events(a.page)).toContain('live over WebSocket');
    expect([...a.errors, ...b.errors]).toEqual([]);
  });

  it('a visitor on SSE and one on long polling chat; long polling is live at once; switching keeps the place', async () => {
    const gw = await serve();
    const a = await visit(gw, '?transport=sse');
    const b = await visit(gw, '?transport=poll');
    // The gateway holds a poll up to 25 s; the page is live once the first poll is answered, at once.
    const loaded = Date.now();
    await waitForState(b.page, 'live', 5000);
    expect(Date.now() - loaded).toBeLessThan(5000);
    await waitForState(a.page, 'live');
    await waitForTransport(a.page, 'sse');
    await waitForTransport(b.page, 'poll');
    expect(await a.page.textContent('#transport')).toBe('SSE');
    expect(await b.page.textContent('#transport')).toBe('long polling');
    expect(await b.page.inputValue('#transport-select')).toBe('poll');
    expect(gw.gateway.connections()).toMatchObject({ websocket: 0 });

    await say(a.page, 'sent over sse');
    await waitForMessage(b.page, 'sent over sse');
    await say(b.page, 'sent while polling');
    await waitForMessage(a.page, 'sent while polling');
    await gw.publish(DEMO_CHANNEL, { text: 'from the server' });
    await waitForMessage(a.page, 'from the server');
    await waitForMessage(b.page, 'from the server');

    // A picks WebSocket: a new connection resumes from the same position, nothing shown twice.
    await a.page.selectOption('#transport-select', 'websocket');
    await waitForTransport(a.page, 'websocket');
    expect(new URL(a.page.url()).searchParams.get('transport')).toBe('websocket');
    await gw.publish(DEMO_CHANNEL, { n: 7 }); // not chat text: shown as JSON
    await waitForMessage(a.page, '{"n":7}');
    await waitForMessage(b.page, '{"n":7}');

    const expected = ['#1 sent over sse', '#2 sent while polling', '#3 from the server', '#4 {"n":7}'];
    expect(await delivered(a.page)).toEqual(expected);
    expect(await delivered(b.page)).toEqual(expected);
    expect(await events(a.page)).toEqual(expect.arrayContaining(['live over SSE', 'switching to WebSocket only', 'live over WebSocket']));
    expect([...a.errors, ...b.errors]).toEqual([]);
  });

  it('shows recent history on load', async () => {
    const gw = await serve();
    for (const text of ['one', 'two', 'three']) await gw.publish(DEMO_CHANNEL, { from: 'server', text });
    const a = await visit(gw);
    await waitForMessage(a.page, 'three');
    expect(await delivered(a.page)).toEqual(['#1 one', '#2 two', '#3 three']);
    expect(await events(a.page)).toContain('history: loading the last 3 messages');
    expect(await gaps(a.page)).toEqual([]);

    // Live after history, in order.
    await gw.publish(DEMO_CHANNEL, { text: 'four' });
    await waitForMessage(a.page, 'four');
    expect(await delivered(a.page)).toEqual(['#1 one', '#2 two', '#3 three', '#4 four']);
    expect(a.errors).toEqual([]);
  });

  it('falls back to SSE where WebSocket is blocked, and upgrades once it works again', async () => {
    const gw = await serve();
    let blocked = true;
    const a = await visit(gw, '?upgradeAfter=1', (page) =>
      // Closed before it opens, as when a proxy refuses the upgrade.
      page.routeWebSocket(/\/ws(\?|$)/, (ws) => (blocked ? ws.close() : ws.connectToServer())),
    );
    await waitForTransport(a.page, 'sse');
    await waitForState(a.page, 'live');
    await waitForEvent(a.page, 'live over SSE: fell back, WebSocket does not work here');
    await gw.publish(DEMO_CHANNEL, { text: 'over the fallback' });
    await waitForMessage(a.page, 'over the fallback');

    blocked = false;
    await waitForTransport(a.page, 'websocket');
    await waitForState(a.page, 'live');
    await waitForEvent(a.page, 'live over WebSocket: upgraded');
    expect(await events(a.page)).toContain('WebSocket works again: upgrading');
    await gw.publish(DEMO_CHANNEL, { text: 'after the upgrade' });
    await waitForMessage(a.page, 'after the upgrade');
    expect(await delivered(a.page)).toEqual(['#1 over the fallback', '#2 after the upgrade']);
    expect(a.errors).toEqual([]);
  });

  it('queues text typed while the server is down and delivers it exactly once after the restart', async () => {
    const broker = new MemoryBroker({ maxChannels: 100, dedupMaxKeys: 100 });
    const gw = await serve(undefined, broker);
    const a = await visit(gw);
    const b = await visit(gw);
    await say(b.page, 'before the restart');
    for (const v of [a, b]) await waitForMessage(v.page, 'before the restart');

    await gw.close();
    const retrying = await a.page.waitForFunction(
      () => {
        const status = document.getElementById('status');
        return status?.dataset.state === 'retrying' && status.textContent;
      },
      undefined,
      { timeout: TIMEOUT },
    );
    expect(await retrying.jsonValue()).toMatch(/^reconnecting \(attempt \d+\): retrying in \d+\.\d s$/);
    expect(await attr(a.page, '#transport', 'data-transport')).toBe('');
    await say(a.page, 'typed while down');
    const [queued] = (await chat(a.page)).filter((e) => e.pending);
    expect(queued).toMatchObject({ text: 'typed while down', note: 'queued: sent when the connection is back', seq: undefined });

    // The same port and broker: the page reconnects, resumes and sends what it queued.
    const again = await serve(gw.port, broker);
    await waitForMessage(a.page, 'typed while down', 20_000);
    await waitForMessage(b.page, 'typed while down', 20_000);
    for (const v of [a, b]) expect(await delivered(v.page)).toEqual(['#1 before the restart', '#2 typed while down']);
    expect((await chat(a.page)).filter((e) => e.pending)).toEqual([]);

    // Published once: the next publication is #3, and nothing else arrives.
    const next = await again.publish(DEMO_CHANNEL, { text: 'after' });
    expect(next.position.seq).toBe(3);
    for (const v of [a, b]) {
      await waitForMessage(v.page, 'after');
      expect(await delivered(v.page)).toEqual(['#1 before the restart', '#2 typed while down', '#3 after']);
    }
    expect(await gaps(a.page)).toEqual([]);
    expect([...a.errors, ...b.errors]).toEqual([]);
  });

  it('says in words how many messages a restart without history lost', async () => {
    const gw = await serve(undefined, new MemoryBroker({ maxChannels: 100, dedupMaxKeys: 100 }));
    const a = await visit(gw, '?transport=websocket');
    await waitForState(a.page, 'live');
    await gw.publish(DEMO_CHANNEL, { text: 'before the restart' });
    await waitForMessage(a.page, 'before the restart');
    await gw.close();
    await waitForState(a.page, 'retrying');

    // A fresh broker (a new epoch) takes five publications before the page can reach it.
    const fresh = new MemoryBroker({ maxChannels: 100, dedupMaxKeys: 100 });
    const elsewhere = await serve(undefined, fresh);
    for (let i = 1; i <= 5; i++) await elsewhere.publish(DEMO_CHANNEL, { text: `lost ${i}` });
    await elsewhere.close();
    const again = await serve(gw.port, fresh);

    await a.page.waitForFunction(() => document.querySelector('#log li.gap') !== null, undefined, { timeout: 20_000 });
    expect(await gaps(a.page)).toEqual(['5 messages could not be recovered after a restart: the server lost its history.']);
    expect(await attr(a.page, '#log li.gap', 'data-reason')).toBe('epoch');
    await again.publish(DEMO_CHANNEL, { text: 'after the restart' });
    await waitForMessage(a.page, 'after the restart');
    expect(await delivered(a.page)).toEqual(['#1 before the restart', '#6 after the restart']);
    expect(await a.page.$$eval('#log li', (items) => items.map((li) => li.getAttribute('class') ?? ''))).toEqual(['message', 'gap', 'message']);
    expect(a.errors).toEqual([]);
  });
});
