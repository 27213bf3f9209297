/**
 * JWT authentication, attacked: every kind of bad token (forged, expired, not yet valid, wrong
 * audience, wrong issuer, `alg: none`, HS/RS confusion, wrong key, garbage, none at all) is refused
 * on every transport with its code, and nothing else changes; a good token reaches exactly the
 * channels it grants (names and `*` patterns) and no other user's; anonymous namespaces stay open;
 * the token is read from the bearer header, the `token` parameter and the cookie; every key kind
 * (HS256 secret, RSA, P-256 and Ed25519 public keys, a JWKS endpoint that rotates its key) works.
 */
import { createServer, type Server } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type JWK, type JWTPayload } from 'jose';
import { attemptSubscribe, signToken, startGateway, TEST_SECRET, type AttemptOutcome, type AttemptTransport, type TestGateway } from '@tidings/testing';
import type { GatewayConfig } from '@tidings/server';

const TRANSPORTS: AttemptTransport[] = ['websocket', 'sse', 'poll'];
const NOW = (): number => Math.floor(Date.now() / 1000);

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function gateway(jwt: NonNullable<GatewayConfig['auth']>['jwt'], extra: GatewayConfig = {}): Promise<TestGateway> {
  const gw = await startGateway({ auth: { jwt }, namespaces: { user: {}, chat: {}, public: { anonymous: true } }, channelLinger: 0, ...extra });
  cleanup.push(() => gw.close());
  return gw;
}

const hs = (claims: JWTPayload, secret = TEST_SECRET): Promise<string> => signToken(claims, { secret });

const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');
const ALICE = { sub: 'alice', channels: ['user:alice', 'chat:*'] };

/** What the gateway holds: a refused attempt leaves nothing behind. */
const holding = (gw: TestGateway): unknown => {
  const { sessions, hub } = gw.gateway.stats();
  return { sessions, hub: { channels: hub.channels, subscribers: hub.subscribers } };
};

/** How a refused token shows on each transport: 401 with the code on HTTP; close 4401 / 4403 on WebSocket. */
const refusedAs = (transport: AttemptTransport, code: 'unauthorized' | 'token_expired'): AttemptOutcome =>
  transport === 'websocket' ? { result: 'close', code: code === 'token_expired' ? 4403 : 4401 } : { result: 'http', status: 401, code };

describe('bad tokens are refused on every transport, and change nothing', () => {
  it.each(TRANSPORTS)('%s', async (transport) => {
    const gw = await gateway({ secret: TEST_SECRET, audience: 'tidings', issuer: 'https://auth.example' });
    const good = { ...ALICE, aud: 'tidings', iss: 'https://auth.example' };
    const { privateKey } = await generateKeyPair('RS256');
    const cases: Array<[string, string, 'unauthorized' | 'token_expired']> = [
      ['forged (another secret)', await hs(good, 'another-secret-that-is-also-32-bytes-long'), 'unauthorized'],
      ['expired', await hs({ ...good, exp: NOW() - 60 }), 'token_expired'],
      ['not yet valid', await hs({ ...good, nbf: NOW() + 600 }), 'unauthorized'],
      ['wrong audience', await hs({ ...good, aud: 'someone-else' }), 'unauthorized'],
      ['wrong issuer', await hs({ ...good, iss: 'https://evil.example' }), 'unauthorized'],
      ['alg none', `${b64({ alg: 'none', typ: 'JWT' })}.${b64(good)}.`, 'unauthorized'],
      ['RS256 where HS256 is configured', await new SignJWT(good).setProtectedHeader({ alg: 'RS256' }).sign(privateKey), 'unauthorized'],
      ['tampered claims', (await hs(good)).replace(/^([^.]+)\.([^.]+)\./, (_m, h: string) => `${h}.${b64({ ...good, channels: ['*'] })}.`), 'unauthorized'],
      ['no sub', await hs({ channels: ['chat:*'], aud: 'tidings', iss: 'https://auth.example' }), 'unauthorized'],
      // 2,110 characters of JSON but 4,210 bytes: the 4 KiB bound on info counts bytes.
      ['info over 4 KiB', await hs({ ...good, info: { bio: 'é'.repeat(2100) } }), 'unauthorized'],
      ['garbage', 'not.a.token', 'unauthorized'],
    ];
    for (const [name, token, code] of cases) {
      const outcome = await attemptSubscribe(gw.url, transport, 'chat:lobby', { token });
      expect({ name, outcome }).toEqual({ name, outcome: refusedAs(transport, code) });
    }
    // A valid token gets in: the refusals were about the tokens.
    expect(await attemptSubscribe(gw.url, transport, 'chat:lobby', { token: await hs(good) })).toEqual({ result: 'subscribed' });
    // No token at all: only anonymous namespaces.
    expect(await attemptSubscribe(gw.url, transport, 'chat:lobby')).toEqual(transport === 'websocket' ? { result: 'error', code: 'forbidden' } : { result: 'http', status: 403, code: 'forbidden' });
    expect(await attemptSubscribe(gw.url, transport, 'public:news')).toEqual({ result: 'subscribed' });
    await expect.poll(() => holding(gw), { timeout: 3000 }).toEqual({ sessions: 0, hub: { channels: 0, subscribers: 0 } });
  });

  it('refuses HS256 signed with the RSA public key (algorithm confusion) when a public key is configured', async () => {
    const { publicKey, privateKey } = await generateKeyPair('RS256');
    const pem = await exportSPKI(publicKey);
    const gw = await gateway({ publicKey: pem });
    const confused = await hs(ALICE, pem);
    for (const transport of TRANSPORTS) {
      expect(await attemptSubscribe(gw.url, transport, 'chat:lobby', { token: confused })).toEqual(refusedAs(transport, 'unauthorized'));
      const other = (await generateKeyPair('RS256')).privateKey;
      const wrongKey = await new SignJWT(ALICE).setProtectedHeader({ alg: 'RS256' }).sign(other);
      expect(await attemptSubscribe(gw.url, transport, 'chat:lobby', { token: wrongKey })).toEqual(refusedAs(transport, 'unauthorized'));
      const right = await new SignJWT(ALICE).setProtectedHeader({ alg: 'RS256' }).sign(privateKey);
      expect(await attemptSubscribe(gw.url, transport, 'chat:lobby', { token: right })).toEqual({ result: 'subscribed' });
    }
  });

  it('refuses a connection without a token when no namespace is anonymous', async () => {
    const gw = await startGateway({ auth: { jwt: { secret: TEST_SECRET } }, channelLinger: 0 });
    cleanup.push(() => gw.close());
    for (const transport of TRANSPORTS) expect(await attemptSubscribe(gw.url, transport, 'news')).toEqual(refusedAs(transport, 'unauthorized'));
  });
});

describe('a good token reaches exactly what it grants', () => {
  it.each(TRANSPORTS)("%s: its own channels and patterns, never another user's", async (transport) => {
    const gw = await gateway({ secret: TEST_SECRET });
    const alice = await hs(ALICE);
    const forbidden = transport === 'websocket' ? { result: 'error', code: 'forbidden' } : { result: 'http', status: 403, code: 'forbidden' };
    expect(await attemptSubscribe(gw.url, transport, 'user:alice', { token: alice })).toEqual({ result: 'subscribed' });
    expect(await attemptSubscribe(gw.url, transport, 'chat:room1', { token: alice })).toEqual({ result: 'subscribed' });
    expect(await attemptSubscribe(gw.url, transport, 'public:news', { token: alice })).toEqual({ result: 'subscribed' });
    for (const other of ['user:bob', 'user:alice2', 'user:alic', 'chat']) {
      expect({ other, outcome: await attemptSubscribe(gw.url, transport, other, { token: alice }) }).toEqual({ other, outcome: forbidden });
    }
  });

  it('reads the token from the bearer header, the token parameter and the cookie (auth.cookie)', async () => {
    const gw = await startGateway({ auth: { jwt: { secret: TEST_SECRET }, cookie: 'session_jwt' }, namespaces: { user: {} }, channelLinger: 0 });
    cleanup.push(() => gw.close());
    const alice = await hs(ALICE);
    expect(await attemptSubscribe(gw.url, 'sse', 'user:alice', { token: alice, header: true })).toEqual({ result: 'subscribed' });
    expect(await attemptSubscribe(gw.url, 'sse', 'user:alice', { token: alice })).toEqual({ result: 'subscribed' });
    for (const transport of TRANSPORTS) {
      expect(await attemptSubscribe(gw.url, transport, 'user:alice', { cookie: `theme=dark; session_jwt=${alice}` })).toEqual({ result: 'subscribed' });
      expect(await attemptSubscribe(gw.url, transport, 'user:alice', { cookie: `tidings_token=${alice}` })).toEqual(refusedAs(transport, 'unauthorized'));
    }
  });
});

describe('public keys and JWKS', () => {
  it.each([
    ['RS256', 'RS256'],
    ['ES256', 'ES256'],
    ['EdDSA', 'Ed25519'],
  ] as const)('accepts %s tokens with a PEM public key, and only that algorithm', async (alg, kind) => {
    const { publicKey, privateKey } = await generateKeyPair(kind);
    const gw = await gateway({ publicKey: await exportSPKI(publicKey) });
    const token = await new SignJWT(ALICE).setProtectedHeader({ alg }).sign(privateKey);
    expect(await attemptSubscribe(gw.url, 'sse', 'user:alice', { token })).toEqual({ result: 'subscribed' });
    expect(await attemptSubscribe(gw.url, 'sse', 'user:alice', { token: await hs(ALICE) })).toEqual(refusedAs('sse', 'unauthorized'));
  });

  it('follows a JWKS endpoint that rotates its key: a new kid is fetched, a retired one refused', async () => {
    const first = await generateKeyPair('RS256');
    const second = await generateKeyPair('RS256');
    const jwk = async (key: CryptoKey, kid: string): Promise<JWK> => ({ ...(await exportJWK(key)), kid, alg: 'RS256', use: 'sig' });
    let keys: JWK[] = [await jwk(first.publicKey, 'k1')];
    let fetches = 0;
    const server: Server = createServer((_req, res) => {
      fetches += 1;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys }));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanup.push(() => new Promise((r) => server.close(r)));
    const address = server.address();
    const port = typeof address === 'object' && address !== null ? address.port : 0;
    const gw = await gateway({ jwksUrl: `http://127.0.0.1:${port}/jwks.json`, jwksCooldown: 0 });
    const sign = (key: CryptoKey, kid: string): Promise<string> => new SignJWT(ALICE).setProtectedHeader({ alg: 'RS256', kid }).sign(key);

    expect(await attemptSubscribe(gw.url, 'poll', 'user:alice', { token: await sign(first.privateKey, 'k1') })).toEqual({ result: 'subscribed' });
    expect(await attemptSubscribe(gw.url, 'poll', 'user:alice', { token: await sign(first.privateKey, 'k1') })).toEqual({ result: 'subscribed' });
    expect(fetches).toBe(1);
    // Rotation: the issuer signs with k2 and stops publishing k1.
    keys = [await jwk(second.publicKey, 'k2')];
    expect(await attemptSubscribe(gw.url, 'poll', 'user:alice', { token: await sign(second.privateKey, 'k2') })).toEqual({ result: 'subscribed' });
    expect(fetches).toBe(2);
    expect(await attemptSubscribe(gw.url, 'poll', 'user:alice', { token: await sign(first.privateKey, 'k1') })).toEqual(refusedAs('poll', 'unauthorized'));
    // A k2 token signed by the retired key does not verify either.
    expect(await attemptSubscribe(gw.url, 'poll', 'user:alice', { token: await sign(first.privateKey, 'k2') })).toEqual(refusedAs('poll', 'unauthorized'));
  });

  it('tells every transport "not now" while the JWKS endpoint cannot be reached; a WebSocket by a close code a browser can read', async () => {
    const { privateKey } = await generateKeyPair('RS256');
    const dead = createServer();
    await new Promise<void>((r) => dead.listen(0, '127.0.0.1', r));
    const address = dead.address();
    const port = typeof address === 'object' && address !== null ? address.port : 0;
    await new Promise((r) => dead.close(r));
    const gw = await gateway({ jwksUrl: `http://127.0.0.1:${port}/jwks.json` });
    const token = await new SignJWT(ALICE).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).sign(privateKey);
    // 1013: come back with backoff. An HTTP 503 before the handshake reads as a blocked WebSocket
    // (1006) in a browser, and a client would fall back to SSE for good.
    expect(await attemptSubscribe(gw.url, 'websocket', 'user:alice', { token })).toEqual({ result: 'close', code: 1013 });
    expect(await attemptSubscribe(gw.url, 'sse', 'user:alice', { token })).toEqual({ result: 'error', code: 'unavailable' });
    expect(await attemptSubscribe(gw.url, 'poll', 'user:alice', { token })).toEqual({ result: 'http', status: 503, code: 'unavailable' });
  });
});

describe('configuration', () => {
  it('names every problem of a JWT configuration at start', async () => {
    const { resolveOptions } = await import('@tidings/server');
    expect(() => resolveOptions({ auth: { jwt: {} } })).toThrow(/exactly one of secret, publicKey and jwksUrl/);
    expect(() => resolveOptions({ auth: { jwt: { secret: 'short' } } })).toThrow(/at least 32 bytes/);
    expect(() => resolveOptions({ auth: { jwt: { secret: TEST_SECRET, jwksUrl: 'https://x/jwks' } } })).toThrow(/exactly one/);
    expect(() => resolveOptions({ auth: { jwt: { jwksUrl: 'ftp://x' } } })).toThrow(/http\(s\) URL/);
    expect(() => resolveOptions({ auth: { cookie: 'a b' } })).toThrow(/cookie name/);
  });

  it('takes the key from TIDINGS_JWT_SECRET or TIDINGS_JWKS_URL, keeping the rest of auth.jwt', async () => {
    const { loadConfig } = await import('@tidings/server');
    expect(loadConfig({ env: { TIDINGS_JWT_SECRET: TEST_SECRET } }).auth.jwt).toEqual({ secret: TEST_SECRET });
    expect(loadConfig({ env: { TIDINGS_JWKS_URL: 'https://auth.example/jwks.json' } }).auth.jwt).toEqual({ jwksUrl: 'https://auth.example/jwks.json' });
    expect(loadConfig({ env: {} }).auth).toEqual({ cookie: 'tidings_token' });
  });
});
