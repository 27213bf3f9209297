/**
 * A resume's replay is paged to the reader: what a connection is owed from history is handed to its
 * socket as the socket drains, so the bytes waiting for one connection stay near `maxBufferedBytes`
 * however much it resumes at once, and a client that reads gets all of it, in order, with live
 * publications after it. Over real sockets, with a client that resumes 8 channels of 0.8 MB each and
 * does not read (WebSocket, SSE), and with clients that do.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatCursor, type Position } from '@tidings/protocol';
import { rawWebSocket, RawSseClient, RawWsClient, startGateway, until, type TestGateway } from '@tidings/testing';

const CHANNELS = Array.from({ length: 8 }, (_, i) => `h:${i}`);
const PER_CHANNEL = 50;
const BODY = 'x'.repeat(16 * 1024);
const BOUND = 256 * 1024;

let gw: TestGateway;
/** Every channel at seq 0 of its epoch: a resume from there is owed the whole history. */
let start: Map<string, Position>;

beforeAll(async () => {
  gw = await startGateway({ maxBufferedBytes: BOUND, maxPayload: 64 * 1024, namespaces: { h: { historySize: PER_CHANNEL, historyTtl: 600 }, w: { historySize: 1000, historyTtl: 600 } } });
  start = new Map();
  for (const channel of CHANNELS) {
    const results = await Promise.all(Array.from({ length: PER_CHANNEL }, (_, i) => gw.publish(channel, { i, body: BODY }, { idempotencyKey: `${channel}-${i}` })));
    const epoch = results[0]?.position.epoch ?? '';
    start.set(channel, { epoch, seq: 0 });
  }
}, 60_000);
afterAll(() => gw.close());

/** Every channel, resuming from `start` (SSE takes the cursor as `lastEventId`, as a browser's `Last-Event-ID`). */
const query = (cursorName = 'cursor'): string => `${CHANNELS.map((c) => `channel=${encodeURIComponent(c)}`).join('&')}&${cursorName}=${encodeURIComponent(formatCursor(start))}`;

/** Bytes the gateway holds for its clients and the kernel has not taken. */
async function outbound(): Promise<number> {
  const text = await (await fetch(`${gw.url}/metrics`)).text();
  return Number(/^tidings_outbound_buffer_bytes (\d+)/m.exec(text)?.[1] ?? NaN);
}

/** Waits until what the gateway holds for its clients stops growing, and returns it. */
async function settled(): Promise<number> {
  let last = -1;
  for (;;) {
    await new Promise((r) => setTimeout(r, 300));
    const now = await outbound();
    if (now === last) return now;
    last = now;
  }
}

/** With a client that stopped reading: what the gateway holds for it settles near the bound; once it leaves, nothing. */
async function heldNearBound(leave: () => void): Promise<void> {
  try {
    const held = await settled();
    expect(held).toBeGreaterThan(0);
    expect(held).toBeLessThan(BOUND + 4 * BODY.length + 64 * 1024);
  } finally {
    leave();
  }
  await until(() => gw.gateway.stats().sessions === 0, 3000, 'released');
}

describe('a resume owed 6.4 MB, by a client that does not read', () => {
  it('over WebSocket: the gateway holds about maxBufferedBytes for it, not the whole replay', async () => {
    const peer = await rawWebSocket(Number(new URL(gw.url).port), `/ws?${query()}`);
    peer.stopReading();
    await heldNearBound(() => peer.destroy());
  });

  it('over SSE: the same', async () => {
    const client = await RawSseClient.open(`${gw.url}/sse?${query('lastEventId')}`);
    client.pause();
    await heldNearBound(() => client.close());
  });
});

describe('live publications while a replay waits for a client that does not read', () => {
  it('are held up to maxBufferedBytes of them, then the client is shed as a slow consumer', { timeout: 30_000 }, async () => {
    // 16 MB of history: more than the kernel's socket buffers take from a client that does not read.
    const channel = 'w:big';
    const first = await Promise.all(Array.from({ length: 1000 }, (_, i) => gw.publish(channel, { i, body: BODY })));
    const from = { epoch: first[0]?.position.epoch ?? '', seq: 0 };
    const peer = await rawWebSocket(Number(new URL(gw.url).port), `/ws?channel=${channel}&cursor=${encodeURIComponent(formatCursor(new Map([[channel, from]])))}`);
    peer.stopReading();
    try {
      // Its replay waits for it; the session holds on.
      await settled();
      expect(gw.gateway.stats().sessions).toBe(1);
      // More than the bound in live publications of the channel: held for the replay, then too many.
      for (let i = 0; i < 2 * (BOUND / BODY.length) + 2 && gw.gateway.stats().sessions === 1; i++) await gw.publish(channel, { live: i, body: BODY });
      await until(() => gw.gateway.stats().sessions === 0, 3000, 'shed');
      expect(peer.closed).toBe(false);
    } finally {
      peer.destroy();
    }
  });
});

describe('a resume owed 6.4 MB, by a client that reads', () => {
  it('over SSE: gets every publication once, in order', async () => {
    const client = await RawSseClient.open(`${gw.url}/sse?${query('lastEventId')}`);
    try {
      const messages = (): Array<{ channel: string; position: Position }> => client.named('message').map((e) => JSON.parse(e.data) as { channel: string; position: Position });
      await until(() => messages().length === CHANNELS.length * PER_CHANNEL, 20_000, 'every message');
      expect(client.named('tidings:gap')).toEqual([]);
      for (const channel of CHANNELS) {
        expect(messages().filter((m) => m.channel === channel).map((m) => m.position.seq)).toEqual(Array.from({ length: PER_CHANNEL }, (_, i) => i + 1));
      }
    } finally {
      client.close();
    }
  }, 30_000);

  it('over WebSocket: the same, and live publications of another channel meanwhile do not shed it', async () => {
    const c = await RawWsClient.connect(`${gw.wsUrl}?${query()}&channel=h:live`);
    try {
      // Every channel subscribed (its history read); the replays go on as the client reads.
      await c.until((x) => x.ofType('reply').length === CHANNELS.length + 1, 10_000);
      for (let i = 1; i <= 5; i++) await gw.publish('h:live', i);
      await c.until((x) => x.ofType('message').length === CHANNELS.length * PER_CHANNEL + 5 || x.closed, 20_000);
      expect([c.closed, c.closeCode, c.closeReason]).toEqual([false, undefined, '']);
      expect(c.ofType('gap')).toEqual([]);
      for (const channel of CHANNELS) {
        const seqs = c.ofType('message').filter((f) => f.message.channel === channel).map((f) => f.message.position.seq);
        expect(seqs).toEqual(Array.from({ length: PER_CHANNEL }, (_, i) => i + 1));
      }
      expect(c.ofType('message').filter((f) => f.message.channel === 'h:live').map((f) => f.message.data)).toEqual([1, 2, 3, 4, 5]);
    } finally {
      c.terminate();
    }
  }, 30_000);
});
