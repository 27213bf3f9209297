/**
 * Liveness and load shedding: dead peers are cut by the heartbeat, a slow consumer is disconnected
 * without slowing anyone else and then resumes without loss, and shutdown tells clients to come back.
 */
import { describe, expect, it } from 'vitest';
import type { ClientOptions } from 'ws';
import { CloseCode, type Message, type ReplyFrame, type SubscribeResult } from '@tidings/protocol';
import { cleanupAfterEach, RawSseClient, RawWsClient, startGateway, TEST_API_KEY, type TestGateway } from '@tidings/testing';

const cleanup = cleanupAfterEach();
async function gateway(config: Parameters<typeof startGateway>[0]): Promise<TestGateway> {
  const gw = await startGateway(config);
  cleanup.push(() => gw.close());
  return gw;
}
async function connect(gw: TestGateway, options: ClientOptions = {}): Promise<RawWsClient> {
  const c = await RawWsClient.connect(gw.wsUrl, options);
  cleanup.push(() => c.terminate());
  return c;
}

describe('heartbeat', () => {
  it('terminates a peer that stops answering pings and keeps one that answers', async () => {
    const gw = await gateway({ pingInterval: 100 });
    const dead = await connect(gw, { autoPong: false });
    const alive = await connect(gw);
    await dead.until((c) => c.closed, 2000);
    expect(dead.closeCode).toBe(1006);
    await new Promise((r) => setTimeout(r, 300));
    expect(alive.closed).toBe(false);
    expect(gw.gateway.connections().websocket).toBe(1);
  });

  it('comes one interval after each connection opened, not in one sweep over all of them', async () => {
    // One sweep over 10,000 connections is 10,000 socket writes in one turn: a pause every delivery
    // due in it waits for. Each connection's heartbeat comes one interval after it opened instead.
    const gw = await gateway({ pingInterval: 1000 });
    const firstHeartbeat = (c: RawWsClient): Promise<number> =>
      new Promise((resolve) => c.ws.on('message', (data: Buffer) => data.toString('utf8').includes('"heartbeat"') && resolve(performance.now())));
    const a = await connect(gw);
    const aOpened = performance.now();
    const aBeat = firstHeartbeat(a);
    await new Promise((r) => setTimeout(r, 500));
    const b = await connect(gw);
    const bOpened = performance.now();
    const bBeat = firstHeartbeat(b);
    const [ta, tb] = await Promise.all([aBeat, bBeat]);
    // Each within a tick (40 ms here) and timer slack of one interval after it opened.
    expect(ta - aOpened).toBeGreaterThan(900);
    expect(tb - bOpened).toBeGreaterThan(900);
    expect(tb - ta).toBeGreaterThan(300);
  });

  it('spreads the heartbeats of connections that open together over half an interval', async () => {
    // Clients reconnecting after a restart or a blip open within a tick or two; their heartbeats would
    // otherwise come together every interval for as long as they stay.
    const gw = await gateway({ pingInterval: 1000 });
    const clients = await Promise.all(Array.from({ length: 6 }, () => connect(gw)));
    const opened = performance.now();
    const beats = await Promise.all(
      clients.map(
        (c) => new Promise<number>((resolve) => c.ws.on('message', (data: Buffer) => data.toString('utf8').includes('"heartbeat"') && resolve(performance.now()))),
      ),
    );
    // The first within half an interval to one interval (a tick of 40 ms, and timer slack), six ticks apart in all.
    for (const at of beats) expect(at - opened).toBeGreaterThan(400);
    expect(Math.max(...beats) - Math.min(...beats)).toBeGreaterThan(100);
  });
});

describe('slow consumer', () => {
  it('is disconnected while a healthy subscriber gets everything, then resumes without loss', async () => {
    const gw = await gateway({ maxBufferedBytes: 64 * 1024, namespaces: { bulk: { historySize: 10_000 } } });
    const channel = 'bulk:feed';
    const healthy = await connect(gw);
    const slow = await connect(gw);
    for (const c of [healthy, slow]) expect((await c.request({ type: 'subscribe', channel })).type).toBe('reply');
    slow.ws.pause();
    const total = 4000;
    const pad = 'x'.repeat(2000);
    for (let i = 0; i < total; i += 400) {
      const batch = Array.from({ length: 400 }, (_, j) => ({ channel, data: { i: i + j + 1, pad } }));
      const res = await fetch(`${gw.url}/api/publish`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${TEST_API_KEY}` },
        body: JSON.stringify(batch),
      });
      expect(res.status).toBe(200);
      // A healthy reader keeps up between batches (one batch, 800 KB, fits the socket buffers and the
      // bound counts what a turn starts with), however slowly the machine lets it read; the paused one falls
      // further behind with every batch.
      await healthy.until((c) => c.ofType('message').length === i + 400, 10_000);
    }
    await healthy.until((c) => c.ofType('message').length === total, 10_000);
    expect(healthy.ofType('message').map((f) => f.message.position.seq)).toEqual(Array.from({ length: total }, (_, i) => i + 1));
    // Wait until the server has let go of the slow client, then let it read what it had.
    await new Promise<void>((resolve) => {
      const check = (): void => {
        if (gw.gateway.connections().websocket === 1) resolve();
        else setTimeout(check, 20);
      };
      check();
    });
    slow.ws.resume();
    await slow.until((c) => c.closed, 5000);
    const got = slow.ofType('message').map((f) => f.message);
    expect(got.length).toBeLessThan(total);
    // Everything that arrived is a prefix, in order.
    expect(got.map((m) => m.position.seq)).toEqual(Array.from({ length: got.length }, (_, i) => i + 1));
    const last = got.at(-1)?.position ?? ((slow.ofType('reply')[0] as ReplyFrame).result as SubscribeResult).position;
    const again = await connect(gw);
    await again.request({ type: 'subscribe', channel, since: last });
    await again.until((c) => c.ofType('message').length === total - got.length, 10_000);
    const rest: Message[] = again.ofType('message').map((f) => f.message);
    expect(rest.map((m) => m.position.seq)).toEqual(Array.from({ length: total - got.length }, (_, i) => got.length + i + 1));
    expect(again.ofType('gap')).toEqual([]);
  });
});

describe('graceful shutdown', () => {
  it('closes WebSockets with the restart code, ends SSE streams and answers held polls', async () => {
    const gw = await startGateway({});
    const ws = await RawWsClient.connect(gw.wsUrl);
    cleanup.push(() => ws.terminate());
    const sse = await RawSseClient.open(`${gw.url}/sse?channel=bye`);
    cleanup.push(() => sse.close());
    const poll = fetch(`${gw.url}/poll?channel=bye`);
    await new Promise((r) => setTimeout(r, 100));
    await gw.close();
    await ws.until((c) => c.closed);
    expect(ws.closeCode).toBe(CloseCode.restart.code);
    await sse.until((c) => c.ended);
    expect(sse.named('tidings:error').map((e) => JSON.parse(e.data) as unknown)).toEqual([{ code: 'restart', reason: 'server shutting down' }]);
    const res = await poll;
    expect(res.status).toBe(200);
    expect(((await res.json()) as { messages: unknown[] }).messages).toEqual([]);
  });
});
