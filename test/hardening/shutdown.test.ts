/**
 * Finding 8 (shutdown) and finding 1's process-level net: graceful shutdown finishes within its
 * deadline even when peers ignore the close handshake; SIGTERM with a closed stdout still exits
 * cleanly; an unexpected error anywhere is logged with context and counted, and the process lives on.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { MemoryBroker } from '@tidings/server';
import { faultyBroker, RawSseClient, rawRequest, rawWebSocket, startGateway } from '@tidings/testing';

const CLI = fileURLToPath(new URL('../../packages/server/dist/cli.js', import.meta.url));
const SERVER = new URL('../../packages/server/dist/index.js', import.meta.url).href;
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
});

function spawnNode(args: string[], env: Record<string, string> = {}): { child: ChildProcess; out: () => string; err: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, out: () => out, err: () => err, exited };
}

async function waitFor(check: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('graceful shutdown', () => {
  it('finishes within shutdownTimeout when a WebSocket peer ignores the close frame and a request hangs', async () => {
    const gw = await startGateway({ shutdownTimeout: 500 });
    const deaf = await rawWebSocket(gw.port);
    deaf.stopReading();
    const sse = fetch(`${gw.url}/sse?channel=bye`).catch(() => undefined);
    // A request whose body never arrives.
    const hanging = rawRequest(gw.port, 'POST /api/publish HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{', { timeoutMs: 10_000 });
    await new Promise((r) => setTimeout(r, 100));
    const started = Date.now();
    await gw.close();
    expect(Date.now() - started).toBeLessThan(2000);
    await waitFor(() => deaf.socket.destroyed || deaf.socket.readyState === 'closed' || deaf.socket.readyState === 'writeOnly', 2000, 'peer socket closed').catch(() => undefined);
    await sse;
    expect((await hanging).closed).toBe(true);
    deaf.destroy();
  });

  it('tells an SSE stream still subscribing to come back, as an event a plain EventSource reconnects after', async () => {
    const broker = faultyBroker(new MemoryBroker({ maxChannels: 100, dedupMaxKeys: 10 }), { historyDelayMs: 100 });
    const gw = await startGateway({}, { broker });
    // The status line comes only once every channel is subscribed (5 channels, 2 slow reads each).
    const opening = RawSseClient.open(`${gw.url}/sse?channel=a,b,c,d,e`);
    await new Promise((r) => setTimeout(r, 50));
    await gw.close();
    const c = await opening;
    await c.until((x) => x.ended);
    expect(c.status).toBe(200);
    expect(c.named('tidings:error').map((e) => (JSON.parse(e.data) as { code: string }).code)).toEqual(['restart']);
    expect(c.retry).toBeGreaterThan(0);
  });

  it('does not wait for connections that never sent a request', async () => {
    const gw = await startGateway();
    const silent = await new Promise<Socket>((resolve) => {
      const s = connect(gw.port, '127.0.0.1', () => resolve(s));
    });
    silent.on('error', () => undefined);
    const started = Date.now();
    await gw.close();
    expect(Date.now() - started).toBeLessThan(1000);
    silent.destroy();
  });
});

describe('the tidings process', () => {
  it('exits 0 on SIGTERM even when its stdout was closed', async () => {
    const p = spawnNode([CLI, 'serve', '--port', '0', '--host', '127.0.0.1'], { TIDINGS_API_KEY: 'a-key-of-at-least-16-chars', PORT: '' });
    await waitFor(() => /listening on/.test(p.out()), 10_000, 'banner');
    p.child.stdout?.destroy();
    await new Promise((r) => setTimeout(r, 100));
    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(0);
    expect(p.err()).not.toMatch(/EPIPE/);
  });

  it('logs, counts and survives an unexpected error thrown outside any request', async () => {
    const script = `
      const { createLogger, installProcessNet } = await import(${JSON.stringify(SERVER)});
      const net = installProcessNet(createLogger('info'));
      setTimeout(() => { throw new Error('a bug nobody caught'); }, 10);
      setTimeout(() => { Promise.reject(new Error('a rejection nobody handled')); }, 20);
      setTimeout(() => { console.log('still alive, counted ' + net.count); process.exit(0); }, 300);
    `;
    const p = spawnNode(['--input-type=module', '-e', script]);
    expect(await p.exited).toBe(0);
    expect(p.out()).toMatch(/still alive, counted 2/);
    const lines = p.out().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { level: number; msg: string; err?: { message: string } });
    expect(lines.map((l) => l.err?.message)).toEqual(expect.arrayContaining(['a bug nobody caught', 'a rejection nobody handled']));
    expect(lines.every((l) => l.level >= 50)).toBe(true);
  });
});
