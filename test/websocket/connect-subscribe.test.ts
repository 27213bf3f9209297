/**
 * Subscribing in the connect request (`/ws?channel=...&cursor=...`): each named channel is answered
 * with a reply (or error) whose id is `subscribe:<channel>`, resumes from the cursor like SSE and
 * long polling, and a refusal of one channel leaves the others and the connection alone.
 */
import { formatCursorEntry } from '@tidings/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawWsClient, startGateway, type TestGateway, watchNextConnectionWrites } from '@tidings/testing';

let gw: TestGateway;
beforeAll(async () => {
  gw = await startGateway({ namespaces: { chat: { historySize: 10 } } });
});
afterAll(() => gw.close());

describe('/ws?channel=', () => {
  it('subscribes every named channel before anything else is asked, and delivers', async () => {
    const ws = await RawWsClient.connect(`${gw.wsUrl}?channel=news&channel=chat:a`);
    try {
      await ws.until((c) => c.ofType('reply').length === 2);
      expect(ws.ofType('reply').map((r) => r.id).sort()).toEqual(['subscribe:chat:a', 'subscribe:news']);
      expect(ws.ofType('reply').find((r) => r.id === 'subscribe:news')?.result).toMatchObject({ channel: 'news', position: { seq: 0 } });
      await gw.publish('chat:a', { n: 1 });
      await gw.publish('news', { n: 2 });
      await ws.until((c) => c.ofType('message').length === 2);
      expect(ws.ofType('message').map((m) => m.message.channel)).toEqual(['chat:a', 'news']);
    } finally {
      ws.terminate();
    }
  });

  it('answers the handshake, the welcome and the subscriptions of the connect request in one write', async () => {
    const writes = watchNextConnectionWrites(gw.gateway.server);
    const ws = await RawWsClient.connect(`${gw.wsUrl}?channel=news&channel=chat:one`);
    try {
      await ws.until((c) => c.ofType('reply').length === 2);
      // One write to the socket, of four chunks: the 101 answer, the welcome and both replies.
      expect(writes).toEqual([4]);
    } finally {
      ws.terminate();
    }
  });

  it('resumes from the cursor: exactly what was missed, recovered', async () => {
    const first = await gw.publish('chat:r', 1);
    await gw.publish('chat:r', 2);
    await gw.publish('chat:r', 3);
    const cursor = encodeURIComponent(formatCursorEntry('chat:r', first.position));
    const ws = await RawWsClient.connect(`${gw.wsUrl}?channel=chat:r&cursor=${cursor}`);
    try {
      await ws.until((c) => c.ofType('message').length === 2);
      expect(ws.ofType('reply')[0]).toMatchObject({ id: 'subscribe:chat:r', result: { recovered: true } });
      expect(ws.ofType('message').map((m) => m.message.data)).toEqual([2, 3]);
      expect(ws.ofType('gap')).toEqual([]);
    } finally {
      ws.terminate();
    }
  });

  it('refuses one channel with an error that names it, and keeps the others and the connection', async () => {
    const ws = await RawWsClient.connect(`${gw.wsUrl}?channel=nope:x&channel=news`);
    try {
      await ws.until((c) => c.ofType('error').length === 1 && c.ofType('reply').length === 1);
      expect(ws.ofType('error')[0]).toMatchObject({ id: 'subscribe:nope:x', error: { code: 'unknown_namespace' } });
      expect(ws.ofType('reply')[0]).toMatchObject({ id: 'subscribe:news' });
      const pong = await ws.request({ type: 'ping' });
      expect(pong.type).toBe('pong');
    } finally {
      ws.terminate();
    }
  });

  it('answers malformed parameters with one error frame, and the connection stays usable', async () => {
    const ws = await RawWsClient.connect(`${gw.wsUrl}?channel=${encodeURIComponent('bad channel')}`);
    try {
      await ws.until((c) => c.ofType('error').length === 1);
      expect(ws.ofType('error')[0]).toMatchObject({ error: { code: 'bad_channel' } });
      expect(ws.ofType('error')[0]?.id).toBeUndefined();
      const reply = await ws.request({ type: 'subscribe', channel: 'news' });
      expect(reply.type).toBe('reply');
    } finally {
      ws.terminate();
    }
  });
});
