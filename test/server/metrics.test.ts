/**
 * Prometheus metrics: `GET /metrics` counts what really happened on every transport (connections,
 * deliveries with their latency, resumes by outcome, reconnects, refusals by code, sheds, broker
 * calls), passes `promtool check metrics`, can move to a port of its own, and a real Prometheus
 * server started by the kit scrapes it and answers a query about it.
 */
import { execFileSync } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { attemptSubscribe, freePort, postOnce, PROMTOOL_BIN, RawSseClient, RawWsClient, startGateway, startPrometheus, type TestGateway } from '@tidings/testing';

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

/** One scrape, as `name{labels}` → value (HELP / TYPE lines left out). */
async function scrape(url: string): Promise<{ text: string; value: (series: string) => number | undefined }> {
  const res = await fetch(`${url}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toContain('text/plain');
  const text = await res.text();
  const values = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const cut = line.lastIndexOf(' ');
    values.set(line.slice(0, cut), Number(line.slice(cut + 1)));
  }
  return { text, value: (series) => values.get(series) };
}

/** Polls an async check every 100 ms until it holds, or fails after `timeoutMs`. */
async function eventually(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function started(config: Parameters<typeof startGateway>[0] = {}): Promise<TestGateway> {
  const gw = await startGateway(config);
  cleanup.push(() => gw.close());
  return gw;
}

describe('GET /metrics', () => {
  it('counts connections, deliveries and their latency, resumes, reconnects, refusals and sheds as they happen', async () => {
    const gw = await started({ maxBufferedBytes: 1024, namespaces: { '': { historySize: 3 } } });
    const ws = await RawWsClient.connect(gw.wsUrl);
    cleanup.push(() => ws.terminate());
    await ws.request({ type: 'subscribe', channel: 'news' });
    const sse = await RawSseClient.open(`${gw.url}/sse?channel=news`);
    cleanup.push(() => sse.close());
    await sse.until((s) => s.events.length > 0);
    for (let i = 1; i <= 5; i++) await gw.publish('news', { i });
    await ws.until((c) => c.ofType('message').length === 5);
    await sse.until((s) => s.events.filter((e) => e.event === 'message').length === 5);

    let m = await scrape(gw.url);
    expect(m.value('tidings_connections{transport="websocket"}')).toBe(1);
    expect(m.value('tidings_connections{transport="sse"}')).toBe(1);
    expect(m.value('tidings_publications_total')).toBe(5);
    expect(m.value('tidings_deliveries_total')).toBe(10);
    expect(m.value('tidings_delivery_latency_seconds_count')).toBe(10);
    expect(m.value('tidings_delivery_latency_seconds_bucket{le="+Inf"}')).toBe(10);
    expect(m.value('tidings_subscriptions')).toBe(2);
    expect(m.value('tidings_channels')).toBe(1);
    expect(m.value('tidings_broker_request_duration_seconds_count{op="publish"}')).toBe(5);
    expect(m.value('tidings_broker_up')).toBe(1);

    // A WebSocket comes back from seq 4 (recovered); another from seq 0 (history holds only 3: a gap).
    const back = await RawWsClient.connect(gw.wsUrl);
    cleanup.push(() => back.terminate());
    const position = (await ws.request({ type: 'subscribe', channel: 'other' }), ws.ofType('message')[3]?.message.position);
    expect(position).toBeDefined();
    await back.request({ type: 'subscribe', channel: 'news', since: position });
    const late = await RawWsClient.connect(gw.wsUrl);
    cleanup.push(() => late.terminate());
    await late.request({ type: 'subscribe', channel: 'news', since: { epoch: position?.epoch ?? '', seq: 0 } });
    // A poll with a cursor is a resume but not a reconnect.
    const poll = await fetch(`${gw.url}/poll?channel=news&timeout=0&cursor=${encodeURIComponent(`news=${position?.epoch ?? ''}.4`)}`);
    expect(poll.status).toBe(200);
    await poll.text();
    // Refusals by code: a bad frame, an unknown namespace over SSE, a wrong API key.
    ws.sendText('not json');
    await ws.until((c) => c.ofType('error').length > 0);
    expect((await fetch(`${gw.url}/sse?channel=nope:x`)).status).toBe(404);
    expect((await fetch(`${gw.url}/api/publish`, { method: 'POST', headers: { authorization: 'Bearer wrong-key-0123456789' }, body: '{}' })).status).toBe(401);

    m = await scrape(gw.url);
    expect(m.value('tidings_resumes_total{transport="websocket",outcome="recovered",reason="none"}')).toBe(1);
    expect(m.value('tidings_resumes_total{transport="websocket",outcome="gap",reason="trimmed"}')).toBe(1);
    expect(m.value('tidings_resumes_total{transport="poll",outcome="recovered",reason="none"}')).toBe(1);
    expect(m.value('tidings_reconnects_total{transport="websocket"}')).toBe(2);
    expect(m.value('tidings_reconnects_total{transport="sse"}')).toBe(0);
    expect(m.value('tidings_refusals_total{code="bad_json"}') ?? m.value('tidings_refusals_total{code="bad_frame"}')).toBe(1);
    expect(m.value('tidings_refusals_total{code="unknown_namespace"}')).toBe(1);
    expect(m.value('tidings_auth_failures_total{code="unauthorized"}')).toBe(1);
    expect(m.value('tidings_limit_hits_total{code="unauthorized"}')).toBeUndefined();

    // A consumer that never reads is shed once its buffer passes maxBufferedBytes.
    ws.ws.pause();
    (ws.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    const big = 'x'.repeat(16 * 1024);
    const batch = JSON.stringify(Array.from({ length: 50 }, () => ({ channel: 'news', data: big })));
    const sheds = async (): Promise<number> => (await scrape(gw.url)).value('tidings_slow_consumer_sheds_total') ?? 0;
    for (let i = 0; i < 120 && (await sheds()) === 0; i++) await postOnce(`${gw.url}/api/publish`, batch);
    await eventually(async () => (await sheds()) >= 1, 10_000, 'a shed');
    m = await scrape(gw.url);
    // The paused reader is shed (on a busy machine a reading one may be too); each shed is a close with its reason.
    const shed = m.value('tidings_slow_consumer_sheds_total') ?? 0;
    expect(m.value('tidings_connections_closed_total{transport="websocket",reason="slow_consumer"}')).toBe(shed);
    expect(m.value('tidings_connections{transport="websocket"}')).toBe(3 - shed);
    // Standard process and Node.js series, the event-loop delay among them.
    expect(m.value('nodejs_eventloop_lag_p99_seconds')).toBeGreaterThanOrEqual(0);
    expect(m.value('process_resident_memory_bytes')).toBeGreaterThan(0);
  }, 90_000);

  it('passes promtool check metrics', async () => {
    const gw = await started();
    const ws = await RawWsClient.connect(gw.wsUrl);
    cleanup.push(() => ws.terminate());
    await ws.request({ type: 'subscribe', channel: 'news' });
    await gw.publish('news', 1);
    ws.sendText('{');
    await ws.until((c) => c.ofType('error').length > 0);
    const { text } = await scrape(gw.url);
    // promtool prints every problem and exits non-zero on any.
    const out = execFileSync(PROMTOOL_BIN, ['check', 'metrics'], { input: text, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
    expect(out.trim()).toBe('');
  }, 20_000);

  it('is not served with metrics: false', async () => {
    const off = await started({ metrics: false });
    expect((await fetch(`${off.url}/metrics`)).status).toBe(404);
  });

  it('is scraped by a real Prometheus server, which answers a query about it', async () => {
    const gw = await started();
    for (let i = 0; i < 7; i++) await gw.publish('news', i);
    const prometheus = await startPrometheus({ targets: [`127.0.0.1:${gw.port}`], interval: 300 });
    cleanup.push(() => prometheus.stop());
    await eventually(async () => (await prometheus.targets()).some((t) => t.health === 'up'), 15_000, 'the target up');
    await eventually(async () => (await prometheus.query('tidings_publications_total')).length > 0, 15_000, 'the series');
    const [sample] = await prometheus.query('tidings_publications_total');
    expect(sample?.value[1]).toBe('7');
    expect(sample?.metric.job).toBe('tidings');
    const [up] = await prometheus.query(`up{instance="127.0.0.1:${gw.port}"}`);
    expect(up?.value[1]).toBe('1');
  }, 40_000);
});

describe('refusals', () => {
  it('counts a refusal whichever way it is told: an HTTP error, an SSE stream that says why, a WebSocket closed after its handshake', async () => {
    // One connection at most: while the first is open, the rest are refused (503, when to come back).
    const gw = await started({ maxConnections: 1 });
    const first = await RawWsClient.connect(gw.wsUrl);
    cleanup.push(() => first.terminate());
    expect(await attemptSubscribe(gw.url, 'websocket', 'news')).toMatchObject({ result: 'close', code: 4503 });
    expect(await attemptSubscribe(gw.url, 'sse', 'news')).toMatchObject({ result: 'error', code: 'unavailable' });
    expect(await attemptSubscribe(gw.url, 'poll', 'news')).toMatchObject({ result: 'http', status: 503 });
    const m = await scrape(gw.url);
    expect(m.value('tidings_refusals_total{code="unavailable"}')).toBe(3);
    expect(m.value('tidings_limit_hits_total{code="unavailable"}')).toBe(3);
  });
});

describe('metricsPort', () => {
  it('serves /metrics only on its own port, and nothing else there', async () => {
    const metricsPort = await freePort();
    const gw = await started({ metricsPort });
    expect((await fetch(`${gw.url}/metrics`)).status).toBe(404);
    const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('tidings_connections{transport="websocket"} 0');
    const other = await fetch(`http://127.0.0.1:${metricsPort}/healthz`);
    expect(other.status).toBe(404);
    // Coded as every other refusal: a code and a reason.
    expect(await other.json()).toEqual({ error: { code: 'not_found', reason: 'only GET /metrics is served on this port' } });
    await gw.close();
    // Closed with the gateway.
    await expect(fetch(`http://127.0.0.1:${metricsPort}/metrics`)).rejects.toThrow();
  });

  it('holds a few connections at most, and cuts one that never finishes its request', async () => {
    const metricsPort = await freePort();
    await started({ metricsPort, headersTimeout: 300, requestTimeout: 300 });
    const open = (): Promise<Socket> =>
      new Promise((resolve, reject) => {
        // Read (and drop) what comes, so an answer and the end behind it are seen.
        const socket = connect(metricsPort, '127.0.0.1', () => resolve(socket.resume())).on('error', reject);
      });
    const closed = (socket: Socket): Promise<number> => {
      const at = Date.now();
      return new Promise((resolve) => (socket.destroyed ? resolve(0) : socket.once('close', () => resolve(Date.now() - at))));
    };
    // A head that never ends is cut at headersTimeout (Node's default would hold it for a minute).
    const slow = await open();
    slow.write('GET /metrics HTTP/1.1\r\nhost: x\r\n');
    const slowClosed = closed(slow);
    // Idle connections past the cap are closed as they arrive.
    const idle = await Promise.all(Array.from({ length: 40 }, open));
    const early = await Promise.all(idle.map((s) => Promise.race([closed(s).then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 1000))])));
    expect(early.filter(Boolean).length).toBeGreaterThanOrEqual(8);
    expect(await slowClosed).toBeLessThan(2500);
    for (const s of idle) s.destroy();
  });
});
