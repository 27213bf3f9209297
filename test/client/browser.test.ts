/**
 * The client bundle in a real browser (Debian's Chromium): it is built for the browser with no Node
 * imports, subscribes from a page, and across a server restart with publishing going on ends with
 * exactly the published sequence, on WebSocket and on SSE.
 */
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type * as TidingsClient from '@tidings/client';
import { MemoryBroker } from '@tidings/server';
import { launchChromium, publishCommand, startGateway, type TestGateway } from '@tidings/testing';

let bundle = '';
let browser: Browser;
beforeAll(async () => {
  const result = await build({
    entryPoints: [fileURLToPath(new URL('../../packages/client/src/index.ts', import.meta.url))],
    bundle: true,
    format: 'iife',
    globalName: 'Tidings',
    platform: 'browser',
    target: 'es2022',
    write: false,
    logLevel: 'silent',
  });
  bundle = result.outputFiles[0]?.text ?? '';
  browser = await launchChromium();
});
afterAll(() => browser?.close());

interface PageState {
  got: number[];
  gaps: number;
  transport: string | undefined;
}

describe('client bundle', () => {
  it('is self-contained and uses no Node built-ins', () => {
    expect(bundle.length).toBeGreaterThan(1000);
    expect(bundle).not.toMatch(/["']node:/);
    expect(bundle).not.toMatch(/\brequire\(/);
  });

  it.each(['websocket', 'sse'])('survives a server restart in the browser over %s with nothing lost or repeated', async (kind) => {
    const broker = new MemoryBroker({ maxChannels: 100, dedupMaxKeys: 10 });
    const config = { sseHeartbeat: 500, pingInterval: 500 };
    let gw: TestGateway = await startGateway(config, { broker });
    const port = gw.port;
    const context = await browser.newContext();
    try {
      const page: Page = await context.newPage();
      await page.goto(`${gw.url}/healthz`);
      await page.addScriptTag({ content: bundle });
      await page.evaluate(async (transport) => {
        const { createClient } = (window as unknown as { Tidings: typeof TidingsClient }).Tidings;
        const state: PageState = { got: [], gaps: 0, transport: undefined };
        (window as unknown as { state: PageState }).state = state;
        const client = createClient(location.origin, { transports: [transport as 'websocket' | 'sse'], storage: null, backoff: { min: 50, max: 300 } });
        client.on('state', (s) => {
          if (s.to.status === 'connected') state.transport = s.to.transport;
        });
        const sub = client.subscribe('browser');
        sub.on('message', (m) => state.got.push(m.data as number));
        sub.on('gap', () => (state.gaps += 1));
        await new Promise<void>((resolve) => {
          const check = (): void => (sub.position === undefined ? void setTimeout(check, 10) : resolve());
          check();
        });
      }, kind);
      const state = (): Promise<PageState> => page.evaluate(() => (window as unknown as { state: PageState }).state);
      const until = async (check: (s: PageState) => boolean, what: string): Promise<PageState> => {
        const deadline = Date.now() + 10_000;
        for (;;) {
          const s = await state();
          if (check(s)) return s;
          if (Date.now() > deadline) throw new Error(`${what}: ${JSON.stringify(s)}`);
          await new Promise((r) => setTimeout(r, 25));
        }
      };
      for (let i = 1; i <= 10; i++) await gw.publish('browser', i);
      await until((s) => s.got.length === 10, 'first ten');
      await gw.close();
      for (let i = 11; i <= 20; i++) {
        await broker.publish(publishCommand('browser', String(i)));
      }
      gw = await startGateway({ ...config, port }, { broker });
      for (let i = 21; i <= 30; i++) await gw.publish('browser', i);
      const s = await until((x) => x.got.length >= 30, 'all thirty after the restart');
      expect(s.got).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
      expect(s.gaps).toBe(0);
      expect(s.transport).toBe(kind);
    } finally {
      await context.close();
      await gw.close();
    }
  });
});
