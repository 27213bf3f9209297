/**
 * The client SDK as tests drive it: Node's `ws` for WebSocket, nothing remembered between clients,
 * short backoff and timeouts so reconnects happen within a test.
 * @module
 */
import { createClient, type Client, type ClientOptions, type TransportName, type WebSocketConstructor } from '@tidings/client';
import WebSocket from 'ws';

/** Options of a test client on one transport; `options` override them. */
export function testClientOptions(kind: TransportName, options: ClientOptions = {}): ClientOptions {
  return {
    transports: [kind],
    WebSocket: WebSocket as unknown as WebSocketConstructor,
    storage: null,
    backoff: { min: 50, max: 300 },
    openTimeout: 3000,
    heartbeatSlack: 300,
    pollTimeout: 1000,
    ...options,
  };
}

/** A client of `url` on one transport with test options. */
export function testClient(url: string, kind: TransportName, options: ClientOptions = {}): Client {
  return createClient(url, testClientOptions(kind, options));
}

/** A {@link testClient} that `cleanup` (a list from `cleanupAfterEach`) closes after the test. */
export function ownedTestClient(cleanup: Array<() => unknown>, url: string, kind: TransportName, options: ClientOptions = {}): Client {
  const c = testClient(url, kind, options);
  cleanup.push(() => c.close());
  return c;
}
