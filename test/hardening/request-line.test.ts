/**
 * Finding 1: a request target that `new URL()` cannot parse must get a 400, on plain requests and on
 * WebSocket upgrades, and the gateway keeps serving everyone else.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawRequest, startGateway, type TestGateway } from '@tidings/testing';

let gw: TestGateway;
beforeAll(async () => {
  gw = await startGateway();
});
afterAll(async () => {
  await gw.close();
});

const TARGETS = ['http://[/', 'http://a:99999/', 'http://%zz/', '//[', 'http://[::1/sse?channel=a', 'http:///'];
const UPGRADE = 'connection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n';

describe('request targets that are not URLs', () => {
  it.each(TARGETS)('answers GET %s with 400 and keeps serving', async (target) => {
    const res = await rawRequest(gw.port, `GET ${target} HTTP/1.1\r\nhost: x\r\n\r\n`);
    expect(res.status).toBe(400);
    const health = await fetch(`${gw.url}/healthz`);
    expect(health.status).toBe(200);
  });

  it.each(TARGETS)('answers a WebSocket upgrade to %s with 400 and keeps serving', async (target) => {
    const res = await rawRequest(gw.port, `GET ${target} HTTP/1.1\r\nhost: x\r\n${UPGRADE}\r\n`);
    expect(res.status).toBe(400);
    const health = await fetch(`${gw.url}/healthz`);
    expect(health.status).toBe(200);
  });

  it('answers a coded JSON error naming the problem', async () => {
    const res = await rawRequest(gw.port, 'GET http://[/ HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n');
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body)).toMatchObject({ error: { code: 'bad_request' } });
  });
});
