/**
 * A long-lived stream lets go of its response head once it is sent (Node would keep the string for
 * the life of the response), and the response behaves as before: headers sent, later header changes
 * refused, the body and its end delivered, and the connection kept alive for the next request.
 */
import { createServer, request, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Agent } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { forgetHead } from '../../packages/server/src/http/respond.js';

const closers: Array<() => void> = [];
afterEach(() => {
  for (const c of closers.splice(0)) c();
});

describe('forgetHead', () => {
  it('frees the sent head and changes nothing the response or its connection does', async () => {
    const seen: Array<{ headersSent: boolean; head: unknown; setHeader: string }> = [];
    const server = createServer((req, res: ServerResponse) => {
      if (req.url === '/next') {
        res.end('next');
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream', 'x-long-header': 'x'.repeat(200) });
      res.flushHeaders();
      forgetHead(res);
      let setHeader = 'allowed';
      try {
        res.setHeader('x-late', '1');
      } catch (err) {
        setHeader = (err as { code?: string }).code ?? 'thrown';
      }
      seen.push({ headersSent: res.headersSent, head: (res as unknown as { _header: unknown })._header, setHeader });
      res.socket?.write('5\r\nfirst\r\n');
      setTimeout(() => res.end('last'), 20);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    closers.push(() => server.close());
    const { port } = server.address() as AddressInfo;
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    closers.push(() => agent.destroy());
    const get = (path: string): Promise<{ body: string; headers: Record<string, unknown>; socket: unknown }> =>
      new Promise((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port, path, agent }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c));
          res.on('end', () => resolve({ body, headers: res.headers, socket: req.socket }));
        });
        req.on('error', reject);
        req.end();
      });
    const stream = await get('/stream');
    expect(stream.headers['x-long-header']).toBe('x'.repeat(200));
    expect(stream.body).toBe('firstlast');
    expect(seen).toEqual([{ headersSent: true, head: ' ', setHeader: 'ERR_HTTP_HEADERS_SENT' }]);
    // The same connection answers the next request.
    const next = await get('/next');
    expect(next.body).toBe('next');
    expect(next.socket).toBe(stream.socket);
  });
});
