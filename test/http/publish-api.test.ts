/**
 * The HTTP publish API and client upstream: auth, replies with positions, batches, idempotency,
 * and a coded error for every kind of bad input.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSubscriber, startGateway, TEST_API_KEY, type TestGateway } from '@tidings/testing';

let gw: TestGateway;
beforeAll(async () => {
  gw = await startGateway({ demo: true, dedupWindow: 400, maxBody: 4096, maxBatch: 10, namespaces: { quiet: { historySize: 10 } } });
});
afterAll(() => gw.close());

const post = (path: string, body: string, headers: Record<string, string> = {}): Promise<Response> =>
  fetch(`${gw.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${TEST_API_KEY}`, ...headers },
    body,
  });

async function errorOf(res: Response): Promise<{ status: number; code: string; reason: string }> {
  const body = (await res.json()) as { error: { code: string; reason: string } };
  return { status: res.status, code: body.error.code, reason: body.error.reason };
}

describe('POST /api/publish', () => {
  it('replies with the assigned position', async () => {
    const res = await post('/api/publish', JSON.stringify({ channel: 'api-a', data: { x: 1 } }));
    expect(res.status).toBe(200);
    const body = (await res.json()) as { channel: string; position: { epoch: string; seq: number }; duplicate: boolean };
    expect(body).toMatchObject({ channel: 'api-a', position: { seq: 1 }, duplicate: false });
    expect(body.position.epoch).toMatch(/^[a-z0-9]{8}$/);
  });

  it('publishes a batch in order and replies with every position', async () => {
    const batch = [1, 2, 3].map((i) => ({ channel: i === 2 ? 'api-b2' : 'api-b', data: i }));
    const res = await post('/api/publish', JSON.stringify(batch));
    expect(res.status).toBe(200);
    const body = (await res.json()) as { results: Array<{ channel: string; position: { seq: number } }> };
    expect(body.results.map((r) => [r.channel, r.position.seq])).toEqual([
      ['api-b', 1],
      ['api-b2', 1],
      ['api-b', 2],
    ]);
  });

  it('applies a repeated idempotency key once and returns the first position', async () => {
    const sub = await openSubscriber('websocket', gw, ['api-idem']);
    const first = await gw.publish('api-idem', { n: 1 }, { idempotencyKey: 'k-1' });
    const again = await gw.publish('api-idem', { n: 2 }, { idempotencyKey: 'k-1' });
    const other = await gw.publish('api-idem', { n: 3 }, { idempotencyKey: 'k-2' });
    expect(again).toEqual({ ...first, duplicate: true });
    expect(other.position.seq).toBe(first.position.seq + 1);
    await sub.untilCount('api-idem', 2);
    await new Promise((r) => setTimeout(r, 50));
    expect(sub.messages.map((m) => m.data)).toEqual([{ n: 1 }, { n: 3 }]);
    sub.close();
  });

  it('publishes again once the dedup window has passed', async () => {
    const first = await gw.publish('api-window', 1, { idempotencyKey: 'w' });
    await new Promise((r) => setTimeout(r, 450));
    const later = await gw.publish('api-window', 1, { idempotencyKey: 'w' });
    expect(later.duplicate).toBe(false);
    expect(later.position.seq).toBe(first.position.seq + 1);
  });

  it('refuses a missing or wrong API key with 401', async () => {
    expect(await errorOf(await post('/api/publish', '{"channel":"a","data":1}', { authorization: '' }))).toMatchObject({
      status: 401,
      code: 'unauthorized',
    });
    expect(await errorOf(await post('/api/publish', '{"channel":"a","data":1}', { authorization: 'Bearer nope' }))).toMatchObject({
      status: 401,
      code: 'unauthorized',
    });
  });

  it.each([
    ['malformed JSON', '{"channel":', 400, 'bad_json'],
    ['a non-object', '42', 400, 'bad_request'],
    ['missing data', '{"channel":"a"}', 400, 'bad_request'],
    ['an invalid channel', '{"channel":"bad channel","data":1}', 400, 'bad_channel'],
    ['a comma in a channel', '{"channel":"a,b","data":1}', 400, 'bad_channel'],
    ['an unknown namespace', '{"channel":"nope:x","data":1}', 404, 'unknown_namespace'],
    ['an invalid type', '{"channel":"a","data":1,"type":"has space"}', 400, 'bad_request'],
    ['a reserved control type', '{"channel":"a","data":1,"type":"tidings:gap"}', 400, 'bad_request'],
    ['a type an EventSource fires as its own error', '{"channel":"a","data":1,"type":"error"}', 400, 'bad_request'],
    ['a type an EventSource fires as its own open', '{"channel":"a","data":1,"type":"open"}', 400, 'bad_request'],
    ['an empty idempotency key', '{"channel":"a","data":1,"idempotencyKey":""}', 400, 'bad_request'],
    ['an empty batch', '[]', 400, 'bad_request'],
    ['a batch over the limit', JSON.stringify(Array.from({ length: 11 }, () => ({ channel: 'a', data: 1 }))), 429, 'limit_exceeded'],
    ['a body over the size limit', JSON.stringify({ channel: 'a', data: 'x'.repeat(5000) }), 413, 'too_large'],
  ])('answers %s with a coded error', async (_what, body, status, code) => {
    expect(await errorOf(await post('/api/publish', body))).toMatchObject({ status, code });
  });

  it('rejects a whole batch when one publication is bad, publishing none', async () => {
    const res = await post('/api/publish', JSON.stringify([{ channel: 'api-atomic', data: 1 }, { channel: 'bad channel', data: 2 }]));
    const err = await errorOf(res);
    expect(err).toMatchObject({ status: 400, code: 'bad_channel' });
    expect(err.reason).toMatch(/^publication 1: /);
    const next = await gw.publish('api-atomic', 3);
    expect(next.position.seq).toBe(1);
  });

  it('refuses a body that is not UTF-8 rather than publish it changed, read whole or chunked', async () => {
    // {"channel":"api-utf8","data":"A<FF FE C3>B"}: lenient decoding would publish "A\ufffd\ufffd\ufffdB".
    const bytes = Buffer.concat([Buffer.from('{"channel":"api-utf8","data":"A'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('B"}')]);
    const headers = { 'content-type': 'application/json', authorization: `Bearer ${TEST_API_KEY}` };
    const sized = await fetch(`${gw.url}/api/publish`, { method: 'POST', headers, body: bytes });
    expect(await errorOf(sized)).toMatchObject({ status: 400, code: 'bad_json' });
    const chunked = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(bytes.subarray(0, 20));
        controller.enqueue(bytes.subarray(20));
        controller.close();
      },
    });
    const streamed = await fetch(`${gw.url}/api/publish`, { method: 'POST', headers, body: chunked, duplex: 'half' } as RequestInit);
    expect(await errorOf(streamed)).toMatchObject({ status: 400, code: 'bad_json' });
    expect((await gw.publish('api-utf8', 'é ✓ 😀')).position.seq).toBe(1);
  });

  it('requires application/json', async () => {
    const res = await post('/api/publish', '{"channel":"a","data":1}', { 'content-type': 'text/plain' });
    // The status line's reason phrase is the status's own, whatever status the gateway writes.
    expect(res.statusText).toBe('Unsupported Media Type');
    expect(await errorOf(res)).toMatchObject({ status: 415, code: 'unsupported_media_type' });
  });

  it('refuses other methods with 405 and an Allow header', async () => {
    const res = await fetch(`${gw.url}/api/publish`);
    expect(res.headers.get('allow')).toBe('POST');
    expect(await errorOf(res)).toMatchObject({ status: 405, code: 'method_not_allowed' });
  });
});

describe('a batch is checked whole, every check, before anything is published', () => {
  it('refuses a batch whose last publication is too large, or refused by the host hook, or over the rate, publishing none', async () => {
    const strict = await startGateway(
      { maxPayload: 100, maxPublishRate: 3, namespaces: { room: { clientPublish: true } } },
      { authorize: { publish: (_identity, _channel, data) => !data.includes('refuse') } },
    );
    try {
      const send = async (path: string, batch: unknown[]): Promise<Response> =>
        fetch(`${strict.url}${path}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...(path === '/api/publish' ? { authorization: `Bearer ${TEST_API_KEY}` } : {}) },
          body: JSON.stringify(batch),
        });
      const big = 'x'.repeat(200);
      expect(await errorOf(await send('/api/publish', [{ channel: 'room:a', data: 1 }, { channel: 'room:a', data: big }]))).toMatchObject({
        status: 413,
        code: 'too_large',
        reason: expect.stringMatching(/^publication 1: /) as unknown,
      });
      expect(await errorOf(await send('/send', [{ channel: 'room:a', data: 2 }, { channel: 'room:a', data: 'refuse' }]))).toMatchObject({
        status: 403,
        code: 'forbidden',
        reason: expect.stringMatching(/^publication 1: /) as unknown,
      });
      // Over the rate (3 a second, 6 at once; 2 taken above): refused, saying when to come back.
      const rated = await send('/send', [1, 2, 3, 4, 5, 6].map((n) => ({ channel: 'room:a', data: n })));
      expect(await errorOf(rated)).toMatchObject({ status: 429, code: 'limit_exceeded', reason: expect.stringMatching(/^publication [45]: /) as unknown });
      expect(Number(rated.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      // Nothing of the refused batches was published.
      expect((await strict.publish('room:a', 'first')).position.seq).toBe(1);
    } finally {
      await strict.close();
    }
  });
});

describe('POST /send (client upstream)', () => {
  it('lets clients publish where the namespace allows it', async () => {
    const res = await post('/send', JSON.stringify({ channel: 'demo:send', data: 'hi' }), { authorization: '' });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { position: { seq: number } }).position.seq).toBe(1);
  });

  it('forbids client publishing elsewhere', async () => {
    expect(await errorOf(await post('/send', JSON.stringify({ channel: 'quiet:x', data: 1 }), { authorization: '' }))).toMatchObject({
      status: 403,
      code: 'forbidden',
    });
  });
});

describe('other routes', () => {
  it('serves health and readiness', async () => {
    const health = await fetch(`${gw.url}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'ok' });
    const ready = await fetch(`${gw.url}/readyz`);
    expect(await ready.json()).toEqual({ ready: true, node: gw.gateway.nodeId });
  });

  it('answers unknown paths with 404 not_found', async () => {
    expect(await errorOf(await fetch(`${gw.url}/nope`))).toMatchObject({ status: 404, code: 'not_found' });
  });

  it('answers a plain GET /ws with a coded error', async () => {
    expect(await errorOf(await fetch(`${gw.url}/ws`))).toMatchObject({ status: 400, code: 'bad_request' });
  });

  it('serves the demo page', async () => {
    const res = await fetch(`${gw.url}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/text\/html/);
    expect(await res.text()).toContain('id="transport"');
  });
});
