/**
 * Origins: a token in a cookie counts only from the gateway's own origin, a request with no Origin,
 * or an allowed origin (a browser adds cookies to requests any site makes); with `allowedOrigins`,
 * WebSocket upgrades from other origins are refused whatever their credentials; CORS names the origin
 * with credentials only when it is allowed (never `*` with credentials) and exposes Retry-After.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { attemptSubscribe, signToken, startGateway, TEST_SECRET, type AttemptTransport, type TestGateway } from '@tidings/testing';
import type { GatewayConfig } from '@tidings/server';

const TRANSPORTS: AttemptTransport[] = ['websocket', 'sse', 'poll'];
const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function gateway(extra: GatewayConfig = {}): Promise<TestGateway> {
  const gw = await startGateway({ auth: { jwt: { secret: TEST_SECRET } }, namespaces: { user: {} }, channelLinger: 0, ...extra });
  cleanup.push(() => gw.close());
  return gw;
}
const alice = (): Promise<string> => signToken({ sub: 'alice', channels: ['user:alice'] });
const forbidden = (_t: AttemptTransport): unknown => ({ result: 'http', status: 403, code: 'forbidden' });

describe('a token in a cookie', () => {
  it.each(TRANSPORTS)('%s: refused from another site, accepted from the own origin or without Origin', async (transport) => {
    const gw = await gateway();
    const cookie = `tidings_token=${await alice()}`;
    expect(await attemptSubscribe(gw.url, transport, 'user:alice', { cookie, origin: 'https://evil.example' })).toEqual(forbidden(transport));
    expect(await attemptSubscribe(gw.url, transport, 'user:alice', { cookie, origin: gw.url })).toEqual({ result: 'subscribed' });
    expect(await attemptSubscribe(gw.url, transport, 'user:alice', { cookie })).toEqual({ result: 'subscribed' });
    // A token the page itself sends (header or parameter) is not something another site can borrow.
    expect(await attemptSubscribe(gw.url, transport, 'user:alice', { token: await alice(), origin: 'https://other.example' })).toEqual({ result: 'subscribed' });
    await expect.poll(() => gw.gateway.stats().sessions, { timeout: 3000 }).toBe(0);
  });

  it('is accepted from an allowed origin', async () => {
    const gw = await gateway({ allowedOrigins: ['https://app.example'] });
    const cookie = `tidings_token=${await alice()}`;
    for (const transport of TRANSPORTS) {
      expect(await attemptSubscribe(gw.url, transport, 'user:alice', { cookie, origin: 'https://app.example' })).toEqual({ result: 'subscribed' });
      expect(await attemptSubscribe(gw.url, transport, 'user:alice', { cookie, origin: 'https://app.example.evil' })).toEqual(forbidden(transport));
    }
  });
});

describe('allowedOrigins', () => {
  it('refuses WebSocket upgrades from other origins, whatever the credentials, with 403 before the upgrade', async () => {
    const gw = await gateway({ allowedOrigins: ['https://app.example', 'http://localhost:3000'] });
    const token = await alice();
    expect(await attemptSubscribe(gw.url, 'websocket', 'user:alice', { token, origin: 'https://evil.example' })).toEqual(forbidden('websocket'));
    expect(await attemptSubscribe(gw.url, 'websocket', 'user:alice', { token, origin: 'https://app.example' })).toEqual({ result: 'subscribed' });
    expect(await attemptSubscribe(gw.url, 'websocket', 'user:alice', { token, origin: 'http://localhost:3000' })).toEqual({ result: 'subscribed' });
    expect(await attemptSubscribe(gw.url, 'websocket', 'user:alice', { token })).toEqual({ result: 'subscribed' });
  });

  it('answers CORS with the allowed origin and credentials, never * with credentials, and exposes Retry-After', async () => {
    const open = await gateway();
    const r1 = await fetch(`${open.url}/poll?channel=user:alice&timeout=0`, { headers: { origin: 'https://any.example' } });
    expect(r1.headers.get('access-control-allow-origin')).toBe('*');
    expect(r1.headers.get('access-control-allow-credentials')).toBeNull();
    expect(r1.headers.get('access-control-expose-headers')).toContain('retry-after');

    const gw = await gateway({ allowedOrigins: ['https://app.example'] });
    const pre = await fetch(`${gw.url}/sse`, { method: 'OPTIONS', headers: { origin: 'https://app.example', 'access-control-request-method': 'GET' } });
    expect(pre.status).toBe(204);
    expect(pre.headers.get('access-control-allow-origin')).toBe('https://app.example');
    expect(pre.headers.get('access-control-allow-credentials')).toBe('true');
    expect(pre.headers.get('vary')).toContain('origin');
    expect(pre.headers.get('access-control-allow-headers')).toContain('authorization');
    const foreign = await fetch(`${gw.url}/sse`, { method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'GET' } });
    expect(foreign.headers.get('access-control-allow-origin')).toBeNull();
    expect(foreign.headers.get('access-control-allow-credentials')).toBeNull();
  });

  it('is validated, and read from TIDINGS_ALLOWED_ORIGINS as a comma-separated list', async () => {
    const { loadConfig, resolveOptions } = await import('@tidings/server');
    expect(() => resolveOptions({ allowedOrigins: ['app.example'] })).toThrow(/allowedOrigins/);
    expect(() => resolveOptions({ allowedOrigins: ['https://app.example/path'] })).toThrow(/allowedOrigins/);
    expect(loadConfig({ env: { TIDINGS_ALLOWED_ORIGINS: 'https://a.example, https://b.example' } }).allowedOrigins).toEqual(['https://a.example', 'https://b.example']);
  });
});
