/**
 * The WebSocket protocol: welcome, subscribe/unsubscribe replies, client publish, rpc, ping, and a
 * coded error for each kind of bad frame, none of which disturbs the connection or other clients.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CloseCode, TidingsError, type ErrorFrame, type ReplyFrame } from '@tidings/protocol';
import { RawWsClient, startGateway, type TestGateway } from '@tidings/testing';

let gw: TestGateway;
const clients: RawWsClient[] = [];
const connect = async (): Promise<RawWsClient> => {
  const c = await RawWsClient.connect(gw.wsUrl);
  clients.push(c);
  return c;
};

beforeAll(async () => {
  gw = await startGateway(
    { demo: true, maxPayload: 1024, maxSubscriptions: 3, maxBadFrames: 5 },
    {
      rpc: {
        echo: (data) => ({ echoed: data ?? null }),
        fail: () => {
          throw new TidingsError('forbidden', 'not today');
        },
      },
    },
  );
});
afterAll(async () => {
  for (const c of clients) c.terminate();
  await gw.close();
});

describe('WebSocket protocol', () => {
  it('greets with a welcome frame', async () => {
    const c = await connect();
    expect(c.frames[0]).toMatchObject({ type: 'welcome', version: 1, heartbeat: 25_000 });
  });

  it('replies to subscribe with the start position, then delivers; unsubscribe stops delivery', async () => {
    const c = await connect();
    const pub = await gw.publish('ws-sub', 0);
    const reply = (await c.request({ type: 'subscribe', channel: 'ws-sub' })) as ReplyFrame;
    expect(reply.result).toEqual({ channel: 'ws-sub', position: pub.position, recovered: false });
    await gw.publish('ws-sub', 1);
    await c.until((x) => x.ofType('message').length === 1);
    expect(c.ofType('message')[0]?.message).toEqual({ channel: 'ws-sub', position: { epoch: pub.position.epoch, seq: 2 }, data: 1 });
    expect(await c.request({ type: 'unsubscribe', channel: 'ws-sub' })).toMatchObject({ type: 'reply', result: {} });
    await gw.publish('ws-sub', 2);
    await new Promise((r) => setTimeout(r, 100));
    expect(c.ofType('message')).toHaveLength(1);
  });

  it('reports recovered: true when resuming with nothing lost', async () => {
    const c = await connect();
    const p1 = await gw.publish('ws-rec', 1);
    await gw.publish('ws-rec', 2);
    const reply = (await c.request({ type: 'subscribe', channel: 'ws-rec', since: p1.position })) as ReplyFrame;
    expect(reply.result).toEqual({ channel: 'ws-rec', position: p1.position, recovered: true });
    await c.until((x) => x.ofType('message').length === 1);
    expect(c.ofType('message')[0]?.message.position.seq).toBe(2);
  });

  it('refuses a second subscription to the same channel, unknown unsubscribes and too many subscriptions', async () => {
    const c = await connect();
    await c.request({ type: 'subscribe', channel: 'ws-dup' });
    expect(((await c.request({ type: 'subscribe', channel: 'ws-dup' })) as ErrorFrame).error.code).toBe('already_subscribed');
    expect(((await c.request({ type: 'unsubscribe', channel: 'ws-none' })) as ErrorFrame).error.code).toBe('not_subscribed');
    await c.request({ type: 'subscribe', channel: 'ws-l2' });
    await c.request({ type: 'subscribe', channel: 'ws-l3' });
    expect(((await c.request({ type: 'subscribe', channel: 'ws-l4' })) as ErrorFrame).error.code).toBe('limit_exceeded');
  });

  it('refuses a position ahead of the channel with bad_position', async () => {
    const c = await connect();
    const p = await gw.publish('ws-ahead', 1);
    const err = (await c.request({ type: 'subscribe', channel: 'ws-ahead', since: { epoch: p.position.epoch, seq: 99 } })) as ErrorFrame;
    expect(err.error.code).toBe('bad_position');
    // The failed subscribe left nothing behind: subscribing again works.
    expect((await c.request({ type: 'subscribe', channel: 'ws-ahead' })).type).toBe('reply');
  });

  it('lets clients publish where the namespace allows, idempotently, and forbids it elsewhere', async () => {
    const c = await connect();
    const ok = (await c.request({ type: 'publish', message: { channel: 'demo:ws', data: { a: 1 }, idempotencyKey: 'x' } })) as ReplyFrame;
    expect(ok.result).toMatchObject({ channel: 'demo:ws', position: { seq: 1 }, duplicate: false });
    const again = (await c.request({ type: 'publish', message: { channel: 'demo:ws', data: { a: 1 }, idempotencyKey: 'x' } })) as ReplyFrame;
    expect(again.result).toMatchObject({ position: { seq: 1 }, duplicate: true });
    const denied = (await c.request({ type: 'publish', message: { channel: 'ws-closed', data: 1 } })) as ErrorFrame;
    expect(denied.error).toEqual({ code: 'forbidden', reason: 'clients may not publish to ws-closed' });
  });

  it('answers rpc calls through registered handlers with coded errors otherwise', async () => {
    const c = await connect();
    expect(await c.request({ type: 'rpc', method: 'echo', data: [1, 'two'] })).toMatchObject({ type: 'reply', result: { echoed: [1, 'two'] } });
    expect(((await c.request({ type: 'rpc', method: 'nope' })) as ErrorFrame).error.code).toBe('unknown_method');
    expect(((await c.request({ type: 'rpc', method: 'fail' })) as ErrorFrame).error).toEqual({ code: 'forbidden', reason: 'not today' });
    expect(((await c.request({ type: 'rpc', method: 'toString' })) as ErrorFrame).error.code).toBe('unknown_method');
  });

  it('answers ping with pong', async () => {
    const c = await connect();
    expect(await c.request({ type: 'ping' })).toMatchObject({ type: 'pong' });
  });

  it.each([
    ['malformed JSON', '{"type":', 'bad_json', false],
    ['a non-object', '[1,2]', 'bad_frame', false],
    ['an unknown frame type', '{"type":"explode","id":7}', 'bad_frame', true],
    ['an invalid channel', '{"type":"subscribe","id":7,"channel":"no spaces"}', 'bad_channel', true],
    ['a malformed position', '{"type":"subscribe","id":7,"channel":"a","since":{"epoch":"!","seq":-1}}', 'bad_position', true],
    ['an rpc without id', '{"type":"rpc","method":"echo"}', 'bad_frame', false],
    ['a publish without data', '{"type":"publish","id":7,"message":{"channel":"demo:x"}}', 'bad_request', true],
  ])('answers %s with an error frame and stays usable', async (_what, text, code, echoesId) => {
    const c = await connect();
    c.sendText(text);
    await c.until((x) => x.ofType('error').length === 1);
    const err = c.ofType('error')[0] as ErrorFrame;
    expect(err.error.code).toBe(code);
    expect(err.error.reason.length).toBeGreaterThan(0);
    expect(err.id).toBe(echoesId ? 7 : undefined);
    expect(await c.request({ type: 'ping' })).toMatchObject({ type: 'pong' });
  });

  it('answers a binary frame with bad_frame', async () => {
    const c = await connect();
    c.ws.send(Buffer.from([1, 2, 3]));
    await c.until((x) => x.ofType('error').length === 1);
    expect(c.ofType('error')[0]?.error.code).toBe('bad_frame');
  });

  it('closes with 1009 on a frame over the size limit, without affecting others', async () => {
    const bystander = await connect();
    await bystander.request({ type: 'subscribe', channel: 'ws-big' });
    const c = await connect();
    c.sendText(JSON.stringify({ type: 'ping', pad: 'x'.repeat(2000) }));
    await c.until((x) => x.closed);
    expect(c.closeCode).toBe(CloseCode.too_large.code);
    await gw.publish('ws-big', 1);
    await bystander.until((x) => x.ofType('message').length === 1);
  });

  it('closes a peer that keeps sending garbage with bad_protocol', async () => {
    const c = await connect();
    for (let i = 0; i < 5; i++) c.sendText('garbage');
    await c.until((x) => x.closed);
    expect(c.closeCode).toBe(CloseCode.bad_protocol.code);
    expect(c.ofType('error')).toHaveLength(5);
  });

  it('refuses upgrades on other paths', async () => {
    await expect(RawWsClient.connect(gw.wsUrl.replace('/ws', '/other'))).rejects.toThrow(/404/);
  });
});
