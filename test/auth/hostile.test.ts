/**
 * Hostile input on the paths the guardrails added: `POST /refresh`, `POST /api/disconnect`, the
 * `refresh` frame, and tokens in the bearer header, the `token` parameter and the cookie, with any
 * Origin. Every input gets a coded answer (never a 5xx or a crash), nothing is held afterwards, and
 * a well-behaved client on the same gateway is not disturbed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { isErrorCode } from '@tidings/protocol';
import { postOnce, RawWsClient, signToken, startGateway, TEST_API_KEY, TEST_SECRET, type TestGateway } from '@tidings/testing';

let gw: TestGateway;
let bystander: RawWsClient;
beforeAll(async () => {
  gw = await startGateway({ auth: { jwt: { secret: TEST_SECRET } }, namespaces: { user: {}, public: { anonymous: true } }, channelLinger: 0 });
  const token = await signToken({ sub: 'alice', channels: ['user:alice'] });
  bystander = await RawWsClient.connect(`${gw.wsUrl}?token=${token}`);
  await bystander.request({ type: 'subscribe', channel: 'user:alice' });
});
afterAll(async () => {
  bystander?.terminate();
  await gw?.close();
});

/** A coded JSON error body, or a success. */
function coded(status: number, body: string): boolean {
  if (status >= 500) return false;
  if (status < 300) return true;
  try {
    return isErrorCode((JSON.parse(body) as { error?: { code?: unknown } }).error?.code);
  } catch {
    return false;
  }
}

const anyJsonText = fc.oneof(
  fc.json(),
  fc.string(),
  fc.record({ session: fc.oneof(fc.string(), fc.integer(), fc.constant(null)), token: fc.oneof(fc.string({ maxLength: 20_000 }), fc.integer(), fc.constant(null)) }).map((v) => JSON.stringify(v)),
  fc.record({ user: fc.oneof(fc.string({ maxLength: 400 }), fc.integer(), fc.array(fc.string())), reason: fc.oneof(fc.string({ maxLength: 300 }), fc.integer()) }).map((v) => JSON.stringify(v)),
);
const headerText = fc.string({ maxLength: 200 }).map((s) => s.replace(/[^\x20-\x7e]/g, 'x'));

describe('hostile input on the guardrails paths', () => {
  it('POST /refresh and POST /api/disconnect answer any body with a code', async () => {
    await fc.assert(
      fc.asyncProperty(anyJsonText, fc.boolean(), async (body, withKey) => {
        const refresh = await postOnce(`${gw.url}/refresh`, body, {});
        expect(coded(refresh.status, refresh.body), `/refresh ${refresh.status} ${refresh.body}`).toBe(true);
        const disconnect = await postOnce(`${gw.url}/api/disconnect`, body, withKey ? { authorization: `Bearer ${TEST_API_KEY}` } : {});
        expect(coded(disconnect.status, disconnect.body), `/api/disconnect ${disconnect.status} ${disconnect.body}`).toBe(true);
      }),
      { numRuns: 60 },
    );
  });

  it('tokens in the header, the parameter and the cookie, with any Origin, get a code', async () => {
    await fc.assert(
      fc.asyncProperty(headerText, headerText, headerText, fc.constantFrom('user:alice', 'public:news', 'user:bob'), async (token, cookie, origin, channel) => {
        const headers: Record<string, string> = { authorization: `Bearer ${token}`, cookie: `tidings_token=${cookie}`, origin };
        for (const path of [`/poll?channel=${channel}&timeout=0&token=${encodeURIComponent(token)}`, `/sse?channel=${channel}`]) {
          const ac = new AbortController();
          const res = await fetch(`${gw.url}${path}`, { headers, signal: ac.signal });
          const body = res.headers.get('content-type')?.startsWith('text/event-stream') === true ? '' : await res.text();
          ac.abort();
          expect(res.status === 200 || coded(res.status, body), `${path} ${res.status} ${body}`).toBe(true);
        }
      }),
      { numRuns: 40 },
    );
  });

  it('refresh frames of any shape get a coded error, and the connection stays usable', async () => {
    const c = await RawWsClient.connect(`${gw.wsUrl}?token=${encodeURIComponent(await signToken({ sub: 'alice', channels: [] }))}`);
    try {
      await fc.assert(
        fc.asyncProperty(fc.oneof(fc.string({ maxLength: 20_000 }), fc.integer(), fc.constant(null), fc.array(fc.string())), async (token) => {
          const reply = await c.request({ type: 'refresh', token } as never);
          expect(reply.type).toBe('error');
          expect(reply.type === 'error' && isErrorCode(reply.error.code)).toBe(true);
        }),
        // Malformed frames count towards maxBadFrames (20 a minute), past which the connection is closed 4003.
        { numRuns: 15 },
      );
      expect(await c.request({ type: 'ping' })).toMatchObject({ type: 'pong' });
    } finally {
      c.terminate();
    }
    // The bystander was never touched, and nothing the attacks opened is left.
    expect(bystander.closed).toBe(false);
    await gw.publish('user:alice', 'still here');
    await bystander.until((x) => x.ofType('message').length >= 1);
    await expect.poll(() => gw.gateway.stats().sessions, { timeout: 3000 }).toBe(1);
  });
});
