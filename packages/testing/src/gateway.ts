/**
 * Starts a real gateway in this process on a free loopback port, with a known API key and
 * quiet logs, and a helper to publish through the real HTTP API.
 * @module
 */
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

/** Starts a gateway on 127.0.0.1 and a free port. */
export async function startGateway(config: GatewayConfig = {}, parts: GatewayParts = {}): Promise<TestGateway> {
  const gateway = createGateway({ logLevel: 'silent', apiKey: TEST_API_KEY, host: '127.0.0.1', port: 0, ...config }, parts);
  const { port } = await gateway.listen();
  const url = `http://127.0.0.1:${port}`;
  return {
    gateway,
    url,
    wsUrl: `ws://127.0.0.1:${port}/ws`,
    port,
    async publish(channel, data, extra = {}) {
      const res = await fetch(`${url}/api/publish`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${TEST_API_KEY}` },
        body: JSON.stringify({ channel, data, ...extra }),
      });
      const body = (await res.json()) as PublishResult;
      if (!res.ok) throw new Error(`publish failed: ${res.status} ${JSON.stringify(body)}`);
      return body;
    },
    close: () => gateway.close(),
  };
}
