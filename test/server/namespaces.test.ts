/**
 * Namespace lookup reads configured namespaces only: a channel whose namespace is named after a
 * property every object has (`constructor`, `__proto__`, `toString`, ...) is as unknown as any other
 * unconfigured one, on every transport and for every publisher, when auth grants every channel.
 */
import { expect, it } from 'vitest';
import { attemptSubscribe, cleanupAfterEach, postOnce, RawWsClient, startGateway, type AttemptTransport } from '@tidings/testing';

const cleanup = cleanupAfterEach();
const TRANSPORTS: AttemptTransport[] = ['websocket', 'sse', 'poll'];
const NAMES = ['constructor', '__proto__', 'toString', 'valueOf', 'hasOwnProperty', 'nope'];

it.each(NAMES)('%s:x is an unknown namespace to subscribers, clients that publish and the server API', async (name) => {
  const gw = await startGateway({ namespaces: { chat: { clientPublish: true } } });
  cleanup.push(() => gw.close());
  const channel = `${name}:x`;
  for (const t of TRANSPORTS) {
    expect(await attemptSubscribe(gw.url, t, channel)).toEqual(t === 'websocket' ? { result: 'error', code: 'unknown_namespace' } : { result: 'http', status: 404, code: 'unknown_namespace' });
  }
  const c = await RawWsClient.connect(gw.wsUrl);
  cleanup.push(() => c.terminate());
  expect(await c.request({ type: 'publish', message: { channel, data: 1 } })).toMatchObject({ type: 'error', error: { code: 'unknown_namespace' } });
  const api = await postOnce(`${gw.url}/api/publish`, JSON.stringify({ channel, data: 1 }));
  expect(api.status).toBe(404);
  expect(JSON.parse(api.body)).toMatchObject({ error: { code: 'unknown_namespace' } });
  // The configured namespace beside them works.
  expect(await attemptSubscribe(gw.url, 'poll', 'chat:x')).toEqual({ result: 'subscribed' });
});
