/**
 * The gateway's log records (pino JSON lines): start and stop at info, each connection's connect and
 * disconnect (transport, user, duration, reason) at debug, coded refusals at debug with their code,
 * broker outages at warn; and no secret in any record, a generated API key included.
 */
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { createGateway } from '@tidings/server';
import { KIT_OPTIONS, RawWsClient, until } from '@tidings/testing';

interface LogRecord {
  readonly level: number;
  readonly msg: string;
  readonly [key: string]: unknown;
}

describe('log records', () => {
  it('start, connect, refusal, disconnect and stop, with their fields, and no secret anywhere', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(...chunk.toString().split('\n').filter((l) => l !== ''));
        done();
      },
    });
    const logger = pino({ level: 'debug' }, sink);
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
});
