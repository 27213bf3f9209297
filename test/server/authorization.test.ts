/**
 * The authorization hooks (`Authenticator.canSubscribe`, `canPublish`) on every path that asks them:
 * a refused subscribe is `forbidden` (an `error` frame for that request on WebSocket, HTTP 403 with the
 * coded JSON body on SSE and long polling) and a refused publish is `forbidden` (WebSocket `publish`,
 * `POST /send`); nothing refused is half done (no subscription, no position consumed); the connection
 * stays usable and allowed channels keep working on it; the hooks decide per identity; and the
 * client SDK reports a refused subscribe as that subscription's `error` event.
 */
import { Agent, request, type IncomingHttpHeaders } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createClient, type Client, type TransportName, type WebSocketConstructor } from '@tidings/client';
import { TidingsError, type Channel, type Message } from '@tidings/protocol';
import type { Authenticator, Identity } from '@tidings/server';
import { RawWsClient, startGateway, until, type TestGateway } from '@tidings/testing';

/**
 * Who a client is comes from its token (`token` query on WebSocket, bearer header on HTTP). Channels
 * starting with `secret` are for `admin` only; `chat:readonly` may be read by anyone but published
 * to (by clients) only by `admin`. Every decision is recorded, to check the hooks see the identity.
 */
const decisions: string[] = [];
const auth: Authenticator = {
  connect: (info) => {
    const token = info.url.searchParams.get('token') ?? info.headers.authorization?.replace(/^Bearer /, '');
    return Promise.resolve(token === undefined ? { user: '', anonymous: true } : { user: token, anonymous: false });
  },
  canSubscribe: (identity: Identity, channel: Channel) => {
    const allowed = !channel.startsWith('secret') || identity.user === 'admin';
    decisions.push(`subscribe ${identity.user || 'anonymous'} ${channel} ${allowed ? 'allowed' : 'refused'}`);
    return allowed;
  },
  canPublish: (identity: Identity, channel: Channel) => {
    const allowed = channel !== 'chat:readonly' || identity.user === 'admin';
    decisions.push(`publish ${identity.user || 'anonymous'} ${channel} ${allowed ? 'allowed' : 'refused'}`);
    return allowed;
  },
};

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
  decisions.length = 0;
});

async function gateway(): Promise<TestGateway> {
  const gw = await startGateway({ namespaces: { chat: { clientPublish: true } }, pollTimeout: 1000, channelLinger: 0 }, { auth });
  cleanup.push(() => gw.close());
  return gw;
}

async function ws(gw: TestGateway, token: string): Promise<RawWsClient> {
  const c = await RawWsClient.connect(`${gw.wsUrl}?token=${token}`);
  cleanup.push(() => c.terminate());
  return c;
}

/** Messages of `channel` a WebSocket client received. */
const messagesOf = (c: RawWsClient, channel: Channel): Message[] => c.ofType('message').map((f) => f.message).filter((m) => m.channel === channel);

/** What the gateway holds, to check a refusal leaves nothing behind. */
const holding = (gw: TestGateway): unknown => {
  const { sessions, hub } = gw.gateway.stats();
  return { sessions, hub };
};

interface HttpAnswer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
  /** Whether the request went over a connection an earlier request used. */
  readonly reused: boolean;
}

/**
 * One request through `agent` (keep-alive, one socket: consecutive requests share a connection).
 * Resolves when the response ends, or, for a stream, once `enough(body)` holds or 3 s passed (then
 * the stream is cut).
 */
function http(agent: Agent, gw: TestGateway, method: string, path: string, token: string, body?: unknown, enough?: (body: string) => boolean): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const text = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = { authorization: `Bearer ${token}` };
    if (text !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(Buffer.byteLength(text));
    }
    const req = request(`${gw.url}${path}`, { method, agent, headers }, (res) => {
      let got = '';
      const answer = (): HttpAnswer => ({ status: res.statusCode ?? 0, headers: res.headers, body: got, reused: req.reusedSocket });
      const cut = (): void => {
        clearTimeout(timer);
        resolve(answer());
        req.destroy();
      };
      const timer = setTimeout(cut, 3000);
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        got += chunk;
        if (enough?.(got) === true) cut();
      });
      res.on('end', () => {
        clearTimeout(timer);
        resolve(answer());
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(text);
  });
}

function keepAliveAgent(): Agent {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  cleanup.push(() => agent.destroy());
  return agent;
}

const forbidden = { error: { code: 'forbidden', reason: expect.any(String) as unknown } };

describe('WebSocket', () => {
  it('refuses a forbidden subscribe with an error frame for that request; the connection stays usable', async () => {
    const gw = await gateway();
    const c = await ws(gw, 'alice');
    expect(await c.request({ type: 'subscribe', channel: 'secret-room' })).toEqual({ type: 'error', id: 1, error: forbidden.error });
    // Refused, not half subscribed: asking again is refused the same way (not already_subscribed).
    expect(await c.request({ type: 'subscribe', channel: 'secret-room' })).toMatchObject({ type: 'error', id: 2, error: { code: 'forbidden' } });
    expect(await c.request({ type: 'subscribe', channel: 'news' })).toMatchObject({ type: 'reply', id: 3, result: { channel: 'news' } });
    expect(holding(gw)).toEqual({ sessions: 1, hub: { channels: 1, subscribers: 1, repairing: 0, lingering: 0 } });

    // The same identity is refused, another one is allowed: the hook decides per identity.
    const admin = await ws(gw, 'admin');
    expect(await admin.request({ type: 'subscribe', channel: 'secret-room' })).toMatchObject({ type: 'reply', result: { channel: 'secret-room' } });
    expect(decisions).toEqual([
      'subscribe alice secret-room refused',
      'subscribe alice secret-room refused',
      'subscribe alice news allowed',
      'subscribe admin secret-room allowed',
    ]);

    const secret = await gw.publish('secret-room', 's');
    const news = await gw.publish('news', 'n');
    await c.until((x) => messagesOf(x, 'news').length === 1);
    await admin.until((x) => messagesOf(x, 'secret-room').length === 1);
    expect(messagesOf(admin, 'secret-room')).toEqual([{ channel: 'secret-room', position: secret.position, data: 's' }]);
    expect(messagesOf(c, 'news')).toEqual([{ channel: 'news', position: news.position, data: 'n' }]);
    expect(messagesOf(c, 'secret-room')).toEqual([]);
    expect(c.closed).toBe(false);
    expect(await c.request({ type: 'ping' })).toEqual({ type: 'pong', id: 4 });
  });

  it('refuses a forbidden publish with an error frame, publishes nothing, and allowed publishes on the same connection work', async () => {
    const gw = await gateway();
    const c = await ws(gw, 'alice');
    expect(await c.request({ type: 'subscribe', channel: 'chat:readonly' })).toMatchObject({ type: 'reply' });
    const refused = await c.request({ type: 'publish', message: { channel: 'chat:readonly', data: 'from alice' } });
    expect(refused).toEqual({ type: 'error', id: 2, error: forbidden.error });
    const room = await c.request({ type: 'publish', message: { channel: 'chat:room', data: 'hello' } });
    expect(room).toMatchObject({ type: 'reply', id: 3, result: { channel: 'chat:room', position: { seq: 1 }, duplicate: false } });
    // The refused publication took no position and reached nobody: the next one is seq 1.
    const next = await gw.publish('chat:readonly', 'from the server');
    expect(next.position.seq).toBe(1);
    await c.until((x) => messagesOf(x, 'chat:readonly').length === 1);
    await new Promise((r) => setTimeout(r, 50));
    expect(messagesOf(c, 'chat:readonly')).toEqual([{ channel: 'chat:readonly', position: next.position, data: 'from the server' }]);

    const admin = await ws(gw, 'admin');
    expect(await admin.request({ type: 'publish', message: { channel: 'chat:readonly', data: 'from admin' } })).toMatchObject({
      type: 'reply',
      result: { channel: 'chat:readonly', position: { seq: 2 } },
    });
    expect(decisions.filter((d) => d.startsWith('publish'))).toEqual([
      'publish alice chat:readonly refused',
      'publish alice chat:room allowed',
      'publish admin chat:readonly allowed',
    ]);
    expect(c.closed).toBe(false);
  });
});

describe.each([
  ['SSE', '/sse'],
  ['long polling', '/poll'],
] as const)('%s', (_name, path) => {
  const stream = path === '/sse';
  /** An allowed request's answer is complete: the SSE welcome event, or the poll's JSON. */
  const started = (body: string): boolean => (stream ? body.includes('event: tidings:welcome') : false);

  it('refuses a forbidden channel with 403 and the coded JSON body; the same connection then serves an allowed one', async () => {
    const gw = await gateway();
    const agent = keepAliveAgent();
    const alone = await http(agent, gw, 'GET', `${path}?channel=secret-room&timeout=0`, 'alice');
    expect(alone.status).toBe(403);
    expect(alone.headers['content-type']).toBe('application/json; charset=utf-8');
    // The body names the refused channel, so a client can end that subscription and keep the others.
    const refusedChannel = { error: { ...forbidden.error, channel: 'secret-room' } };
    expect(JSON.parse(alone.body)).toEqual(refusedChannel);
    // One forbidden channel refuses the request, even among allowed ones, and leaves nothing behind.
    const mixed = await http(agent, gw, 'GET', `${path}?channel=news&channel=secret-room&timeout=0`, 'alice');
    expect(mixed.status).toBe(403);
    expect(JSON.parse(mixed.body)).toEqual(refusedChannel);
    expect(mixed.reused).toBe(true);
    expect(holding(gw)).toEqual({ sessions: 0, hub: { channels: 0, subscribers: 0, repairing: 0, lingering: 0 } });

    const p = await gw.publish('news', 1);
    const allowed = await http(agent, gw, 'GET', `${path}?channel=news&timeout=0`, 'alice', undefined, started);
    expect(allowed.reused).toBe(true);
    expect(allowed.status).toBe(200);
    const cursor = `news=${p.position.epoch}.${p.position.seq.toString(36)}`;
    if (stream) expect(allowed.body).toContain(`id: ${cursor}\n`);
    else expect(JSON.parse(allowed.body)).toEqual({ messages: [], gaps: [], cursor });

    const admin = await http(keepAliveAgent(), gw, 'GET', `${path}?channel=secret-room&timeout=0`, 'admin', undefined, started);
    expect(admin.status).toBe(200);
    expect(decisions).toEqual([
      'subscribe alice secret-room refused',
      'subscribe alice news allowed',
      'subscribe alice secret-room refused',
      'subscribe alice news allowed',
      'subscribe admin secret-room allowed',
    ]);
    await until(() => gw.gateway.stats().sessions === 0, 3000, 'streams released');
  });
});

describe('POST /send', () => {
  it('refuses a forbidden publish with 403 forbidden and publishes nothing; allowed ones on the same connection work', async () => {
    const gw = await gateway();
    const agent = keepAliveAgent();
    const refused = await http(agent, gw, 'POST', '/send', 'alice', { channel: 'chat:readonly', data: 1 });
    expect(refused.status).toBe(403);
    expect(JSON.parse(refused.body)).toEqual(forbidden);

    const room = await http(agent, gw, 'POST', '/send', 'alice', { channel: 'chat:room', data: 2 });
    expect(room.reused).toBe(true);
    expect(room.status).toBe(200);
    expect(JSON.parse(room.body)).toMatchObject({ channel: 'chat:room', position: { seq: 1 }, duplicate: false });

    // A batch is checked whole: one forbidden publication refuses it, naming its index, and nothing in it is published.
    const batch = await http(agent, gw, 'POST', '/send', 'alice', [
      { channel: 'chat:room', data: 3 },
      { channel: 'chat:readonly', data: 4 },
    ]);
    expect(batch.status).toBe(403);
    expect(JSON.parse(batch.body)).toEqual({ error: { code: 'forbidden', reason: expect.stringMatching(/^publication 1: /) as unknown } });
    expect(JSON.parse((await http(agent, gw, 'POST', '/send', 'alice', { channel: 'chat:room', data: 5 })).body)).toMatchObject({ position: { seq: 2 } });
    expect((await gw.publish('chat:readonly', 'server')).position.seq).toBe(1);

    const admin = await http(keepAliveAgent(), gw, 'POST', '/send', 'admin', { channel: 'chat:readonly', data: 6 });
    expect(admin.status).toBe(200);
    expect(JSON.parse(admin.body)).toMatchObject({ channel: 'chat:readonly', position: { seq: 2 } });
  });
});

describe('client SDK', () => {
  function client(gw: TestGateway, kind: TransportName, token: string): Client {
    const c = createClient(gw.url, {
      transports: [kind],
      token,
      WebSocket: WebSocket as unknown as WebSocketConstructor,
      storage: null,
      backoff: { min: 50, max: 300 },
      pollTimeout: 1000,
    });
    cleanup.push(() => c.close());
    return c;
  }

  /** A forbidden subscription ends with its `error` event; the allowed one on the same client keeps working. */
  async function refusedSubscription(kind: TransportName): Promise<void> {
    const gw = await gateway();
    const c = client(gw, kind, 'alice');
    const news = c.subscribe('news');
    const secret = c.subscribe('secret-room');
    const errors: unknown[] = [];
    const clientErrors: unknown[] = [];
    secret.on('error', (e) => errors.push(e));
    c.on('error', (e) => clientErrors.push(e));
    const got: Message[] = [];
    news.on('message', (m) => got.push(m));
    await until(() => errors.length > 0, 3000, `${kind}: the forbidden subscription reported an error`);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(TidingsError);
    expect((errors[0] as TidingsError).code).toBe('forbidden');
    expect(secret.active).toBe(false);
    await until(() => news.position !== undefined, 3000, `${kind}: the allowed subscription started`);
    const p = await gw.publish('news', 'still flowing');
    await until(() => got.length === 1, 3000, `${kind}: the allowed subscription receives`);
    expect(got).toEqual([{ channel: 'news', position: p.position, data: 'still flowing' }]);
    expect(c.state.status).toBe('connected');
    expect(clientErrors).toEqual([]);
  }

  // Over SSE and long polling one refused channel refuses the whole request (403 naming the channel):
  // the SDK ends that subscription with its error and reopens with the others.
  it('over websocket surfaces a forbidden subscribe as the subscription error event; allowed ones keep working', () => refusedSubscription('websocket'));
  it('over sse surfaces a forbidden subscribe as the subscription error event; allowed ones keep working', () => refusedSubscription('sse'));
  it('over poll surfaces a forbidden subscribe as the subscription error event; allowed ones keep working', () => refusedSubscription('poll'));

  it.each(['websocket', 'sse', 'poll'] as const)('over %s rejects a forbidden publish with forbidden; allowed publishes work', async (kind) => {
    const gw = await gateway();
    const c = client(gw, kind, 'alice');
    await expect(c.publish('chat:readonly', 1)).rejects.toMatchObject({ code: 'forbidden' });
    await expect(c.publish('chat:room', 2)).resolves.toMatchObject({ channel: 'chat:room', position: { seq: 1 }, duplicate: false });
    expect((await gw.publish('chat:readonly', 'server')).position.seq).toBe(1);
    // The hook is asked exactly once per publication, on every transport.
    expect(decisions.filter((d) => d.startsWith('publish'))).toEqual(['publish alice chat:readonly refused', 'publish alice chat:room allowed']);
  });
});
