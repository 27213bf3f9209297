/**
 * Finding 8 (HTTP edges): HEAD on a stream, upgrades to protocols other than WebSocket, oversized
 * headers, slow headers and bodies, bodies larger than allowed: each gets a prompt, coded answer.
 */
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawRequest, startGateway, TEST_API_KEY, type TestGateway } from '@tidings/testing';

let gw: TestGateway;
beforeAll(async () => {
  gw = await startGateway({ headersTimeout: 500, requestTimeout: 1000, maxBody: 64 * 1024 });
});
afterAll(async () => {
  await gw.close();
});

const publishHead = (length: number): string =>
  `POST /api/publish HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${TEST_API_KEY}\r\ncontent-type: application/json\r\ncontent-length: ${length}\r\n\r\n`;

describe('HEAD', () => {
  it.each(['/sse?channel=a', '/poll?channel=a', '/healthz', '/readyz'])('HEAD %s answers at once, without a body', async (path) => {
    const res = await rawRequest(gw.port, `HEAD ${path} HTTP/1.1\r\nhost: x\r\n\r\n`, { untilHeaders: true, timeoutMs: 2000 });
    expect(res.status).toBe(200);
    expect(res.elapsed).toBeLessThan(1000);
    expect(res.body).toBe('');
  });
});

describe('upgrades to protocols other than WebSocket', () => {
  it.each(['/healthz', '/poll?channel=a&timeout=0'])('are ignored: GET %s with Upgrade: h2c is answered as plain HTTP', async (path) => {
    const res = await rawRequest(gw.port, `GET ${path} HTTP/1.1\r\nhost: x\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAAP__\r\n\r\n`);
    expect(res.status).toBe(200);
  });

  it('a POST with a body and Upgrade: h2c publishes', async () => {
    const body = JSON.stringify({ channel: 'h2c', data: 1 });
    const res = await rawRequest(
      gw.port,
      publishHead(Buffer.byteLength(body)).replace('\r\n\r\n', '\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAAP__\r\n\r\n') + body,
    );
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toMatchObject({ channel: 'h2c', position: { seq: 1 } });
  });
});

describe('JSON the parser would mangle', () => {
  const publish = (body: string): Promise<Response> =>
    fetch(`${gw.url}/api/publish`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${TEST_API_KEY}` }, body });

  it('deep nesting gets 400 bad_json, not a 500', async () => {
    const res = await publish(`{"channel":"deep","data":${'['.repeat(5000)}${']'.repeat(5000)}}`);
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('bad_json');
  });

  it.each(['1e400', '-1e400', '1e-400', '9007199254740993'])('%s gets 400 bad_json instead of being changed', async (n) => {
    const res = await publish(`{"channel":"numbers","data":${n}}`);
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('bad_json');
  });
});

describe('bodies in pieces', () => {
  it('a body that arrives in several chunks, one cutting a character in two, is published whole', async () => {
    const body = Buffer.from(JSON.stringify({ channel: 'pieces', data: 'café crème' }));
    const cut = body.indexOf(Buffer.from('é')) + 1;
    const pieces = [body.subarray(0, 10), body.subarray(10, cut), body.subarray(cut)];
    const head = publishHead(0).replace('content-length: 0', 'transfer-encoding: chunked');
    const res = await rawRequest(gw.port, head, {
      then: (socket) => {
        // Apart in time, so that the server reads each one by itself.
        pieces.forEach((piece, i) => {
          setTimeout(() => socket.write(Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n')])), 50 * (i + 1));
        });
        setTimeout(() => socket.write('0\r\n\r\n'), 200);
      },
      timeoutMs: 1500,
    });
    expect(res.status).toBe(200);
    const { position } = JSON.parse(res.body.slice(res.body.indexOf('{'), res.body.lastIndexOf('}') + 1)) as { position: { epoch: string } };
    const poll = await fetch(`${gw.url}/poll?channel=pieces&timeout=0&cursor=${encodeURIComponent(`pieces=${position.epoch}.0`)}`);
    const { messages } = (await poll.json()) as { messages: { data: unknown }[] };
    expect(messages.map((m) => m.data)).toEqual(['café crème']);
  });
});

describe('oversized and slow requests', () => {
  it('a 100 KB header gets 431 (96 KiB fit the largest stream\'s resume); 90 KB are read', async () => {
    const res = await rawRequest(gw.port, `GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(100_000)}\r\n\r\n`);
    expect(res.status).toBe(431);
    const fits = await rawRequest(gw.port, `GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(90_000)}\r\n\r\n`);
    expect(fits.status).toBe(200);
  });

  it('headers that never finish get 408 once headersTimeout passes', async () => {
    const res = await rawRequest(gw.port, 'GET /healthz HTTP/1.1\r\nhost: x\r\n', { timeoutMs: 5000 });
    expect(res.status).toBe(408);
    expect(res.elapsed).toBeLessThan(3000);
  });

  it('a body that never finishes gets 408 once requestTimeout passes', async () => {
    const res = await rawRequest(gw.port, `${publishHead(1000)}{"channel":`, { timeoutMs: 5000 });
    expect(res.status).toBe(408);
    expect(res.elapsed).toBeLessThan(3500);
  });

  it('a body declared larger than maxBody gets 413 before any of it is read, and the connection closes', async () => {
    const res = await rawRequest(gw.port, `${publishHead(100 * 1024 * 1024)}{"channel":"a","data":"`, { timeoutMs: 3000 });
    expect(res.status).toBe(413);
    expect(res.closed).toBe(true);
    expect(res.elapsed).toBeLessThan(2000);
  });

  it('a body that grows past maxBody without a length gets 413 and the connection closes', async () => {
    const head = publishHead(0).replace('content-length: 0', 'transfer-encoding: chunked');
    const chunk = 'x'.repeat(16 * 1024);
    const res = await rawRequest(gw.port, head, {
      timeoutMs: 3000,
      then: (socket) => {
        for (let i = 0; i < 8; i++) socket.write(`${chunk.length.toString(16)}\r\n${chunk}\r\n`);
      },
    });
    expect(res.status).toBe(413);
    expect(res.closed).toBe(true);
  });
});

describe('a malformed request behind a streamed answer', () => {
  it('cuts the connection rather than writing a refusal into the stream', async () => {
    // Node's parser judges the second request while the first (a stream of Node's server) is answered:
    // a 400 written then would land inside the stream's chunked body.
    const socket = connect(gw.port, '127.0.0.1');
    let received = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => (received += chunk));
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
    socket.write(`GET /admin/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${TEST_API_KEY}\r\n\r\n`);
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no stream head: ${JSON.stringify(received)}`)), 3000);
      socket.on('data', () => {
        if (received.includes('\r\n\r\n')) {
          clearTimeout(t);
          resolve();
        }
      });
    });
    expect(received.startsWith('HTTP/1.1 200')).toBe(true);
    socket.write('GET /healthz HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n');
    await closed;
    expect(received).not.toContain('HTTP/1.1 400');
  });
});

describe('a client that pipelines requests and never reads the answers', () => {
  /**
   * Writes pipelined requests (each answered at once, with more bytes than it has) as fast as the
   * server takes them, never reading; resolves with the bytes written when the writes stall (the
   * server stopped reading), or once `most` bytes were taken.
   */
  function flood(port: number, request: string, most: number): Promise<number> {
    const chunk = Buffer.from(request.repeat(Math.ceil(64 * 1024 / request.length)));
    return new Promise((resolve, reject) => {
      const socket = connect(port, '127.0.0.1');
      socket.pause();
      let written = 0;
      let stall: NodeJS.Timeout | undefined;
      const done = (): void => {
        clearTimeout(stall);
        socket.destroy();
        resolve(written);
      };
      const write = (): void => {
        while (written < most) {
          written += chunk.length;
          if (!socket.write(chunk)) {
            stall = setTimeout(done, 1500);
            return;
          }
        }
        done();
      };
      socket.on('drain', () => {
        clearTimeout(stall);
        write();
      });
      socket.on('error', reject);
      socket.on('connect', write);
    });
  }

  it.each([
    ['GET /poll (no channel: 400)', 'GET /poll HTTP/1.1\r\nhost: x\r\n\r\n'],
    ['POST /api/publish without a key (401)', 'POST /api/publish HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}'],
  ])('%s: the server stops reading once its answers back up, as Node does', async (_name, request) => {
    // Node's timeouts: the client is not cut while the writes are watched for a stall.
    const patient = await startGateway();
    try {
      // What the kernel buffers both ways is a few megabytes; a server that reads on holds every answer.
      const written = await flood(patient.port, request, 128 * 1024 * 1024);
      expect(written).toBeLessThan(32 * 1024 * 1024);
    } finally {
      await patient.close();
    }
  }, 60_000);

  it('is cut once it has not taken its answers for requestTimeout', async () => {
    const socket = connect(gw.port, '127.0.0.1');
    socket.pause();
    const closed = new Promise<number>((resolve) => socket.on('close', () => resolve(Date.now())));
    socket.on('error', () => undefined);
    const request = Buffer.from('POST /api/publish HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}'.repeat(2000));
    await new Promise<void>((resolve) => socket.on('connect', resolve));
    let backedUp: number | undefined;
    while (backedUp === undefined) {
      if (!socket.write(request)) backedUp = Date.now();
      else await new Promise((r) => setImmediate(r));
    }
    // requestTimeout is 1 s here; the lane's sweep runs every headersTimeout (0.5 s).
    expect((await closed) - backedUp).toBeLessThan(5000);
  }, 20_000);
});
