/**
 * Keep-alive connections after a refusal. A refused request without a body leaves its connection
 * usable for the next request; a refusal that leaves a body unread ends the connection, and its
 * answer says so (`Connection: close`), so no client sends its next request on a connection about to
 * close (a pooled HTTP client would see that request fail with the connection closed under it).
 */
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseHead, startGateway, TEST_API_KEY, type TestGateway } from '@tidings/testing';

let gw: TestGateway;
beforeAll(async () => {
  gw = await startGateway({ maxBody: 4096 });
});
afterAll(() => gw.close());

/** One keep-alive connection: send text, read whole answers (by content-length) in order. */
class KeepAlive {
  readonly #socket: Socket;
  #buffer = '';
  closed = false;
  #waiters: Array<() => void> = [];

  constructor(port: number) {
    this.#socket = connect(port, '127.0.0.1');
    this.#socket.setEncoding('latin1');
    this.#socket.on('data', (d: string) => {
      this.#buffer += d;
      this.#wake();
    });
    this.#socket.on('close', () => {
      this.closed = true;
      this.#wake();
    });
    this.#socket.on('error', () => undefined);
  }

  send(text: string): void {
    this.#socket.write(text);
  }

  async answer(timeoutMs = 3000): Promise<{ status: number; headers: Record<string, string>; body: string }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const head = parseHead(this.#buffer);
      const length = Number(head?.headers['content-length'] ?? NaN);
      if (head !== undefined && head.body.length >= length) {
        this.#buffer = head.body.slice(length);
        return { ...head, body: head.body.slice(0, length) };
      }
      if (this.closed || Date.now() > deadline) throw new Error(`no whole answer (closed: ${this.closed}): ${JSON.stringify(this.#buffer.slice(0, 200))}`);
      await new Promise<void>((r) => {
        this.#waiters.push(r);
        setTimeout(r, 50);
      });
    }
  }

  async untilClosed(timeoutMs = 4000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    return this.closed;
  }

  destroy(): void {
    this.#socket.destroy();
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }
}

describe('connections after a refusal', () => {
  it.each([
    ['an unknown path', 'GET /nope HTTP/1.1\r\nhost: x\r\n\r\n', 404],
    ['a malformed target', 'GET http://[/ HTTP/1.1\r\nhost: x\r\n\r\n', 400],
    ['a bad stream query', 'GET /poll?channel=bad%20name HTTP/1.1\r\nhost: x\r\n\r\n', 400],
    ['a wrong method', 'DELETE /poll?channel=a HTTP/1.1\r\nhost: x\r\n\r\n', 405],
    ['a publish without credentials', 'POST /api/publish HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n', 401],
  ])('answers the next request on the same connection after %s', async (_what, request, status) => {
    const c = new KeepAlive(gw.port);
    try {
      c.send(request);
      const refused = await c.answer();
      expect(refused.status).toBe(status);
      expect(refused.headers.connection).not.toBe('close');
      c.send('GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n');
      expect((await c.answer()).status).toBe(200);
      expect(c.closed).toBe(false);
    } finally {
      c.destroy();
    }
  });

  it('says Connection: close when it refuses a body it will not read, then ends the connection', async () => {
    const c = new KeepAlive(gw.port);
    try {
      // Declared over maxBody: refused before a byte of it is read.
      c.send(`POST /api/publish HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${TEST_API_KEY}\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n`);
      c.send('x'.repeat(1000));
      const refused = await c.answer();
      expect(refused.status).toBe(413);
      expect(refused.headers.connection).toBe('close');
      // Still taking (and dropping) what the client sends, then closing.
      c.send('x'.repeat(1000));
      expect(await c.untilClosed()).toBe(true);
    } finally {
      c.destroy();
    }
  });

  it('says Connection: close when a body is refused half read', async () => {
    const c = new KeepAlive(gw.port);
    try {
      // No length declared (chunked): refused once more than maxBody has arrived.
      c.send(`POST /api/publish HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${TEST_API_KEY}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n`);
      for (let i = 0; i < 6; i++) c.send(`400\r\n${'x'.repeat(1024)}\r\n`);
      const refused = await c.answer();
      expect(refused.status).toBe(413);
      expect(refused.headers.connection).toBe('close');
      expect(await c.untilClosed()).toBe(true);
    } finally {
      c.destroy();
    }
  });
});
