/**
 * Findings 5 and 9: the payload limit counts bytes, demo namespaces (clients may publish) exist only
 * when the demo is asked for, the history budget refuses the channel that overflows it, and
 * idempotency keys are scoped by who published, so no one can suppress another's publication.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULTS, MemoryBroker, resolveOptions } from '@tidings/server';
import { RawWsClient, startGateway, TEST_API_KEY, type TestGateway } from '@tidings/testing';

let gw: TestGateway;
beforeAll(async () => {
  gw = await startGateway({ maxPayload: 1024, namespaces: { room: { clientPublish: true, historySize: 10 } } });
});
afterAll(async () => {
  await gw.close();
});

async function post(path: string, body: unknown, apiKey = true): Promise<{ status: number; body: { error?: { code: string }; position?: { seq: number }; duplicate?: boolean } }> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (apiKey) headers.authorization = `Bearer ${TEST_API_KEY}`;
  const res = await fetch(`${gw.url}${path}`, { method: 'POST', headers, body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as { error?: { code: string } } };
}

describe('the payload limit', () => {
  it('counts UTF-8 bytes, not UTF-16 units', async () => {
    // 600 two-byte characters: 602 UTF-16 units with the quotes, but 1202 bytes on the wire.
    const res = await post('/api/publish', { channel: 'bytes', data: 'é'.repeat(600) });
    expect(res.status).toBe(413);
    expect(res.body.error?.code).toBe('too_large');
    const ok = await post('/api/publish', { channel: 'bytes', data: 'é'.repeat(500) });
    expect(ok.status).toBe(200);
  });
});

describe('demo namespaces', () => {
  it('are not in the defaults: no namespace lets anonymous clients publish unless configured', () => {
    for (const [name, ns] of Object.entries(DEFAULTS.namespaces)) expect(ns.clientPublish, name).toBe(false);
    expect(resolveOptions({}).namespaces.demo).toBeUndefined();
  });

  it('are on when the demo is asked for', () => {
    const options = resolveOptions({ demo: true });
    expect(options.namespaces.demo?.clientPublish).toBe(true);
  });
});

describe('the history budget', () => {
  it('refuses the channel that overflows it with storage_full and keeps every other channel', async () => {
    const broker = new MemoryBroker({ maxChannels: 1000, dedupMaxKeys: 10, maxHistoryBytes: 64 * 1024 });
    const small = await startGateway({ maxHistoryBytes: 64 * 1024, namespaces: { keep: { historySize: 1000 } } }, { broker });
    try {
      const first = await small.publish('keep:a', 'x'.repeat(500));
      let refused: { status: number; body: { error?: { code: string } } } | undefined;
      for (let i = 0; i < 500 && refused === undefined; i++) {
        const res = await fetch(`${small.url}/api/publish`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${TEST_API_KEY}` },
          body: JSON.stringify({ channel: `keep:flood${i % 7}`, data: 'y'.repeat(900) }),
        });
        if (res.status !== 200) refused = { status: res.status, body: (await res.json()) as { error?: { code: string } } };
      }
      expect(refused).toMatchObject({ status: 507, body: { error: { code: 'storage_full' } } });
      const page = await broker.history('keep:a', { epoch: first.position.epoch, seq: 0 }, 10);
      expect(page.publications.map((p) => p.position.seq)).toEqual([1]);
    } finally {
      await small.close();
    }
  });
});

describe('idempotency keys', () => {
  it("a client's key does not suppress the server's publication with the same key", async () => {
    const fromClient = await post('/send', { channel: 'room:k1', data: 'client', idempotencyKey: 'order-1' }, false);
    expect(fromClient.status).toBe(200);
    const fromServer = await post('/api/publish', { channel: 'room:k1', data: 'server', idempotencyKey: 'order-1' });
    expect(fromServer.status).toBe(200);
    expect(fromServer.body.duplicate).toBe(false);
    expect(fromServer.body.position?.seq).toBe(2);
  });

  it("a WebSocket client's key does not suppress the server's publication either", async () => {
    const c = await RawWsClient.connect(gw.wsUrl);
    const reply = await c.request({ type: 'publish', message: { channel: 'room:k2', data: 1, idempotencyKey: 'k' } });
    expect(reply.type).toBe('reply');
    c.close();
    const fromServer = await post('/api/publish', { channel: 'room:k2', data: 2, idempotencyKey: 'k' });
    expect(fromServer.body).toMatchObject({ duplicate: false, position: { seq: 2 } });
  });

  it('still dedups each publisher against itself', async () => {
    const a = await post('/api/publish', { channel: 'room:k3', data: 1, idempotencyKey: 'same' });
    const b = await post('/api/publish', { channel: 'room:k3', data: 1, idempotencyKey: 'same' });
    expect(b.body).toMatchObject({ duplicate: true, position: a.body.position });
    const c = await post('/send', { channel: 'room:k3', data: 1, idempotencyKey: 'same' }, false);
    const d = await post('/send', { channel: 'room:k3', data: 1, idempotencyKey: 'same' }, false);
    expect(c.body.duplicate).toBe(false);
    expect(d.body).toMatchObject({ duplicate: true, position: c.body.position });
  });
});
