/**
 * A replay waiting for its reader holds where the client is, not the history page read for it. On
 * Redis a page is this session's own copy of the publications; a client that resumes 16 channels of
 * 3.2 MB each and does not read would otherwise keep 51 MB in the gateway's heap (most of it not yet
 * handed to the socket). A client that reads still gets every publication once, in order; and what
 * history has trimmed while it waited is a gap it is told of. On real Redis.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatCursor, type Position } from '@tidings/protocol';
import { MemoryBroker, RedisBroker } from '@tidings/server';
import { faultyBroker, rawWebSocket, RawSseClient, RawWsClient, startGateway, startRedis, until, type RedisServer, type TestGateway } from '@tidings/testing';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const CHANNELS = Array.from({ length: 16 }, (_, i) => `h:${i}`);
const PER_CHANNEL = 100;
const BODY = 'r'.repeat(32 * 1024);
const BOUND = 256 * 1024;
/** History of the trimmed channel: 19 MB, more than the kernel's socket buffers take from a client that does not read. */
const TRIMMED = 600;

let redis: RedisServer;
let gw: TestGateway;
let start: Map<string, Position>;

beforeAll(async () => {
  redis = await startRedis();
  gw = await startGateway({ maxBufferedBytes: BOUND, maxPayload: 64 * 1024, namespaces: { h: { historySize: PER_CHANNEL, historyTtl: 600 }, g: { historySize: TRIMMED, historyTtl: 600 } } }, { broker: new RedisBroker({ url: redis.url }) });
  start = new Map();
  for (const channel of CHANNELS) {
    const results = await Promise.all(Array.from({ length: PER_CHANNEL }, (_, i) => gw.publish(channel, { i, body: BODY })));
    start.set(channel, { epoch: results[0]?.position.epoch ?? '', seq: 0 });
  }
}, 120_000);
afterAll(async () => {
  await gw.close();
  await redis.stop();
});

const query = (channels: readonly string[]): string =>
  `${channels.map((c) => `channel=${encodeURIComponent(c)}`).join('&')}&cursor=${encodeURIComponent(formatCursor(new Map(channels.map((c) => [c, start.get(c) as Position]))))}`;

/** Bytes the gateway holds for its clients and the kernel has not taken. */
async function outbound(): Promise<number> {
  const text = await (await fetch(`${gw.url}/metrics`)).text();
  return Number(/^tidings_outbound_buffer_bytes (\d+)/m.exec(text)?.[1] ?? NaN);
}

/** The gateway's heap after full collections, in bytes. */
function heap(): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

describe('a resume owed 51 MB from Redis, by a client that does not read', () => {
  it('holds a position per channel while its replays wait, not their pages', async () => {
    const before = heap();
    const peer = await rawWebSocket(gw.port, `/ws?${query(CHANNELS)}`);
    peer.stopReading();
    try {
      // Every channel subscribed (its history read, the first part handed over), then nothing moves.
      await until(() => gw.gateway.stats().hub.subscribers === CHANNELS.length, 10_000, 'subscribed');
      let last = -1;
      for (;;) {
        await new Promise((r) => setTimeout(r, 300));
        const now = await outbound();
        if (now === last && now > 0) break;
        last = now;
      }
      const held = heap() - before;
      // The sink's bound, the socket's, and a few publications in flight: not 51 MB of pages.
      expect(held).toBeLessThan(12 * 1024 * 1024);
    } finally {
      peer.destroy();
    }
    await until(() => gw.gateway.stats().sessions === 0, 3000, 'released');
  }, 60_000);
});

describe('a resume from Redis, by a client that reads slowly', () => {
  it('gets every publication once, in order, read again from history as it drains', async () => {
    const channels = CHANNELS.slice(0, 4);
    const c = await RawWsClient.connect(`${gw.wsUrl}?${query(channels)}`);
    try {
      await c.until((x) => x.ofType('message').length === channels.length * PER_CHANNEL || x.closed, 30_000);
      expect([c.closed, c.closeCode]).toEqual([false, undefined]);
      expect(c.ofType('gap')).toEqual([]);
      for (const channel of channels) {
        const seqs = c.ofType('message').filter((f) => f.message.channel === channel).map((f) => f.message.position.seq);
        expect(seqs).toEqual(Array.from({ length: PER_CHANNEL }, (_, i) => i + 1));
      }
    } finally {
      c.terminate();
    }
  }, 60_000);
});

describe('a resume whose history is trimmed while it waits for its reader', () => {
  it('tells the client of every publication it can no longer have as a gap, and delivers the rest once, in order', async () => {
    const channel = 'g:trimmed';
    const first = await Promise.all(Array.from({ length: TRIMMED }, (_, i) => gw.publish(channel, { i, body: BODY })));
    const from: Position = { epoch: first[0]?.position.epoch ?? '', seq: 0 };
    const client = await RawSseClient.open(`${gw.url}/sse?channel=${channel}&lastEventId=${encodeURIComponent(formatCursor(new Map([[channel, from]])))}`);
    client.pause();
    try {
      // The replay waits for the reader; meanwhile as many again are published, small (what a resume
      // holds for its client stays within its bound), and history keeps the last 600.
      await until(() => gw.gateway.stats().hub.subscribers === 1, 5000, 'subscribed');
      await new Promise((r) => setTimeout(r, 500));
      for (let i = TRIMMED; i < 2 * TRIMMED; i++) await gw.publish(channel, { i });
      client.resume();
      const total = 2 * TRIMMED;
      type Gap = { from: Position; to: Position; reason: string };
      const covered = (): number => {
        const seqs = client.named('message').map((e) => (JSON.parse(e.data) as { position: Position }).position.seq);
        const gaps = client.named('tidings:gap').map((e) => JSON.parse(e.data) as Gap);
        return seqs.length + gaps.reduce((n, g) => n + g.to.seq - g.from.seq, 0);
      };
      await client.until(() => covered() >= total, 30_000);
      // In stream order: each message right after the last position, or a gap that says what is skipped.
      let at = 0;
      for (const e of client.events.filter((x) => x.event === 'message' || x.event === 'tidings:gap')) {
        if (e.event === 'message') {
          const seq = (JSON.parse(e.data) as { position: Position }).position.seq;
          expect(seq).toBe(at + 1);
          at = seq;
        } else {
          const gap = JSON.parse(e.data) as Gap;
          expect([gap.from.seq, gap.reason]).toEqual([at, 'trimmed']);
          at = gap.to.seq;
        }
      }
      expect(at).toBe(total);
      // The trim came while it waited: something was skipped, and told.
      expect(client.named('tidings:gap').length).toBeGreaterThan(0);
    } finally {
      client.close();
    }
  }, 60_000);
});

describe('a later part of a replay that history cannot give', () => {
  it('closes the stream unavailable, the messages before it delivered in order: the client resumes from there', async () => {
    // The first read (from seq 0) works; every later part's read fails, as with the broker down.
    const broker = faultyBroker(new MemoryBroker({ maxChannels: 100, dedupMaxKeys: 10, maxHistoryBytes: 64 * 1024 * 1024 }), { failHistory: (_channel, since) => (since?.seq ?? 0) > 0 });
    const down = await startGateway({ maxBufferedBytes: BOUND, maxPayload: 64 * 1024, namespaces: { g: { historySize: TRIMMED, historyTtl: 600 } } }, { broker });
    try {
      const channel = 'g:down';
      const first = await Promise.all(Array.from({ length: TRIMMED }, (_, i) => down.publish(channel, { i, body: BODY })));
      const from: Position = { epoch: first[0]?.position.epoch ?? '', seq: 0 };
      const client = await RawSseClient.open(`${down.url}/sse?channel=${channel}&lastEventId=${encodeURIComponent(formatCursor(new Map([[channel, from]])))}`);
      try {
        client.pause();
        await new Promise((r) => setTimeout(r, 500));
        client.resume();
        await client.until((c) => c.named('tidings:error').length > 0, 20_000);
        expect(JSON.parse(client.named('tidings:error')[0]?.data ?? '{}')).toMatchObject({ code: 'unavailable' });
        const seqs = client.named('message').map((e) => (JSON.parse(e.data) as { position: Position }).position.seq);
        expect(seqs.length).toBeGreaterThan(0);
        expect(seqs.length).toBeLessThan(TRIMMED);
        expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => i + 1));
      } finally {
        client.close();
      }
    } finally {
      await down.close();
    }
  }, 60_000);
});
