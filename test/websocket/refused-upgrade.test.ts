/**
 * A refused WebSocket upgrade is a completed handshake whose only frame is a close with the refusal's
 * code and reason (browsers cannot read an upgrade's HTTP status). Its close frame is always valid:
 * at most 125 bytes of payload, whole UTF-8, whatever the reason; a requested subprotocol is echoed so
 * the client sees the close rather than a failed handshake; and a refusal's reason, whoever wrote it,
 * can never take the node down.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { TidingsError } from '@tidings/protocol';
import type { Authenticator } from '@tidings/server';
import { frameClose } from '../../packages/server/src/framing.js';
import { cleanupAfterEach, rawRequest, startGateway, type TestGateway } from '@tidings/testing';

const cleanup = cleanupAfterEach();
const utf8 = new TextDecoder('utf-8', { fatal: true });

function closeOf(url: string, protocols?: string[]): Promise<{ code: number; reason: string; protocol: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols);
    ws.on('error', reject);
    ws.on('close', (code, reason) => resolve({ code, reason: reason.toString(), protocol: ws.protocol }));
  });
}

const HANDSHAKE = 'GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n';
const KEY = 'dGhlIHNhbXBsZSBub25jZQ==';

/** A gateway admitting one connection per second, whose one is taken: the next upgrade is refused 4503. */
async function gatewayAtItsRate(): Promise<TestGateway> {
  const gw = await startGateway({ maxConnectRate: 1 });
  cleanup.push(() => gw.close());
  const first = new WebSocket(gw.wsUrl);
  cleanup.push(() => first.terminate());
  await new Promise((resolve, reject) => first.once('open', resolve).once('error', reject));
  return gw;
}

describe('a close frame', () => {
  it('carries the code and the longest whole-character prefix of the reason that fits 123 bytes', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1000, max: 4999 }), fc.string({ unit: 'binary', maxLength: 200 }), (code, reason) => {
        const frame = frameClose(code, reason);
        expect(frame[0]).toBe(0x88);
        const length = frame[1] ?? 0;
        expect(length).toBeLessThanOrEqual(125);
        expect(frame.length).toBe(2 + length);
        expect(frame.readUInt16BE(2)).toBe(code);
        const text = utf8.decode(frame.subarray(4));
        const whole = Buffer.from(reason, 'utf8');
        expect(whole.subarray(0, length - 2).equals(frame.subarray(4))).toBe(true);
        if (whole.length <= 123) expect(text).toBe(whole.toString('utf8'));
        else expect(length - 2).toBeGreaterThan(123 - 4);
      }),
    );
  });
});

describe('a refused upgrade', () => {
  it('closes with the auth hook refusal, its reason cut to whole characters, and the node answers on', async () => {
    // A hook's own message: long and not ASCII. Cut by characters to 120 it would still be over 123 bytes.
    const message = `Zugriff verweigert für Benutzer ${'ä'.repeat(150)}`;
    const auth: Authenticator = {
      connect: () => Promise.reject(new TidingsError('unauthorized', message)),
      canSubscribe: () => true,
      canPublish: () => true,
    };
    const gw = await startGateway({}, { auth });
    cleanup.push(() => gw.close());
    for (let i = 0; i < 3; i++) {
      const closed = await closeOf(`${gw.wsUrl}?channel=news`);
      expect(closed.code).toBe(4401);
      expect(Buffer.byteLength(closed.reason)).toBeLessThanOrEqual(123);
      expect(Buffer.byteLength(closed.reason)).toBeGreaterThan(120);
      expect(message.startsWith(closed.reason)).toBe(true);
    }
    expect((await fetch(`${gw.url}/healthz`)).status).toBe(200);
  });

  it('echoes the first requested subprotocol, so the client sees the close code, not a failed handshake', async () => {
    const gw = await gatewayAtItsRate();
    const closed = await closeOf(gw.wsUrl, ['tidings.v1', 'other']);
    expect(closed.code).toBe(4503);
    expect(closed.reason).toMatch(/retry after \d+ ms$/);
    expect(closed.protocol).toBe('tidings.v1');
  });

  it('answers a malformed handshake with 400, as before, and reflects no hostile subprotocol', async () => {
    const gw = await gatewayAtItsRate();
    const res = await rawRequest(gw.port, `${HANDSHAKE}Sec-WebSocket-Key: short\r\n\r\n`);
    expect(res.status).toBe(400);
    for (const protocol of ['a b', '', ',x', 'x\u00ff', '"quoted"', 'x;y']) {
      const hostile = await rawRequest(gw.port, `${HANDSHAKE}Sec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Protocol: ${protocol}\r\n\r\n`);
      expect(hostile.status).toBe(400);
      expect(hostile.headers['sec-websocket-protocol']).toBeUndefined();
    }
  });
});
