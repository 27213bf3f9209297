/**
 * RPC handlers from a module (`--rpc-module`): its exported functions answer requests by name over
 * WebSocket and `POST /rpc`, with the caller's identity; a module without functions stops the start.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { RawWsClient, startGateway } from '@tidings/testing';

const dir = mkdtempSync(join(tmpdir(), 'tidings-rpc-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('rpcModule', () => {
  it('answers requests with the module’s exported functions on WebSocket and POST /rpc', async () => {
    const file = join(dir, 'handlers.mjs');
    writeFileSync(file, 'export function echo(data, identity) { return { data, user: identity.user, anonymous: identity.anonymous }; }\n');
    const gw = await startGateway({ rpcModule: file });
    try {
      const ws = await RawWsClient.connect(gw.wsUrl);
      const reply = await ws.request({ type: 'rpc', method: 'echo', data: { n: 1 } });
      expect(reply).toMatchObject({ type: 'reply', result: { data: { n: 1 }, user: '', anonymous: true } });
      const missing = await ws.request({ type: 'rpc', method: 'nope' });
      expect(missing).toMatchObject({ type: 'error', error: { code: 'unknown_method' } });
      ws.terminate();
      const res = await fetch(`${gw.url}/rpc`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ method: 'echo', data: 'x' }) });
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ result: { data: 'x' } });
    } finally {
      await gw.close();
    }
  });

  it('refuses to start with a module that exports no function, naming it', async () => {
    const file = join(dir, 'empty.mjs');
    writeFileSync(file, 'export const answer = 42;\n');
    await expect(startGateway({ rpcModule: file })).rejects.toThrow(/empty\.mjs exports no handler functions/);
  });
});
