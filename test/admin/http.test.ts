/**
 * `/admin` over HTTP: the page is a shell anyone may load, every data endpoint refuses without the
 * API key or the admin token (401 `unauthorized`), a login sets a signed HttpOnly cookie that every
 * node of a cluster accepts, the publish form's endpoint takes JSON only, failed logins and open
 * streams are bounded. On a cluster (nodes on one real Redis) any node's stream shows every node, a
 * node that says goodbye shows gone at once and one killed without a word shows stale.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { gatewayNode, RawSseClient, RawWsClient, startGateway, startRedis, TEST_API_KEY, type GatewayNode, type TestGateway } from '@tidings/testing';
import { MemoryBroker, type GatewayConfig, type GatewayParts, type Metrics } from '@tidings/server';
import { ADMIN_CHANNEL } from '../../packages/server/src/admin/admin.js';
import { ADMIN_SESSION_MS } from '../../packages/server/src/admin/auth.js';
import { MAX_STREAMS } from '../../packages/server/src/admin/streams.js';
import { STALE_AFTER } from '../../packages/server/src/admin/view.js';
import { AdminFeedReader, codeOf, http, login, type ClusterTick } from './support.js';

const ADMIN_TOKEN = 'an-admin-token-for-tests-0123';
const JSON_TYPE = { 'content-type': 'application/json' };
const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function gateway(config: GatewayConfig = {}, parts: GatewayParts = {}): Promise<TestGateway> {
  const gw = await startGateway({ adminToken: ADMIN_TOKEN, namespaces: { chat: { presence: true } }, ...config }, parts);
  cleanup.push(() => gw.close());
  return gw;
}

async function feed(url: string, headers: Record<string, string>): Promise<AdminFeedReader> {
  const reader = await AdminFeedReader.open(url, headers);
  cleanup.push(() => reader.close());
  return reader;
}

describe('/admin on one node', () => {
  it('serves the page shell and uPlot from the installed package to anyone, with a strict content policy', async () => {
    const gw = await gateway();
    const page = await http(`${gw.url}/admin`, 'GET');
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toMatch(/^text\/html/);
    expect(page.headers['content-security-policy']).toContain("default-src 'none'");
    expect(page.headers['content-security-policy']).toContain("frame-ancestors 'none'");
    expect(page.body).toContain('id="login-form"');
    const js = await http(`${gw.url}/admin/uplot.js`, 'GET');
    expect([js.status, js.headers['content-type']]).toEqual([200, 'text/javascript; charset=utf-8']);
    expect(js.body).toContain('uPlot');
    expect((await http(`${gw.url}/admin/uplot.css`, 'GET')).status).toBe(200);
  });

  it('refuses every data endpoint without credentials, with a wrong key, or with a forged cookie (401 unauthorized)', async () => {
    const gw = await gateway();
    const body = JSON.stringify({ channel: 'chat:x', data: 1 });
    const attempts: Array<Record<string, string>> = [
      {},
      { authorization: 'Bearer not-the-key' },
      { authorization: `Basic ${Buffer.from(`admin:${TEST_API_KEY}`).toString('base64')}` },
      { cookie: `tidings_admin=k.${(Date.now() + 3_600_000).toString(36)}.forged` },
      { cookie: `other=1; tidings_admin=garbage` },
    ];
    for (const headers of attempts) {
      const events = await http(`${gw.url}/admin/events`, 'GET', headers);
      const state = await http(`${gw.url}/admin/state`, 'GET', headers);
      const publish = await http(`${gw.url}/admin/publish`, 'POST', { ...JSON_TYPE, ...headers }, body);
      for (const a of [events, state, publish]) expect([a.status, codeOf(a)]).toEqual([401, 'unauthorized']);
    }
    // The API key and the admin token work as bearer tokens (scripts).
    for (const secret of [TEST_API_KEY, ADMIN_TOKEN]) expect((await http(`${gw.url}/admin/state`, 'GET', { authorization: `Bearer ${secret}` })).status).toBe(200);
  });

  it('logs in with the API key or the admin token: a signed HttpOnly, SameSite=Strict cookie for /admin; logout clears it', async () => {
    const gw = await gateway();
    const wrong = await login(gw.url, 'not-the-key');
    expect([wrong.answer.status, codeOf(wrong.answer), wrong.answer.headers['set-cookie']]).toEqual([401, 'unauthorized', undefined]);
    const form = await http(`${gw.url}/admin/login`, 'POST', { 'content-type': 'application/x-www-form-urlencoded' }, `key=${TEST_API_KEY}`);
    expect([form.status, codeOf(form)]).toEqual([415, 'unsupported_media_type']);

    for (const secret of [TEST_API_KEY, ADMIN_TOKEN]) {
      const { answer, cookie } = await login(gw.url, secret);
      expect(answer.status).toBe(204);
      const set = answer.headers['set-cookie']?.[0] ?? '';
      expect(set).toMatch(/^tidings_admin=[kt]\.[0-9a-z]+\.[\w-]+; /);
      expect(set).toContain('; HttpOnly');
      expect(set).toContain('; SameSite=Strict');
      expect(set).toContain('; Path=/admin');
      expect(set).toContain(`; Max-Age=${ADMIN_SESSION_MS / 1000}`);
      // The secret is not in the cookie.
      expect(set).not.toContain(secret);
      const state = await http(`${gw.url}/admin/state`, 'GET', { cookie });
      expect(state.status).toBe(200);
      expect(JSON.parse(state.body)).toMatchObject({ node: gw.gateway.nodeId, cluster: { live: 1 } });
    }
    const out = await http(`${gw.url}/admin/logout`, 'POST');
    expect([out.status, out.headers['set-cookie']?.[0]]).toEqual([204, 'tidings_admin=; Path=/admin; Max-Age=0; HttpOnly; SameSite=Strict']);
  });

  it("publishes with the API's rights (idempotency keys of its own) and answers the position; JSON bodies only, so a cross-site form cannot post", async () => {
    const gw = await gateway();
    const { cookie } = await login(gw.url, ADMIN_TOKEN);
    const ws = await RawWsClient.connect(gw.wsUrl);
    cleanup.push(() => ws.terminate());
    await ws.request({ type: 'subscribe', channel: 'chat:x' });

    const form = await http(`${gw.url}/admin/publish`, 'POST', { cookie, 'content-type': 'text/plain' }, JSON.stringify({ channel: 'chat:x', data: 1 }));
    expect([form.status, codeOf(form)]).toEqual([415, 'unsupported_media_type']);
    const ok = await http(`${gw.url}/admin/publish`, 'POST', { cookie, ...JSON_TYPE }, JSON.stringify({ channel: 'chat:x', type: 'note.added', data: { text: 'hi' } }));
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.body)).toMatchObject({ channel: 'chat:x', position: { seq: 1 }, duplicate: false });
    await ws.until((c) => c.ofType('message').length === 1);
    expect(ws.ofType('message')[0]?.message).toMatchObject({ channel: 'chat:x', type: 'note.added', data: { text: 'hi' } });
    const unknown = await http(`${gw.url}/admin/publish`, 'POST', { cookie, ...JSON_TYPE }, JSON.stringify({ channel: 'nope:x', data: 1 }));
    expect([unknown.status, codeOf(unknown)]).toEqual([404, 'unknown_namespace']);
    // An operator's idempotency key is the dashboard's own: the backend's same key still publishes.
    const keyed = { channel: 'chat:x', data: 2, idempotencyKey: 'order-42' };
    const byOperator = await http(`${gw.url}/admin/publish`, 'POST', { cookie, ...JSON_TYPE }, JSON.stringify(keyed));
    expect(JSON.parse(byOperator.body)).toMatchObject({ position: { seq: 2 }, duplicate: false });
    expect(await gw.publish('chat:x', 3, { idempotencyKey: 'order-42' })).toMatchObject({ position: { seq: 3 }, duplicate: false });
  });

  it('limits failed logins per address (429 with Retry-After), the right key included while limited', async () => {
    const gw = await gateway();
    for (let i = 0; i < 10; i++) expect((await login(gw.url, `wrong-${i}`)).answer.status).toBe(401);
    const limited = await login(gw.url, TEST_API_KEY);
    expect([limited.answer.status, codeOf(limited.answer)]).toEqual([429, 'limit_exceeded']);
    expect(Number(limited.answer.headers['retry-after'])).toBeGreaterThanOrEqual(1);
  });

  it('limits logins sent at once, and wrong Bearer secrets, as failed logins', async () => {
    const gw = await gateway();
    // Thirty at once: the first ten are compared, the rest refused before they are.
    const racing = await Promise.all(Array.from({ length: 30 }, (_, i) => login(gw.url, `wrong-${i}`)));
    expect(racing.filter((r) => r.answer.status === 401).length).toBe(10);
    expect(racing.filter((r) => r.answer.status === 429).length).toBe(20);
    const other = await gateway();
    const bearer = async (secret: string): Promise<number> => (await http(`${other.url}/admin/state`, 'GET', { authorization: `Bearer ${secret}` })).status;
    for (let i = 0; i < 10; i++) expect(await bearer(`wrong-${i}`)).toBe(401);
    expect(await bearer(ADMIN_TOKEN)).toBe(429);
    expect((await login(other.url, TEST_API_KEY)).answer.status).toBe(429);
  });

  it("shows a node whose metrics the host keeps with its connections, and no rates or latency", async () => {
    const ignore = (): void => undefined;
    const host: Metrics = { connectionOpened: ignore, connectionClosed: ignore, published: ignore, delivered: ignore, dropped: ignore, resumed: ignore, reconnected: ignore, refused: ignore, brokerCall: ignore, brokerStatus: ignore, unexpectedError: ignore };
    const gw = await gateway({}, { metrics: host });
    const ws = await RawWsClient.connect(gw.wsUrl);
    cleanup.push(() => ws.terminate());
    const state = await http(`${gw.url}/admin/state`, 'GET', { authorization: `Bearer ${ADMIN_TOKEN}` });
    expect(JSON.parse(state.body)).toMatchObject({
      nodes: [{ node: gw.gateway.nodeId, state: 'live', rates: null, p50: null, p99: null }],
      cluster: { rates: { in: 0, out: 0 }, p50: null, p99: null },
    });
    const websockets = async (): Promise<number> =>
      (JSON.parse((await http(`${gw.url}/admin/state`, 'GET', { authorization: `Bearer ${ADMIN_TOKEN}` })).body) as ClusterTick).cluster.connections.websocket;
    await expect.poll(websockets, { timeout: 3000 }).toBe(1);
  });

  it('publishes its snapshots on the broker only while someone watches: an idle node adds no traffic and no state', async () => {
    const broker = new MemoryBroker({ maxChannels: 100, dedupMaxKeys: 100 });
    let published = 0;
    const publish = broker.publish.bind(broker);
    broker.publish = (cmd) => {
      if (cmd.channel === ADMIN_CHANNEL) published += 1;
      return publish(cmd);
    };
    const gw = await gateway({}, { broker });
    const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
    await sleep(1500);
    expect([published, broker.size]).toEqual([0, 0]);
    const { cookie } = await login(gw.url, TEST_API_KEY);
    const watching = await feed(gw.url, { cookie });
    await watching.until(() => published >= 2, 4000);
    watching.close();
    await sleep(1200);
    const after = published;
    await sleep(2200);
    expect(published).toBe(after);
  });

  it('streams hello and a tick every second, at most MAX_STREAMS streams per node; closing the gateway ends them at once', async () => {
    const gw = await gateway();
    const { cookie } = await login(gw.url, TEST_API_KEY);
    const first = await feed(gw.url, { cookie });
    expect(first.status).toBe(200);
    await first.until((r) => r.ticks.length >= 3, 5000);
    expect(first.events[0]).toMatchObject({ event: 'hello' });
    expect(JSON.parse(first.events[0]?.data ?? '{}')).toMatchObject({ node: gw.gateway.nodeId, interval: 1000, window: 180 });
    expect(first.last?.nodes).toEqual([expect.objectContaining({ node: gw.gateway.nodeId, state: 'live', broker: 'up' })]);

    for (let i = 1; i < MAX_STREAMS; i++) expect((await feed(gw.url, { cookie })).status).toBe(200);
    // One too many: told as an event stream (an EventSource comes back later), with the coded refusal.
    const over = await feed(gw.url, { cookie });
    await over.until((r) => r.ended);
    expect(over.status).toBe(200);
    expect(over.events.map((e) => e.event)).toEqual(['tidings:error']);
    expect(JSON.parse(over.events[0]?.data ?? '{}')).toMatchObject({ code: 'limit_exceeded' });

    const started = Date.now();
    await gw.close();
    expect(Date.now() - started).toBeLessThan(3000);
    await first.until((r) => r.ended, 1000);
  });
});

describe('/admin on a cluster (one real Redis)', () => {
  it("a cookie from one node works on another, whose stream shows every node and the cluster's channels; a node that stops shows gone, one killed shows stale", async () => {
    const redis = await startRedis();
    cleanup.push(() => redis.stop());
    const config = { broker: redis.url, channelLinger: 0 };
    const one = await gateway({ ...config, nodeId: 'n1' });
    const two = await gateway({ ...config, nodeId: 'n2' });
    // A node in a process of its own, to be killed without a goodbye.
    const three: GatewayNode = await gatewayNode({ broker: redis.url, id: 'n3' });
    await three.start();
    cleanup.push(() => three.kill());

    const { cookie } = await login(one.url, TEST_API_KEY);
    const stream = await feed(two.url, { cookie });
    expect(stream.status).toBe(200);
    const all = await stream.untilTick((t) => t.cluster.live === 3);
    expect(all.node).toBe('n2');
    expect(all.nodes.map((n) => [n.node, n.state, n.broker])).toEqual([
      ['n1', 'live', 'up'],
      ['n2', 'live', 'up'],
      ['n3', 'live', 'up'],
    ]);

    // Subscribers on two nodes: the channel's subscribers are summed, its presence read from the broker.
    const ws = await RawWsClient.connect(one.wsUrl);
    cleanup.push(() => ws.terminate());
    await ws.request({ type: 'subscribe', channel: 'chat:busy' });
    const sse = await RawSseClient.open(`${two.url}/sse?channel=chat:busy`);
    cleanup.push(() => sse.close());
    const busy = await stream.untilTick((t) => t.channels[0]?.subscribers === 2 && t.channels[0].presence === 2, 10_000);
    expect(busy.channels[0]?.channel).toBe('chat:busy');
    expect(busy.cluster.connections).toMatchObject({ websocket: 1, sse: 1 });
    expect(busy.nodes.find((n) => n.node === 'n1')?.connections.websocket).toBe(1);

    // Published on n1 (through the cookie's publish endpoint on n1), delivered on both: rates in and out.
    for (let i = 0; i < 5; i++) await http(`${one.url}/admin/publish`, 'POST', { cookie, ...JSON_TYPE }, JSON.stringify({ channel: 'chat:busy', data: i }));
    const flowing = await stream.untilTick((t) => t.cluster.rates.in > 0 && t.cluster.rates.out > 0 && t.cluster.p99 !== null);
    expect(flowing.nodes.find((n) => n.node === 'n1')?.rates?.in).toBeGreaterThan(0);

    // n1 stops gracefully: its goodbye makes it gone at once.
    await one.close();
    const gone = await stream.untilTick((t) => t.nodes.find((n) => n.node === 'n1')?.state === 'gone', 3000);
    expect(gone.cluster.live).toBe(2);

    // n3 is killed: unheard, it is shown stale within the bound.
    await three.kill();
    const killedAt = Date.now();
    await stream.untilTick((t) => t.nodes.find((n) => n.node === 'n3')?.state === 'stale', STALE_AFTER + 3000);
    expect(Date.now() - killedAt).toBeGreaterThan(STALE_AFTER - 1500);
    expect(stream.last?.cluster.live).toBe(1);

    // The broker goes away: the serving node still shows itself, broker down.
    await redis.kill();
    await stream.untilTick((t) => t.nodes.find((n) => n.node === 'n2')?.broker === 'down', 10_000);
  }, 40_000);
});
