/**
 * A backend's persistent connection: a WebSocket opened with the API key publishes as the server API
 * does (namespaces closed to clients, no client frame or publish rate), with pipelined acks in
 * order, may subscribe anywhere, counts against no user and is listed in no presence. A wrong key
 * is just a client.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Position } from '@tidings/protocol';
import { RawWsClient, startGateway, TEST_API_KEY, type TestGateway } from '@tidings/testing';

let gw: TestGateway;
beforeAll(async () => {
  // Tight client limits, so that the server connection visibly escapes them.
  gw = await startGateway({ maxFrameRate: 5, maxPublishRate: 2, maxInflight: 4, namespaces: { room: { presence: true } } });
});
afterAll(() => gw.close());

const asServer = (): Promise<RawWsClient> => RawWsClient.connect(gw.wsUrl, { headers: { authorization: `Bearer ${TEST_API_KEY}` } });

describe('server connection (WebSocket with the API key)', () => {
  it('publishes where clients may not, 500 pipelined publishes acked in order, delivered to a subscriber', async () => {
    const server = await asServer();
    const reader = await RawWsClient.connect(gw.wsUrl);
    try {
      await reader.request({ type: 'subscribe', channel: 'news' });
      const N = 500;
      for (let i = 0; i < N; i++) server.send({ type: 'publish', id: i, message: { channel: 'news', data: i } });
      await server.until((c) => c.ofType('reply').length + c.ofType('error').length === N, 15_000);
      expect(server.ofType('error')).toEqual([]);
      const seqs = server.ofType('reply').map((r) => (r.result as { position: Position }).position.seq);
      expect(seqs).toEqual(Array.from({ length: N }, (_, i) => i + 1));
      await reader.until((c) => c.ofType('message').length === N, 15_000);
      expect(reader.ofType('message').map((m) => m.message.data)).toEqual(Array.from({ length: N }, (_, i) => i));
    } finally {
      server.terminate();
      reader.terminate();
    }
  }, 30_000);

  it('a client on the same limits is refused: publishing to news, and past its frame rate', async () => {
    const client = await RawWsClient.connect(gw.wsUrl);
    try {
      const refused = await client.request({ type: 'publish', message: { channel: 'news', data: 1 } });
      expect(refused).toMatchObject({ type: 'error', error: { code: 'forbidden' } });
      for (let i = 0; i < 30; i++) client.send({ type: 'ping', id: `p${i}` });
      await client.until((c) => c.ofType('error').some((e) => e.error.code === 'limit_exceeded'));
    } finally {
      client.terminate();
    }
  });

  it('a wrong key is a client like any other', async () => {
    const wrong = await RawWsClient.connect(gw.wsUrl, { headers: { authorization: 'Bearer not-the-key-0123456789' } });
    try {
      expect(await wrong.request({ type: 'publish', message: { channel: 'news', data: 1 } })).toMatchObject({ type: 'error', error: { code: 'forbidden' } });
    } finally {
      wrong.terminate();
    }
  });

  it('is not listed in presence, while a client is', async () => {
    const server = await asServer();
    const client = await RawWsClient.connect(gw.wsUrl);
    try {
      await server.request({ type: 'subscribe', channel: 'room:1' });
      await client.request({ type: 'subscribe', channel: 'room:1' });
      const listed1 = async (): Promise<unknown[]> => {
        const res = await fetch(`${gw.url}/api/presence?channel=room:1`, { headers: { authorization: `Bearer ${TEST_API_KEY}` } });
        return ((await res.json()) as { clients: unknown[] }).clients;
      };
      // The client's entry is added as it subscribes; the server connection's never is.
      const deadline = Date.now() + 3000;
      while ((await listed1()).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(await listed1()).toHaveLength(1);
      const listed = await server.request({ type: 'presence', channel: 'room:1' });
      expect(listed).toMatchObject({ type: 'reply', result: { channel: 'room:1' } });
    } finally {
      server.terminate();
      client.terminate();
    }
  });
});
