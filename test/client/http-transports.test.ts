/**
 * The client's HTTP transports (SSE and long polling) against a real gateway: a final close code is
 * final, close() lets go of what is in flight, a stale stream request never touches the live one, a
 * proxy's refusal of a publish is an answer and not a lost connection, user code run on `connected`
 * cannot stall a channel, permanent refusals are reported, and a publish rides out a dead connection.
 */
import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import { describe, expect, it } from 'vitest';
import type { Client, ClientOptions, Subscription, TransportName } from '@tidings/client';
import type { PublishResult } from '@tidings/protocol';
import type { GatewayConfig } from '@tidings/server';
import { cleanupAfterEach, ownedTestClient, postOnce, signToken, startGateway, startNginx, startProxy, TEST_SECRET, until, type TestGateway } from '@tidings/testing';

const cleanup = cleanupAfterEach();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const urlOf = (input: RequestInfo | URL): string => (typeof input === 'string' ? input : input instanceof URL ? input.href : input.url);

const CONFIG: GatewayConfig = {
  pingInterval: 300,
  sseHeartbeat: 300,
  pollTimeout: 1000,
  namespaces: { '': {}, chat: { clientPublish: true } },
};

async function gateway(config: GatewayConfig = {}, parts: Parameters<typeof startGateway>[1] = {}): Promise<TestGateway> {
  const gw = await startGateway({ ...CONFIG, ...config }, parts);
  cleanup.push(() => gw.close());
  return gw;
}

const client = (url: string, kind: TransportName, options: ClientOptions = {}): Client => ownedTestClient(cleanup, url, kind, options);

/** Subscribes `c` to `channel` and waits until it is connected and the subscription started: resolves with the list the data it receives goes to. */
async function subscribed(c: Client, channel = 'chat:room', timeout = 5000): Promise<{ got: unknown[] }> {
  const sub = c.subscribe(channel);
  const got: unknown[] = [];
  sub.on('message', (m) => got.push(m.data));
  await until(() => c.state.status === 'connected' && sub.position !== undefined, timeout, 'connected');
  return { got };
}

/** A fetch that records the URL of every request the client makes. */
function recording(): { readonly urls: string[]; readonly fetch: typeof fetch } {
  const urls: string[] = [];
  return {
    urls,
    fetch: (input, init) => {
      urls.push(urlOf(input));
      return fetch(input, init);
    },
  };
}

describe('SSE: a final code in tidings:error is final', () => {
  it('a user disconnected by the server API (tidings:error unauthorized) ends failed and never comes back, as over WebSocket', async () => {
    const gw = await gateway({ auth: { jwt: { secret: TEST_SECRET } } });
    const token = await signToken({ sub: 'alice', channels: ['news'] }, { expiresIn: 3600 });
    const rec = recording();
    const c = client(gw.url, 'sse', { token, fetch: rec.fetch });
    const errors: string[] = [];
    c.on('error', (e) => errors.push(e.code));
    c.subscribe('news');
    await until(() => c.state.status === 'connected', 5000, 'connected');
    const res = await postOnce(`${gw.url}/api/disconnect`, JSON.stringify({ user: 'alice', reason: 'account suspended' }));
    expect(res.status).toBe(200);
    await until(() => c.state.status === 'failed', 3000, 'failed');
    expect(c.state).toMatchObject({ status: 'failed', reason: 'account suspended' });
    expect(errors).toEqual(['unauthorized']);
    const streams = rec.urls.filter((u) => u.includes('/sse?')).length;
    await sleep(800);
    expect(rec.urls.filter((u) => u.includes('/sse?')).length).toBe(streams);
  });
});

/** A fetch that tracks which requests to `paths` have not settled yet. */
function tracking(paths: RegExp): { readonly pending: Set<string>; readonly fetch: typeof fetch } {
  const pending = new Set<string>();
  let n = 0;
  return {
    pending,
    fetch: (input, init) => {
      const url = urlOf(input);
      const p = fetch(input, init);
      if (!paths.test(url)) return p;
      const key = `${++n} ${url}`;
      pending.add(key);
      const settled = (): void => void pending.delete(key);
      p.then(async (res) => {
        // Settled once its body is read, or failed to be.
        await res.clone().arrayBuffer().catch(() => undefined);
        settled();
      }, settled);
      return p;
    },
  };
}

describe.each<TransportName>(['sse', 'poll'])('close() over %s', (kind) => {
  it('aborts the /rpc and /send requests in flight: nothing stays open waiting for a handler that has not answered', async () => {
    const answers: Array<() => void> = [];
    const later = <T>(value: T): Promise<T> => new Promise((resolve) => answers.push(() => resolve(value)));
    const gw = await gateway({}, { rpc: { slow: () => later('done') }, authorize: { publish: () => later(true) } });
    cleanup.push(() => answers.forEach((answer) => answer()));
    const t = tracking(/\/(rpc|send)$/);
    const c = client(gw.url, kind, { fetch: t.fetch });
    c.subscribe('news');
    await until(() => c.state.status === 'connected', 5000, 'connected');
    const request = c.request('slow', null, { timeout: 60_000 });
    const publish = c.publish('chat:room', { text: 'hi' });
    await until(() => answers.length === 2 && t.pending.size === 2, 3000, 'both at the server');
    c.close();
    await expect(request).rejects.toMatchObject({ code: 'unavailable' });
    await expect(publish).rejects.toMatchObject({ code: 'unavailable' });
    await until(() => t.pending.size === 0, 1000, () => `requests still open after close(): ${[...t.pending].join(', ')}`);
  });
});

/** Remembers the transport that worked, in memory. */
function memory(): { readonly items: Map<string, string>; getItem(k: string): string | null; setItem(k: string, v: string): void } {
  const items = new Map<string, string>();
  return { items, getItem: (k) => items.get(k) ?? null, setItem: (k, v) => void items.set(k, v) };
}

/** A fetch over a slow network for error answers: the body of a non-2xx answer arrives `ms` after its head. */
function slowErrorBodies(ms: number): typeof fetch {
  return async (input, init) => {
    const res = await fetch(input, init);
    if (res.ok) return res;
    const text = await res.text();
    const body = new ReadableStream<Uint8Array>({
      async start(ctrl) {
        await sleep(ms);
        ctrl.enqueue(new TextEncoder().encode(text));
        ctrl.close();
      },
    });
    const signal = init?.signal ?? undefined;
    return new Response(body.pipeThrough(new TransformStream(), signal === undefined ? {} : { signal }), { status: res.status, headers: res.headers });
  };
}

describe('SSE: a refusal of a stream request already replaced', () => {
  it('does not end the live stream: the refused channel ends with its error, the others stay on SSE, nothing is remembered', async () => {
    const gw = await gateway({}, { authorize: { subscribe: (_identity, channel) => channel !== 'secret' } });
    const storage = memory();
    const c = client(gw.url, 'sse', { transports: ['sse', 'poll'], storage, fetch: slowErrorBodies(300) });
    const transports: string[] = [];
    c.on('state', (s) => s.to.status === 'connected' && transports.push(s.to.transport));
    const secret = c.subscribe('secret');
    const errors: string[] = [];
    secret.on('error', (e) => errors.push(e.code));
    c.subscribe('news');
    await sleep(100);
    // The channel set changes while the refusal's body is on its way.
    const sports = c.subscribe('sports');
    await until(() => c.state.status === 'connected' && sports.position !== undefined, 8000, 'connected');
    expect(errors).toEqual(['forbidden']);
    expect(secret.active).toBe(false);
    expect(transports).toEqual(['sse']);
    expect([...storage.items.values()]).toEqual([]);
  });
});

/**
 * A reverse proxy in front of `gw` that passes every request on except those `refuse` picks, which
 * it answers itself with `status` and an HTML page, as a proxy does for a location it does not route.
 */
async function routingProxy(gw: TestGateway, refuse: (req: IncomingMessage) => boolean, status: number): Promise<{ url: string; refused: number }> {
  const state = { url: '', refused: 0 };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    if (refuse(req)) {
      state.refused += 1;
      req.resume();
      res.writeHead(status, { 'content-type': 'text/html' }).end(`<html><body><h1>${status}</h1></body></html>`);
      return;
    }
    const up = httpRequest(`${gw.url}${req.url ?? '/'}`, { method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    up.on('error', () => res.destroy());
    res.on('close', () => up.destroy());
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanup.push(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  const address = server.address();
  state.url = `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`;
  return state;
}

describe.each<TransportName>(['sse', 'poll'])('a proxy that refuses POST /send, over %s', (kind) => {
  it('fails the publish with the status, once, and leaves the working connection alone', async () => {
    const gw = await gateway();
    const proxy = await routingProxy(gw, (req) => req.method === 'POST' && (req.url ?? '').startsWith('/send'), 404);
    const c = client(proxy.url, kind);
    const { got } = await subscribed(c);
    const states: string[] = [];
    c.on('state', (s) => states.push(s.to.status));
    await expect(c.publish('chat:room', 'hi')).rejects.toMatchObject({ code: 'not_found', message: expect.stringContaining('HTTP 404') as unknown });
    expect(proxy.refused).toBe(1);
    // The downstream was never taken for lost: it still delivers.
    await gw.publish('chat:room', 'from the server');
    await until(() => got.length === 1, 3000, 'a message');
    expect(states).toEqual([]);
    expect(c.state.status).toBe('connected');
  });
});

describe('a proxy error page on a poll', () => {
  it('is an outage told by its status (the page is not read as the gateway\'s JSON), and the poll comes back once it passes', async () => {
    const gw = await gateway();
    let down = false;
    const proxy = await routingProxy(gw, (req) => down && (req.url ?? '').startsWith('/poll'), 502);
    const c = client(proxy.url, 'poll');
    const { got } = await subscribed(c);
    const reasons: string[] = [];
    c.on('state', (s) => reasons.push(s.reason));
    down = true;
    await until(() => proxy.refused > 0 && c.state.status === 'waiting', 5000, 'waiting after the error page');
    expect(reasons.join(' | ')).toContain('502');
    expect(reasons.join(' | ')).not.toMatch(/Unexpected token|JSON/);
    down = false;
    await until(() => c.state.status === 'connected', 5000, 'connected again');
    await gw.publish('chat:room', 'after');
    await until(() => got.length === 1, 3000, 'a message');
  });
});

/** A fetch over a network with `ms` of latency before each request. */
function latency(ms: number): typeof fetch {
  return async (input, init) => {
    await sleep(ms);
    return fetch(input, init);
  };
}

describe.each<TransportName>(['sse', 'poll'])('a channel subscribed from a state listener on connected, over %s', (kind) => {
  it('stalls no channel: the first channel delivers every publication, in order, while the second is added', async () => {
    const gw = await gateway();
    let publishing = true;
    let published = 0;
    const publisher = (async () => {
      while (publishing) {
        await gw.publish('a', ++published);
        await sleep(20);
      }
    })();
    cleanup.push(async () => {
      publishing = false;
      await publisher;
    });
    const c = client(gw.url, kind, { fetch: latency(150) });
    const off = c.on('state', (s) => {
      if (s.to.status !== 'connected') return;
      off();
      c.subscribe('b');
    });
    const a = c.subscribe('a');
    const got: number[] = [];
    a.on('message', (m) => got.push(m.data as number));
    await until(() => c.state.status === 'connected', 5000, 'connected');
    await until(() => got.length >= 20, 5000, () => `20 messages of a (got ${got.length}, position ${JSON.stringify(a.position)})`);
    publishing = false;
    await publisher;
    await until(() => got.at(-1) === published, 5000, 'the last publication');
    const first = got[0] ?? 0;
    expect(got).toEqual(Array.from({ length: published - first + 1 }, (_, i) => first + i));
  });
});

/** The data of the next message `sub` delivers. */
function nextMessage(sub: Subscription): Promise<unknown> {
  return new Promise((resolve) => {
    const off = sub.on('message', (m) => {
      off();
      resolve(m.data);
    });
  });
}

describe('permanent refusals of a stream request', () => {
  it('a since that is not a position is refused by subscribe() at once, and the other channels go on', async () => {
    const gw = await gateway();
    const c = client(gw.url, 'poll');
    const news = c.subscribe('news');
    expect(() => c.subscribe('a', { since: { epoch: 'not valid!', seq: 1 } })).toThrow(expect.objectContaining({ code: 'bad_position' }) as Error);
    expect(() => c.subscribe('b', { since: { epoch: 'k2j4x9qa', seq: -1 } })).toThrow(expect.objectContaining({ code: 'bad_position' }) as Error);
    expect(c.resources.subscriptions).toBe(1);
    await until(() => news.position !== undefined, 5000, 'news started');
    const got = nextMessage(news);
    await gw.publish('news', 1);
    expect(await got).toBe(1);
  });

  it.each<TransportName>(['sse', 'poll'])('over %s, a subscription beyond the 64 channels of a stream ends with limit_exceeded; the 64 others work', async (kind) => {
    const gw = await gateway();
    const c = client(gw.url, kind);
    const subs = Array.from({ length: 65 }, (_, i) => c.subscribe(`ch${i + 1}`));
    const errors: string[] = [];
    subs[64]?.on('error', (e) => errors.push(`${e.code}: ${e.message}`));
    await until(() => subs.slice(0, 64).every((s) => s.position !== undefined), 5000, () => `64 started (${subs.filter((s) => s.position !== undefined).length})`);
    expect(errors).toEqual([`limit_exceeded: at most 64 channels per ${kind === 'sse' ? 'SSE stream' : 'long poll'}`]);
    expect(subs[64]?.active).toBe(false);
    expect(c.resources.subscriptions).toBe(64);
    const got = nextMessage(subs[63] as Subscription);
    await gw.publish('ch64', 'last');
    expect(await got).toBe('last');
    expect(c.transport).toBe(kind);
  });

  it.each<TransportName>(['sse', 'poll'])("over %s, a subscription beyond the server's maxSubscriptions ends with limit_exceeded; the others work", async (kind) => {
    const gw = await gateway({ maxSubscriptions: 3 });
    const c = client(gw.url, kind, { transports: [kind, 'poll'] });
    const subs = ['a', 'b', 'c', 'd'].map((ch) => c.subscribe(ch));
    const errors: string[] = [];
    subs[3]?.on('error', (e) => errors.push(e.code));
    await until(() => subs.slice(0, 3).every((s) => s.position !== undefined), 5000, 'three started');
    expect(errors).toEqual(['limit_exceeded']);
    expect(c.transport).toBe(kind);
  });

  it.each<TransportName>(['sse', 'poll'])('over %s, a refusal of the gateway that asking again never changes ends the client failed, with its code', async (kind) => {
    const gw = await gateway();
    const rec = recording();
    // A proxy that mangles the resume cursor: the gateway refuses it, 400 bad_cursor, naming no channel.
    const mangling: typeof fetch = (input, init) => {
      const url = urlOf(input).replace(/cursor=[^&]*/, 'cursor=%3D%3D%3D');
      const headers = new Headers(init?.headers);
      if (headers.has('last-event-id')) headers.set('last-event-id', '===');
      return rec.fetch(url, { ...init, headers });
    };
    const c = client(gw.url, kind, { fetch: mangling });
    const errors: string[] = [];
    c.on('error', (e) => errors.push(e.code));
    c.subscribe('news', { since: { epoch: 'k2j4x9qa', seq: 0 } });
    await until(() => c.state.status === 'failed', 5000, 'failed');
    expect(c.state).toMatchObject({ status: 'failed', code: 'bad_cursor' });
    expect(errors).toEqual(['bad_cursor']);
    const requests = rec.urls.length;
    await sleep(500);
    expect(rec.urls.length).toBe(requests);
    await expect(c.publish('chat:room', 1)).rejects.toMatchObject({ code: 'bad_cursor' });
  });
});

describe.each<TransportName>(['sse', 'poll'])('a publish over %s on a connection that dies', (kind) => {
  it('is sent again after the reconnect, with the same idempotency key: it resolves, published once', async () => {
    const gw = await gateway();
    const proxy = await startProxy(gw.port);
    cleanup.push(() => proxy.close());
    const c = client(proxy.url, kind);
    const { got } = await subscribed(c);
    const states: string[] = [];
    c.on('state', (s) => states.push(s.to.status));
    // Every byte is dropped from now on, as by a dead peer behind a NAT: the /send request never arrives.
    proxy.blackhole();
    let outcome: { reply: PublishResult } | { error: unknown } | undefined;
    c.publish('chat:room', 'once').then(
      (reply) => (outcome = { reply }),
      (error: unknown) => (outcome = { error }),
    );
    await until(() => states.includes('waiting'), 5000, 'the dead connection noticed');
    proxy.resume();
    await until(() => c.state.status === 'connected', 5000, 'connected again');
    // Sent again over the new connection at once, not left waiting on the dead one.
    await until(() => outcome !== undefined, 2000, 'the publish settled');
    expect(outcome).toMatchObject({ reply: { channel: 'chat:room', position: { seq: 1 } } });
    await until(() => got.length === 1, 5000, 'the publication delivered');
    await sleep(300);
    expect(got).toEqual(['once']);
  });
});

describe('the background check for SSE behind a proxy that buffers streams', () => {
  it('opens a real stream, so the client stays on long polling without flapping, and checks less and less often', async () => {
    const gw = await gateway();
    const nginx = await startNginx(gw.port, 'buffer');
    cleanup.push(() => nginx.close());
    const rec = recording();
    const c = client(nginx.url, 'sse', { transports: ['sse', 'poll'], fetch: rec.fetch, openTimeout: 500, upgradeAfter: 200 });
    const { got } = await subscribed(c, 'buffered', 8000);
    expect(c.transport).toBe('poll');
    const states: string[] = [];
    c.on('state', (s) => states.push(`${s.to.status} (${s.reason})`));
    const streamsBefore = rec.urls.filter((u) => u.includes('/sse?')).length;
    await sleep(4000);
    // Never taken off long polling for an SSE stream that cannot work here.
    expect(states).toEqual([]);
    // Checked with a real stream, backing off: 200 ms, then 400, 800, 1600 (plus each check's 500 ms).
    const checks = rec.urls.filter((u) => u.includes('/sse?')).length - streamsBefore;
    expect(checks).toBeGreaterThanOrEqual(1);
    expect(checks).toBeLessThanOrEqual(4);
    await gw.publish('buffered', 'still here');
    await until(() => got.length === 1, 5000, 'a message over long polling');
  });
});
