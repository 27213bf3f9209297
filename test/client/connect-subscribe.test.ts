/**
 * The SDK subscribes in the WebSocket connect request (`/ws?channel=..&cursor=..`): no `subscribe`
 * frame and no round trip after `welcome` for the channels it already wants, a reconnect carries
 * the positions it has, so it gets exactly what it missed, and what does not fit the request (or
 * comes later) is subscribed with frames as before.
 */
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { Client, WebSocketConstructor } from '@tidings/client';
import { MAX_CURSOR_CHANNELS, parseCursor } from '@tidings/protocol';
import { cleanupAfterEach, startGateway, startProxy, testClient, until, type TestGateway } from '@tidings/testing';

const cleanup = cleanupAfterEach();

/** A `ws` WebSocket that records the URLs it opens and the frames the client sends. */
function recorder(): { Ctor: WebSocketConstructor; urls: URL[]; subscribes: () => string[] } {
  const urls: URL[] = [];
  const sent: string[] = [];
  class Recording extends WebSocket {
    constructor(url: string) {
      super(url);
      urls.push(new URL(url));
    }
    override send(data: string): void {
      sent.push(data);
      super.send(data);
    }
  }
  const subscribes = (): string[] =>
    sent.map((s) => JSON.parse(s) as { type: string; channel?: string }).filter((f) => f.type === 'subscribe').map((f) => f.channel ?? '');
  return { Ctor: Recording as unknown as WebSocketConstructor, urls, subscribes };
}

async function gateway(): Promise<TestGateway> {
  const gw = await startGateway({ pingInterval: 200, namespaces: { chat: { historySize: 100 } } });
  cleanup.push(() => gw.close());
  return gw;
}

function client(url: string, Ctor: WebSocketConstructor): Client {
  const c = testClient(url, 'websocket', { WebSocket: Ctor });
  cleanup.push(() => c.close());
  return c;
}

describe('the SDK subscribes in the connect request', () => {
  it('sends no subscribe frame for the channels it wants at connect, and resumes from its positions after a drop', async () => {
    const gw = await gateway();
    const proxy = await startProxy(gw.port);
    cleanup.push(() => proxy.close());
    const rec = recorder();
    const c = client(proxy.url, rec.Ctor);
    const a = c.subscribe('chat:a');
    const b = c.subscribe('news');
    const got: Record<string, number[]> = { 'chat:a': [], news: [] };
    a.on('message', (m) => got['chat:a']?.push(m.data as number));
    b.on('message', (m) => got.news?.push(m.data as number));
    await until(() => a.position !== undefined && b.position !== undefined, 8000, 'both subscribed');

    expect(rec.urls[0]?.searchParams.getAll('channel')).toEqual(['chat:a', 'news']);
    expect(rec.urls[0]?.searchParams.has('cursor')).toBe(false);
    expect(rec.subscribes()).toEqual([]);

    for (let n = 1; n <= 3; n++) await gw.publish('chat:a', n);
    await until(() => got['chat:a']?.length === 3, 5000, 'live messages');

    proxy.cut();
    // Published while the client is away: it must get exactly these on its return.
    for (let n = 4; n <= 6; n++) await gw.publish('chat:a', n);
    await until(() => got['chat:a']?.length === 6, 8000, 'missed messages after the reconnect');
    await gw.publish('chat:a', 7);
    await until(() => got['chat:a']?.length === 7, 5000, 'live again');

    expect(got['chat:a']).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(rec.urls.length).toBeGreaterThanOrEqual(2);
    const again = rec.urls.at(-1);
    expect(again?.searchParams.getAll('channel')).toEqual(['chat:a', 'news']);
    // The reconnect names where each channel was: chat:a after its third message, news at its start.
    const cursor = parseCursor(again?.searchParams.get('cursor') ?? '');
    expect(cursor.get('chat:a')?.seq).toBe(3);
    expect(cursor.has('news')).toBe(true);
    expect(rec.subscribes()).toEqual([]);

    // A channel wanted later is subscribed with a frame, as before.
    const late = c.subscribe('chat:late');
    await until(() => late.position !== undefined, 5000, 'late subscription');
    expect(rec.subscribes()).toEqual(['chat:late']);
  });

  it(`puts at most ${MAX_CURSOR_CHANNELS} channels in the request and subscribes the rest with frames`, async () => {
    const gw = await gateway();
    const rec = recorder();
    const c = client(gw.url, rec.Ctor);
    const names = Array.from({ length: MAX_CURSOR_CHANNELS + 6 }, (_, i) => `chat:many-${i}`);
    const subs = names.map((n) => c.subscribe(n));
    await until(() => subs.every((s) => s.position !== undefined), 8000, 'every channel subscribed');
    expect(rec.urls[0]?.searchParams.getAll('channel')).toEqual(names.slice(0, MAX_CURSOR_CHANNELS));
    expect(rec.subscribes()).toEqual(names.slice(MAX_CURSOR_CHANNELS));
    const seen: string[] = [];
    c.on('message', (m) => seen.push(m.channel));
    await gw.publish(names.at(-1) ?? '', 'last');
    await gw.publish(names[0] ?? '', 'first');
    await until(() => seen.length === 2, 5000, 'both ends delivered');
    expect(seen.sort()).toEqual([names[0], names.at(-1)].sort());
  });

  it('reports a refused channel of the connect request as that subscription\'s error, and keeps the others', async () => {
    const gw = await gateway();
    const rec = recorder();
    const c = client(gw.url, rec.Ctor);
    const bad = c.subscribe('nope:x');
    const good = c.subscribe('news');
    const errors: string[] = [];
    bad.on('error', (e) => errors.push(e.code));
    await until(() => errors.length > 0 && good.position !== undefined, 8000, 'refusal and subscription');
    expect(rec.urls[0]?.searchParams.getAll('channel')).toEqual(['nope:x', 'news']);
    expect(errors[0]).toBe('unknown_namespace');
    const seen: unknown[] = [];
    good.on('message', (m) => seen.push(m.data));
    await gw.publish('news', 1);
    await until(() => seen.length === 1, 5000, 'delivery on the other channel');
    expect(c.state.status).toBe('connected');
  });
});
