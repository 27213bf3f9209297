/**
 * The `/admin` dashboard in real headless Chromium: a gateway with WebSocket and SSE subscribers, a
 * steady stream of publications through the API and an SSE resume; the page logs in, and its
 * charts and tables show that traffic (connections by transport, messages per second, latency, the
 * busiest channel with its subscribers and presence, the node with its broker up). The publish form
 * reaches a subscriber and shows the acked position, or the coded refusal. A screenshot is taken and
 * the chart canvases are checked for drawn series.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium, RawSseClient, RawWsClient, startGateway, TEST_API_KEY, type TestGateway } from '@tidings/testing';

const TIMEOUT = 15_000;
const BUSY = 'chat:busy';

/** Pixels of each chart's canvas close to one of its series' stroke colours, per series. */
function strokePixels(page: Page): Promise<Record<string, number[]>> {
  return page.evaluate(() => {
    const charts: Record<string, string[]> = {
      'chart-connections': ['#2563eb', '#16a34a'],
      'chart-messages': ['#7c3aed', '#db2777'],
      'chart-latency': ['#0891b2', '#dc2626'],
      'chart-churn': ['#9333ea', '#ea580c'],
    };
    const rgb = (hex: string): number[] => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
    const out: Record<string, number[]> = {};
    for (const [id, colours] of Object.entries(charts)) {
      const canvas = document.querySelector<HTMLCanvasElement>(`#${id} canvas`);
      const ctx = canvas?.getContext('2d');
      if (canvas === null || ctx === null || ctx === undefined) {
        out[id] = [];
        continue;
      }
      const { data } = ctx.getImageData(0, 0, canvas.width, canvas.height);
      out[id] = colours.map((hex) => {
        const [r, g, b] = rgb(hex) as [number, number, number];
        let n = 0;
        for (let i = 0; i < data.length; i += 4) {
          if (Math.abs((data[i] as number) - r) + Math.abs((data[i + 1] as number) - g) + Math.abs((data[i + 2] as number) - b) < 40) n++;
        }
        return n;
      });
    }
    return out;
  });
}

const text = async (page: Page, selector: string): Promise<string> => ((await page.textContent(selector)) ?? '').trim();

describe('/admin dashboard in headless Chromium', { timeout: 60_000 }, () => {
  let browser: Browser;
  let gw: TestGateway;
  const dir = mkdtempSync(join(tmpdir(), 'tidings-admin-'));

  beforeAll(async () => {
    browser = await launchChromium();
    gw = await startGateway({ namespaces: { chat: { presence: true } } });
  });
  afterAll(async () => {
    await browser?.close();
    await gw?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('logs in, shows the traffic in charts and tables, publishes from the form, and draws its charts', async () => {
    // Subscribers: four over WebSocket (three on the busy channel), two over SSE on the busy channel.
    const ws = await Promise.all([BUSY, BUSY, BUSY, 'chat:quiet'].map(async (channel) => {
      const c = await RawWsClient.connect(gw.wsUrl);
      await c.request({ type: 'subscribe', channel });
      return c;
    }));
    const sse = await Promise.all([0, 1].map(() => RawSseClient.open(`${gw.url}/sse?channel=${BUSY}`)));
    const closers = [...ws.map((c) => () => c.terminate()), () => sse.forEach((s) => s.close())];

    // A steady stream of publications (bounded: at most 20 s of them).
    let publishing = true;
    const publisher = (async () => {
      for (let i = 0; publishing && i < 400; i++) {
        await gw.publish(BUSY, { n: i });
        if (i % 5 === 0) await gw.publish('chat:quiet', { n: i });
        await new Promise((r) => setTimeout(r, 50));
      }
    })();

    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      const errors: string[] = [];
      page.on('pageerror', (err) => errors.push(err.message));
      expect((await page.goto(`${gw.url}/admin`))?.status()).toBe(200);
      expect(await page.title()).toBe('Tidings admin');

      // Not logged in: the login form, no data. A wrong key is refused in words.
      await page.waitForSelector('#login:not([hidden])', { timeout: TIMEOUT });
      expect(await page.isHidden('#dashboard')).toBe(true);
      await page.fill('#login-key', 'not-the-key');
      await page.click('#login-submit');
      await page.waitForFunction(() => document.getElementById('login-error')?.textContent !== '', undefined, { timeout: TIMEOUT });
      expect(await text(page, '#login-error')).toBe('That is neither the API key nor the admin token.');
      await page.fill('#login-key', TEST_API_KEY);
      await page.click('#login-submit');
      await page.waitForSelector('#feed-status[data-state=live]', { timeout: TIMEOUT });
      expect(await page.isHidden('#login')).toBe(true);

      // One SSE subscriber drops and resumes from its last event id: a reconnect.
      await sse[0]?.until((s) => s.events.filter((e) => e.event === 'message').length >= 3);
      sse[0]?.close();
      const resumed = await RawSseClient.open(`${gw.url}/sse?channel=${BUSY}`, sse[0]?.lastEventId);
      closers.push(() => resumed.close());

      // The charts fill as ticks arrive, and the numbers show the traffic.
      await page.waitForFunction(() => Number(document.getElementById('chart-messages')?.dataset.points) >= 5, undefined, { timeout: TIMEOUT });
      await page.waitForFunction(() => Number(document.getElementById('rate-out')?.textContent) > 0 && Number(document.getElementById('rate-in')?.textContent) > 0, undefined, { timeout: TIMEOUT });
      await page.waitForFunction(() => document.getElementById('latency-p99')?.textContent !== '–', undefined, { timeout: TIMEOUT });
      expect(await text(page, '#conn-websocket')).toBe('4');
      expect(await text(page, '#conn-sse')).toBe('2');
      expect(await text(page, '#conn-poll')).toBe('0');
      expect(await text(page, '#nodes-live')).toBe('1');
      expect(await text(page, '#serving-node')).toBe(gw.gateway.nodeId);

      // The busiest channel with its subscribers and (cluster-wide, read from the broker) presence.
      await page.waitForFunction((ch) => document.querySelector(`#channels tbody tr[data-channel="${ch}"] td.presence`)?.textContent === '5', BUSY, { timeout: TIMEOUT });
      const rows = await page.$$eval('#channels tbody tr', (trs) => trs.map((tr) => Array.from(tr.querySelectorAll('td'), (td) => td.textContent)));
      expect(rows).toEqual([
        [BUSY, '5', '5'],
        ['chat:quiet', '1', '1'],
      ]);
      const node = await page.$eval(`#nodes tbody tr[data-node="${gw.gateway.nodeId}"]`, (tr) => ({
        state: tr.getAttribute('data-state'),
        broker: tr.querySelector('td.broker')?.textContent,
        connections: tr.querySelector('td.connections')?.textContent,
      }));
      expect(node).toEqual({ state: 'live', broker: 'up', connections: '4 / 2 / 0' });
      // The resume was counted as a reconnect and drawn on the churn chart.
      await page.waitForFunction(() => (CHARTS as { churn: { data: number[][] } }).churn.data[1]?.some((v) => v > 0) === true, undefined, { timeout: TIMEOUT });

      // The publish form: the acked position, and a subscriber got it.
      await page.fill('#publish-channel', BUSY);
      await page.fill('#publish-type', 'admin.note');
      await page.fill('#publish-data', '{"text":"from the dashboard"}');
      await page.click('#publish-submit');
      await page.waitForSelector('#publish-result[data-outcome=ok]', { timeout: TIMEOUT });
      const seq = Number(await page.getAttribute('#publish-result', 'data-seq'));
      expect(seq).toBeGreaterThan(0);
      expect(await text(page, '#publish-result')).toMatch(new RegExp(`^published to ${BUSY} at seq ${seq} \\(epoch \\w+\\)$`));
      const first = ws[0] as RawWsClient;
      await first.until((c) => c.ofType('message').some((m) => m.message.type === 'admin.note'));
      expect(first.ofType('message').find((m) => m.message.type === 'admin.note')?.message).toMatchObject({ channel: BUSY, data: { text: 'from the dashboard' }, position: { seq } });
      // A refusal is shown with its code.
      await page.fill('#publish-channel', 'nope:x');
      await page.click('#publish-submit');
      await page.waitForSelector('#publish-result[data-outcome=error]', { timeout: TIMEOUT });
      expect(await page.getAttribute('#publish-result', 'data-code')).toBe('unknown_namespace');

      // A screenshot, and every chart has drawn its series (pixels of the series' colours).
      const shot = join(dir, 'admin.png');
      await page.screenshot({ path: shot, fullPage: true });
      expect(statSync(shot).size).toBeGreaterThan(40_000);
      const pixels = await strokePixels(page);
      for (const [id, counts] of Object.entries(pixels)) {
        expect(counts, id).toHaveLength(2);
        for (const n of counts) expect(n, id).toBeGreaterThan(20);
      }
      expect(errors).toEqual([]);
    } finally {
      publishing = false;
      await publisher;
      for (const close of closers) close();
    }
  });
});

declare const CHARTS: unknown;
