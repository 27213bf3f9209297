/**
 * Starts a real gateway in this process on a free loopback port, with a known API key and
 * quiet logs, and a helper to publish through the real HTTP API.
 * @module
 */
import { request } from 'node:http';
import type { PublishRequest, PublishResult } from '@tidings/protocol';
import { createGateway, type Gateway, type GatewayConfig, type GatewayParts } from '@tidings/server';

export const TEST_API_KEY = 'test-api-key-0123456789abcdef';

export interface TestGateway {
  readonly gateway: Gateway;
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  /** `ws://127.0.0.1:<port>/ws` */
  readonly wsUrl: string;
  readonly port: number;
  /** Publishes through `POST /api/publish`; throws on a non-2xx reply. */
  publish(channel: string, data: unknown, extra?: Partial<PublishRequest>): Promise<PublishResult>;
  close(): Promise<void>;
}

/**
 * One JSON POST on a fresh connection (no keep-alive pool), so a publish right after a gateway
 * restart on the same port never lands on a socket the old gateway closed.
 */
export function postOnce(url: string, body: string, headers: Record<string, string> = { authorization: `Bearer ${TEST_API_KEY}` }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method: 'POST', agent: false, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * Rate and connection limits are off in the kit's gateways (every test client comes from one
 * address, fast), and closing one closes its connections at once: the tests of the limits and of the
 * drain turn on what they check.
 */
export const KIT_OPTIONS: GatewayConfig = Object.freeze({
  maxConnectRate: 10_000_000,
  maxConnectRatePerIp: 0,
  maxConnectionsPerIp: 0,
  maxConnectionsPerUser: 0,
  maxFrameRate: 10_000_000,
  maxPublishRate: 10_000_000,
  maxChannelPublishRate: 0,
  // Closing a test gateway closes its connections at once.
  drainWindow: 0,
});

/** Starts a gateway on 127.0.0.1 and a free port. */
export async function startGateway(config: GatewayConfig = {}, parts: GatewayParts = {}): Promise<TestGateway> {
  const gateway = createGateway({ logLevel: 'silent', apiKey: TEST_API_KEY, host: '127.0.0.1', port: 0, ...KIT_OPTIONS, ...config }, parts);
  const { port } = await gateway.listen();
  const url = `http://127.0.0.1:${port}`;
  return {
    gateway,
    url,
    wsUrl: `ws://127.0.0.1:${port}/ws`,
    port,
    async publish(channel, data, extra = {}) {
      const { status, body } = await postOnce(`${url}/api/publish`, JSON.stringify({ channel, data, ...extra }));
      if (status !== 200) throw new Error(`publish failed: ${status} ${body}`);
      return JSON.parse(body) as PublishResult;
    },
    close: () => gateway.close(),
  };
}
