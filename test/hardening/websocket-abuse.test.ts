/**
 * Findings 4, 6 and 7: everything written to a WebSocket counts against its bound, whoever caused it
 * (replies, errors, pongs); bad frames are counted over time, not forgiven by the next good one; input
 * that arrives after a protocol close does nothing; and a shed slow consumer is told why (4001 on
 * WebSocket, `tidings:error` on SSE) instead of seeing a bare TCP close.
 */
import { describe, expect, it } from 'vitest';
import { CloseCode } from '@tidings/protocol';
import { cleanupAfterEach, clientFrame, Opcode, RawSseClient, rawWebSocket, RawWsClient, startGateway, TEST_API_KEY, until, type TestGateway } from '@tidings/testing';

const cleanup = cleanupAfterEach();
async function gateway(config: Parameters<typeof startGateway>[0]): Promise<TestGateway> {
  const gw = await startGateway(config);
  cleanup.push(() => gw.close());
  return gw;
}
async function connect(gw: TestGateway): Promise<RawWsClient> {
  const c = await RawWsClient.connect(gw.wsUrl);
  cleanup.push(() => c.terminate());
  return c;
}
async function hubChannels(gw: TestGateway): Promise<number> {
  return ((await (await fetch(`${gw.url}/healthz`)).json()) as { channels: number }).channels;
}
/** Sends many text frames in one TCP write. */
function sendInOneWrite(c: RawWsClient, texts: string[]): void {
  const socket = (c.ws as unknown as { _socket: { cork(): void; uncork(): void } })._socket;
  socket.cork();
  for (const t of texts) c.ws.send(t);
  socket.uncork();
}
async function publishBatch(gw: TestGateway, batch: unknown[]): Promise<void> {
  const res = await fetch(`${gw.url}/api/publish`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${TEST_API_KEY}` },
    body: JSON.stringify(batch),
  });
  expect(res.status).toBe(200);
}

describe('a client that sends but never reads', () => {
  const LIMIT = 64 * 1024;

  it.each([
    ['application pings', (i: number) => JSON.stringify({ type: 'ping', id: `p${i}-${'x'.repeat(50)}` })],
    ['requests that fail', (i: number) => JSON.stringify({ type: 'unsubscribe', id: i, channel: 'never-subscribed' })],
  ])('is closed once what it caused to be written passes the bound (%s)', async (_what, frame) => {
    const gw = await gateway({ maxBufferedBytes: LIMIT, maxBadFrames: 1_000_000 });
    const c = await connect(gw);
    c.ws.pause();
    let sent = 0;
    // Up to 256x the bound (the kernel buffers of both ends hold a few MiB first): a server that counts what it writes closes the connection long before.
    while (sent < 256 * LIMIT && gw.gateway.connections().websocket > 0) {
      const batch = Array.from({ length: 200 }, (_, i) => frame(i));
      sendInOneWrite(c, batch);
      sent += batch.reduce((n, t) => n + t.length, 0);
      await new Promise((r) => setTimeout(r, 1));
    }
    await until(() => gw.gateway.connections().websocket === 0, 20_000, 'the server closed the connection');
  }, 40_000);

  it('is closed once WebSocket pings pile up pongs it never reads', async () => {
    const gw = await gateway({ maxBufferedBytes: LIMIT });
    const peer = await rawWebSocket(gw.port);
    cleanup.push(() => peer.destroy());
    peer.stopReading();
    const ping = clientFrame(Opcode.ping, Buffer.alloc(125, 1));
    // 64x the bound in pongs owed.
    for (let i = 0; i < (64 * LIMIT) / 125 && gw.gateway.connections().websocket > 0; i += 100) {
      peer.send(Buffer.concat(Array.from({ length: 100 }, () => ping)));
      await new Promise((r) => setTimeout(r, 1));
    }
    await until(() => gw.gateway.connections().websocket === 0, 3000, 'the server closed the connection');
  });
});

describe('bad frames', () => {
  it('are counted over time: a good frame between bad ones does not reset the count', async () => {
    const gw = await gateway({ maxBadFrames: 10 });
    const c = await connect(gw);
    for (let i = 0; i < 40 && !c.closed; i++) {
      c.sendText('{not json');
      c.send({ type: 'ping', id: i });
      await new Promise((r) => setTimeout(r, 2));
    }
    await c.until((x) => x.closed, 3000);
    expect(c.closeCode).toBe(CloseCode.bad_protocol.code);
  });

  it('after a protocol close, frames that arrived in the same write subscribe nothing', async () => {
    const gw = await gateway({ maxBadFrames: 20, namespaces: { x: { historySize: 10 } } });
    const c = await connect(gw);
    const bad = Array.from({ length: 20 }, () => '{"type":"nope"}');
    const subs = Array.from({ length: 128 }, (_, i) => JSON.stringify({ type: 'subscribe', id: i, channel: `x:after-close-${i}` }));
    sendInOneWrite(c, [...bad, ...subs]);
    await c.until((x) => x.closed, 3000);
    expect(c.closeCode).toBe(CloseCode.bad_protocol.code);
    expect(c.ofType('reply')).toEqual([]);
    await until(() => gw.gateway.connections().websocket === 0, 3000, 'connection released');
    expect(await hubChannels(gw)).toBe(0);
  });
});

describe('a shed slow consumer is told why', () => {
  it('over WebSocket it gets close code 4001, not a bare TCP close', async () => {
    const gw = await gateway({ maxBufferedBytes: 64 * 1024, namespaces: { bulk: { historySize: 10_000 } } });
    const slow = await connect(gw);
    expect((await slow.request({ type: 'subscribe', channel: 'bulk:a' })).type).toBe('reply');
    slow.ws.pause();
    const pad = 'x'.repeat(2000);
    for (let i = 0; i < 20 && gw.gateway.connections().websocket > 0; i++) {
      await publishBatch(gw, Array.from({ length: 200 }, (_, j) => ({ channel: 'bulk:a', data: { i: i * 200 + j, pad } })));
    }
    await until(() => gw.gateway.connections().websocket === 0 || slow.closed, 5000, 'shed');
    // A client that reads slowly comes back to its socket a while later.
    await new Promise((r) => setTimeout(r, 1500));
    slow.ws.resume();
    await slow.until((x) => x.closed, 10_000);
    expect(slow.closeCode).toBe(CloseCode.slow_consumer.code);
  });

  it('over SSE it gets a tidings:error event with code slow_consumer before the stream ends', async () => {
    const gw = await gateway({ maxBufferedBytes: 64 * 1024, namespaces: { bulk: { historySize: 10_000 } } });
    const slow = await RawSseClient.open(`${gw.url}/sse?channel=bulk:b`);
    cleanup.push(() => slow.close());
    await slow.until((x) => x.named('tidings:welcome').length === 1);
    slow.pause();
    const pad = 'x'.repeat(2000);
    for (let i = 0; i < 20 && gw.gateway.connections().sse > 0; i++) {
      await publishBatch(gw, Array.from({ length: 200 }, (_, j) => ({ channel: 'bulk:b', data: { i: i * 200 + j, pad } })));
    }
    await until(() => gw.gateway.connections().sse === 0, 5000, 'shed');
    await new Promise((r) => setTimeout(r, 1500));
    slow.resume();
    await slow.until((x) => x.ended, 10_000);
    expect(slow.named('tidings:error').map((e) => (JSON.parse(e.data) as { code: string }).code)).toEqual(['slow_consumer']);
  });
});
