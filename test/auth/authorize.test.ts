/**
 * Authorization hooks for host code, asked after the authenticator allowed: async `subscribe` and
 * `publish` hooks from the host (`authorize`), from a module path (`authHook`, what `--auth-hook`
 * sets), and an HTTP callout (`auth.proxy.url`) for backends not written in Node. A refusal is
 * `forbidden` (403 / an `error` frame, the connection stays), a failing hook or an unreachable
 * callout is `unavailable` (never a silent allow), and an allowed request works as before.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { AuthorizeHooks, GatewayConfig } from '@tidings/server';
import { attemptSubscribe, RawWsClient, startGateway, type AttemptTransport, type TestGateway } from '@tidings/testing';

const TRANSPORTS: AttemptTransport[] = ['websocket', 'sse', 'poll'];
const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function gateway(config: GatewayConfig, authorize?: AuthorizeHooks): Promise<TestGateway> {
  const gw = await startGateway({ namespaces: { room: { clientPublish: true } }, channelLinger: 0, ...config }, authorize === undefined ? {} : { authorize });
  cleanup.push(() => gw.close());
  return gw;
}
/** WebSocket refusals come as errors; SSE's `unavailable` as an event stream (a plain EventSource then retries); the rest as HTTP errors. */
const refusedAs = (t: AttemptTransport, code: string, status: number): unknown =>
  t === 'websocket' || (t === 'sse' && code === 'unavailable') ? { result: 'error', code } : { result: 'http', status, code };

/** Checks one gateway whose hooks refuse room:closed (subscribe), room:readonly (publish) and fail on room:broken. */
async function checkHooks(gw: TestGateway): Promise<void> {
  for (const t of TRANSPORTS) {
    expect(await attemptSubscribe(gw.url, t, 'room:open')).toEqual({ result: 'subscribed' });
    expect(await attemptSubscribe(gw.url, t, 'room:closed')).toEqual(refusedAs(t, 'forbidden', 403));
    expect(await attemptSubscribe(gw.url, t, 'room:broken')).toEqual(refusedAs(t, 'unavailable', 503));
  }
  const c = await RawWsClient.connect(gw.wsUrl);
  cleanup.push(() => c.terminate());
  expect(await c.request({ type: 'publish', message: { channel: 'room:readonly', data: 1 } })).toMatchObject({ type: 'error', error: { code: 'forbidden' } });
  expect(await c.request({ type: 'publish', message: { channel: 'room:open', data: { n: 1 } } })).toMatchObject({ type: 'reply' });
  // The server API is never asked.
  await gw.publish('room:readonly', 'from the backend');
  const send = await fetch(`${gw.url}/send`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"channel":"room:readonly","data":2}' });
  expect(send.status).toBe(403);
}

const decide = (channel: string): boolean => {
  if (channel === 'room:broken') throw new Error('the permission service is down');
  return channel !== 'room:closed';
};

describe('authorization hooks', () => {
  it('a failing hook refuses an SSE stream with a stream a plain EventSource retries (retry: 1-2 s), not an HTTP error', async () => {
    const gw = await gateway({}, { subscribe: (_identity, channel) => decide(channel) });
    const retries = new Set<number>();
    for (let i = 0; i < 5; i++) {
      const res = await fetch(`${gw.url}/sse?channel=room:broken`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
      const text = await res.text();
      const retry = Number(/^retry: (\d+)$/m.exec(text)?.[1]);
      expect(retry).toBeGreaterThanOrEqual(1000);
      expect(retry).toBeLessThan(2000);
      retries.add(retry);
      expect(JSON.parse(/event: tidings:error\ndata: (.*)\n/.exec(text)?.[1] ?? '{}')).toMatchObject({ code: 'unavailable' });
    }
    // Spread, so that the streams one failure refused do not all come back at once.
    expect(retries.size).toBeGreaterThan(1);
    // A refusal that will not change on retry stays an HTTP error.
    expect((await fetch(`${gw.url}/sse?channel=room:closed`)).status).toBe(403);
  });

  it('from host code: async subscribe and publish hooks, asked with the identity and the data', async () => {
    const seen: string[] = [];
    const gw = await gateway(
      {},
      {
        subscribe: async (identity, channel) => {
          await new Promise((r) => setTimeout(r, 5));
          seen.push(`subscribe ${identity.anonymous ? 'anonymous' : identity.user} ${channel}`);
          return decide(channel);
        },
        publish: (_identity, channel, data) => {
          seen.push(`publish ${channel} ${data}`);
          return channel !== 'room:readonly';
        },
      },
    );
    await checkHooks(gw);
    expect(seen).toContain('subscribe anonymous room:closed');
    expect(seen).toContain('publish room:open {"n":1}');
    expect(seen.some((s) => s.includes('from the backend'))).toBe(false);
  });

  it('from a module path (authHook, --auth-hook)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tidings-authz-'));
    const path = join(dir, 'authz.mjs');
    writeFileSync(
      path,
      `export async function subscribe(identity, channel) {
  if (channel === 'room:broken') throw new Error('down');
  return channel !== 'room:closed';
}
export const publish = (identity, channel) => channel !== 'room:readonly';
`,
    );
    await checkHooks(await gateway({ authHook: path }));
  });

  it('from an HTTP callout (auth.proxy.url), with its reason; a slow or failing service is unavailable', async () => {
    const calls: unknown[] = [];
    const server: Server = createServer((req, res) => {
      if (req.url === '/login') return void res.writeHead(200, { 'content-type': 'text/html' }).end('<form>sign in</form>');
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        const ask = JSON.parse(body) as { action: string; channel: string };
        calls.push(ask);
        if (ask.channel === 'room:broken') return void res.writeHead(500).end();
        // A redirect (to a login page that answers 200) is no answer.
        if (ask.channel === 'room:moved') return void res.writeHead(302, { location: '/login' }).end();
        if (ask.channel === 'room:slow') return void setTimeout(() => res.writeHead(200).end(), 1500);
        const refused = (ask.action === 'subscribe' && ask.channel === 'room:closed') || (ask.action === 'publish' && ask.channel === 'room:readonly');
        if (refused) res.writeHead(403, { 'content-type': 'application/json' }).end('{"reason":"members only"}');
        else res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanup.push(() => new Promise((r) => server.close(r)));
    const address = server.address();
    const port = typeof address === 'object' && address !== null ? address.port : 0;
    const gw = await gateway({ auth: { proxy: { url: `http://127.0.0.1:${port}/authorize`, timeout: 500 } } });
    await checkHooks(gw);
    expect(await attemptSubscribe(gw.url, 'poll', 'room:slow')).toEqual({ result: 'http', status: 503, code: 'unavailable' });
    expect(await attemptSubscribe(gw.url, 'poll', 'room:moved')).toEqual({ result: 'http', status: 503, code: 'unavailable' });
    const refused = await fetch(`${gw.url}/poll?channel=room:closed&timeout=0`);
    expect(((await refused.json()) as { error: { reason: string } }).error.reason).toBe('members only');
    expect(calls).toContainEqual({ action: 'subscribe', user: '', anonymous: true, channel: 'room:closed' });
  });

  it('host hooks and a module together: each must answer true, and a hook that answers nothing refuses, as alone', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tidings-authz-'));
    const path = join(dir, 'authz.mjs');
    writeFileSync(path, `export const publish = (identity, channel) => channel !== 'room:readonly';\n`);
    const host: AuthorizeHooks = {
      // Answers nothing (undefined) for what it does not allow, as a careless hook may.
      subscribe: ((_identity: unknown, channel: string) => (channel === 'room:closed' ? undefined : decide(channel))) as AuthorizeHooks['subscribe'],
    };
    const alone = await gateway({}, host);
    const both = await gateway({ authHook: path }, host);
    for (const gw of [alone, both]) {
      for (const t of TRANSPORTS) {
        expect(await attemptSubscribe(gw.url, t, 'room:open')).toEqual({ result: 'subscribed' });
        expect(await attemptSubscribe(gw.url, t, 'room:closed')).toEqual(refusedAs(t, 'forbidden', 403));
      }
    }
    await checkHooks(both);
  });
});
