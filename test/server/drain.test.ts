/**
 * Graceful drain: on close (SIGTERM in the CLI) `/readyz` answers 503 at once while the listener stays
 * open, new connections are refused, the clients are told to reconnect elsewhere (4000 /
 * `tidings:error restart`) in waves spread over `drainWindow` rather than all at once, a publish in
 * flight finishes, and the whole close ends within `shutdownTimeout`.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { attemptSubscribe, postOnce, RawSseClient, RawWsClient, startGateway } from '@tidings/testing';

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

describe('graceful drain', () => {
  it('fails /readyz at once, refuses new connections, closes clients in waves over the window, finishes in time', async () => {
    const gw = await startGateway({ drainWindow: 1500, shutdownTimeout: 5000 });
    const clients = await Promise.all(Array.from({ length: 40 }, () => RawWsClient.connect(gw.wsUrl)));
    const streams = await Promise.all(Array.from({ length: 10 }, () => RawSseClient.open(`${gw.url}/sse?channel=news`)));
    for (const c of clients) cleanup.push(() => c.terminate());
    for (const s of streams) cleanup.push(() => s.close());
    const closedAt = new Map<RawWsClient, number>();
    for (const c of clients) c.ws.once('close', () => closedAt.set(c, Date.now()));

    const started = Date.now();
    const closing = gw.gateway.close();
    const ready = await fetch(`${gw.url}/readyz`);
    expect(ready.status).toBe(503);
    expect(await ready.json()).toMatchObject({ ready: false, reason: 'draining' });
    // A new SSE stream is refused as a stream (a plain EventSource gives up on an HTTP error): come back elsewhere now.
    expect(await attemptSubscribe(gw.url, 'sse', 'news')).toEqual({ result: 'error', code: 'restart' });
    expect(await attemptSubscribe(gw.url, 'poll', 'news')).toEqual({ result: 'http', status: 503, code: 'unavailable' });
    // A new WebSocket is told as open ones are, with a close a browser can read (4000: come back now,
    // elsewhere), not an HTTP 503 it cannot, which a client would take for a blocked WebSocket.
    expect(await attemptSubscribe(gw.url, 'websocket', 'news')).toMatchObject({ result: 'close', code: 4000 });
    // A publish in flight is answered.
    const published = await postOnce(`${gw.url}/api/publish`, JSON.stringify({ channel: 'news', data: 'last' }));
    expect(published.status).toBe(200);

    await closing;
    const took = Date.now() - started;
    expect(took).toBeLessThan(5000);
    expect(clients.every((c) => c.closeCode === 4000)).toBe(true);
    const times = [...closedAt.values()].sort((a, b) => a - b);
    // Spread over the window: the last wave closes well after the first. Ten waves 150 ms apart, the
    // WebSockets (opened first) in the first eight: 1,050 ms from first to last as sent, and at least
    // half the window as this process sees them (a busy machine hands it the first closes late).
    expect((times[times.length - 1] ?? 0) - (times[0] ?? 0)).toBeGreaterThan(750);
    // Not all at once: no 100 ms slice holds more than a third of them.
    for (const t of times) expect(times.filter((u) => u >= t && u < t + 100).length).toBeLessThanOrEqual(Math.ceil(clients.length / 3));
    for (const s of streams) {
      await s.until((x) => x.ended, 3000);
      expect(s.events.find((e) => e.event === 'tidings:error')?.data).toContain('"code":"restart"');
    }
  }, 15_000);

  it('with drainDelay, fails /readyz at once but keeps serving (new connections too) until the delay is over, then drains', async () => {
    const gw = await startGateway({ drainDelay: 800, drainWindow: 0, shutdownTimeout: 3000 });
    const early = await RawWsClient.connect(gw.wsUrl);
    cleanup.push(() => early.terminate());
    const started = Date.now();
    const closing = gw.gateway.close();
    const ready = await fetch(`${gw.url}/readyz`);
    expect(ready.status).toBe(503);
    expect(await ready.json()).toMatchObject({ ready: false, reason: 'draining' });
    // Still served during the delay: the load balancer has not noticed yet, so its clients are taken.
    expect(await attemptSubscribe(gw.url, 'websocket', 'news')).toMatchObject({ result: 'subscribed' });
    expect(await attemptSubscribe(gw.url, 'sse', 'news')).toMatchObject({ result: 'subscribed' });
    expect(early.closeCode).toBeUndefined();
    expect((await postOnce(`${gw.url}/api/publish`, JSON.stringify({ channel: 'news', data: 'during the delay' }))).status).toBe(200);
    await closing;
    const took = Date.now() - started;
    // The drain began only after the delay, and the client was told to come back (4000).
    expect(took).toBeGreaterThanOrEqual(800);
    expect(took).toBeLessThan(3800);
    expect(early.closeCode).toBe(4000);
  }, 15_000);
});
