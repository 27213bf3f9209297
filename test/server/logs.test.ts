/**
 * The gateway's log records (pino JSON lines): start and stop at info, each connection's connect and
 * disconnect (transport, user, duration, reason) at debug, coded refusals at debug with their code,
 * broker outages at warn; and no secret in any record, a generated API key included.
 */
import { spawn } from 'node:child_process';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { createGateway } from '@tidings/server';
import { KIT_OPTIONS, RawWsClient, until } from '@tidings/testing';

/** A pino logger writing to an array of lines. */
function capture(level: string): { logger: pino.Logger; lines: string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString().split('\n').filter((l) => l !== ''));
      done();
    },
  });
  return { logger: pino({ level }, sink), lines };
}

/** Text without terminal color codes. */
const stripAnsi = (text: string): string => text.replace(new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, 'g'), '');

const CLI = fileURLToPath(new URL('../../packages/server/dist/cli.js', import.meta.url));

/** Runs `tidings serve` (under `script`, on a terminal, when `tty`) until its listening record is out; resolves with its stdout. */
function serveOutput(args: readonly string[], tty: boolean): Promise<string> {
  const command = [process.execPath, CLI, 'serve', '--host', '127.0.0.1', '--port', '0', ...args];
  const child = tty
    ? spawn('script', ['-qec', command.map((a) => `'${a}'`).join(' '), '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] })
    : spawn(command[0] ?? '', command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`no listening record: ${out}`));
    }, 15_000);
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      // The listening record names the node (the banner line before it does not).
      const text = stripAnsi(out);
      const at = text.indexOf('listening');
      if (at !== -1 && /\bnode\b[^\n]*\n/.test(text.slice(at))) {
        clearTimeout(timer);
        child.kill('SIGTERM');
        resolve(out);
      }
    });
    child.on('error', reject);
  });
}

interface LogRecord {
  readonly level: number;
  readonly msg: string;
  readonly [key: string]: unknown;
}

describe('log records', () => {
  it('start, connect, refusal, disconnect and stop, with their fields, and no secret anywhere', async () => {
    const { logger, lines } = capture('debug');
    const records = (): LogRecord[] => lines.map((l) => JSON.parse(l) as LogRecord);
    const named = (msg: string): LogRecord[] => records().filter((r) => r.msg === msg);

    // No apiKey configured: one is generated, and must never reach a record.
    const gateway = createGateway({ ...KIT_OPTIONS, host: '127.0.0.1', port: 0, logLevel: 'debug' }, { logger });
    const { url, port } = await gateway.listen();
    expect(named('listening')).toEqual([expect.objectContaining({ level: 30, url, broker: 'memory', node: gateway.nodeId })]);

    const ws = await RawWsClient.connect(`ws://127.0.0.1:${port}/ws`);
    await ws.request({ type: 'subscribe', channel: 'news' });
    await until(() => named('connect').length === 1, 3000, 'the connect record');
    expect(named('connect')[0]).toMatchObject({ level: 20, transport: 'websocket' });

    const bad = await fetch(`${url}/poll?channel=${encodeURIComponent('bad channel')}`);
    expect(bad.status).toBe(400);
    await until(() => named('refused').length === 1, 3000, 'the refusal record');
    expect(named('refused')[0]).toMatchObject({ level: 20, code: 'bad_channel', path: '/poll' });

    ws.terminate();
    await until(() => named('disconnect').length === 1, 3000, 'the disconnect record');
    const disconnect = named('disconnect')[0];
    expect(disconnect).toMatchObject({ level: 20, transport: 'websocket', reason: 'client_gone' });
    expect(typeof disconnect?.durationMs).toBe('number');

    await gateway.close();
    expect(named('stopped')).toEqual([expect.objectContaining({ level: 30, node: gateway.nodeId })]);
    expect(gateway.apiKeyGenerated).toBe(true);
    expect(lines.join('\n')).not.toContain(gateway.apiKey);
  });

  it('samples per-message records at debug by logSampleRate, and writes none when debug is off', async () => {
    const count = async (level: string, logSampleRate: number, publishes: number): Promise<Array<Record<string, unknown>>> => {
      const { logger, lines } = capture(level);
      const gateway = createGateway({ ...KIT_OPTIONS, host: '127.0.0.1', port: 0, apiKey: 'log-test-api-key-0123456789', logSampleRate }, { logger });
      const { url } = await gateway.listen();
      const batch = JSON.stringify(Array.from({ length: publishes }, (_, i) => ({ channel: 'news', data: i })));
      const res = await fetch(`${url}/api/publish`, { method: 'POST', headers: { authorization: 'Bearer log-test-api-key-0123456789', 'content-type': 'application/json' }, body: batch });
      expect(res.status).toBe(200);
      await gateway.close();
      return lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((r) => r.msg === 'published');
    };
    const all = await count('debug', 1, 5);
    expect(all).toHaveLength(5);
    expect(all[0]).toMatchObject({ level: 20, channel: 'news', seq: 1, by: 'api', sampled: 1 });
    expect(await count('debug', 0, 50)).toHaveLength(0);
    expect(await count('info', 1, 50)).toHaveLength(0);
    // 1% of 1000: at least one, and nowhere near all (the chance of either failing is below 1e-4).
    const some = (await count('debug', 0.01, 1000)).length;
    expect(some).toBeGreaterThan(0);
    expect(some).toBeLessThan(40);
  });

  it('is pretty on a terminal and JSON lines otherwise, unless logFormat says', async () => {
    const jsonListening = (text: string): unknown => JSON.parse(text.split('\n').find((l) => l.includes('"msg":"listening"')) ?? '');
    expect(jsonListening(await serveOutput([], false))).toMatchObject({ level: 30, msg: 'listening' });
    const forced = await serveOutput(['--log-format', 'pretty'], false);
    expect(forced).toMatch(/INFO: listening/);
    expect(forced).not.toContain('"msg":');
    const terminal = stripAnsi(await serveOutput([], true));
    expect(terminal).toMatch(/INFO: listening/);
    expect(terminal).not.toContain('"msg":');
    expect(jsonListening(await serveOutput(['--log-format', 'json'], true))).toMatchObject({ level: 30, msg: 'listening' });
  }, 60_000);
});
