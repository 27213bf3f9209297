/**
 * Which upgrade requests go to the WebSocket endpoint: `Upgrade` naming `websocket` in any case,
 * alone or in a list; anything else is answered as plain HTTP.
 */
import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import { wantsWebSocket } from '../../packages/server/src/http/plain-upgrade.js';

const req = (upgrade: string | undefined): IncomingMessage => ({ headers: upgrade === undefined ? {} : { upgrade } }) as IncomingMessage;

describe('wantsWebSocket', () => {
  it.each([
    ['websocket', true],
    ['WebSocket', true],
    ['h2c, WEBSOCKET', true],
    [' websocket ', true],
    ['h2c', false],
    ['websockets', false],
    ['', false],
    [undefined, false],
  ] as const)('Upgrade: %s -> %s', (upgrade, wanted) => {
    expect(wantsWebSocket(req(upgrade))).toBe(wanted);
  });
});
