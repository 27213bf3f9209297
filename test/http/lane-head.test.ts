/**
 * The fast lane's request heads are a strict subset of what Node's HTTP parser accepts: any head the
 * lane reads, Node reads the same way (the same method, target, headers and values, and body, and a
 * WebSocket upgrade as an upgrade). Heads are generated from HTTP's grammar with the faults that
 * matter (bare LF, folded lines, spaces before the colon, controls and non-ASCII in values,
 * duplicates, bodies and their lengths, other versions and methods, half a handshake) and fed to
 * both: the lane's reader, and a real Node server over a socket.
 */
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { connect, type AddressInfo } from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { headMayFollow, readLaneHead } from '../../packages/server/src/http/lane-head.js';

const ROUTES = { GET: new Set(['/poll']), POST: new Set(['/api/publish']), UPGRADE: new Set(['/ws']) };
const MAX = 16 * 1024;
const MAX_BODY = 64;
const read = (bytes: Buffer): ReturnType<typeof readLaneHead> => readLaneHead(bytes, ROUTES, MAX, MAX_BODY);

interface NodeSaw {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
  /** Node gave it to its `upgrade` listeners. */
  readonly upgrade: boolean;
}

let server: Server;
let port = 0;
/** What Node's server saw of each request, by the `x-id` header the test adds last. */
const seen = new Map<string, NodeSaw>();

beforeAll(async () => {
  server = createServer((req, res) => {
    const id = req.headers['x-id'];
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      if (typeof id === 'string') seen.set(id, { method: req.method ?? '', url: req.url ?? '', headers: { ...req.headers }, body: Buffer.concat(chunks).toString('latin1'), upgrade: false });
      res.end('ok');
    });
  });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex) => {
    const id = req.headers['x-id'];
    if (typeof id === 'string') seen.set(id, { method: req.method ?? '', url: req.url ?? '', headers: { ...req.headers }, body: '', upgrade: true });
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

/** Sends `head` (ending in its `x-id` line and the empty line) and waits for Node to answer or close. */
function sendToNode(bytes: Buffer): Promise<void> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1', () => socket.end(bytes));
    socket.on('data', () => undefined);
    socket.on('close', () => resolve());
    socket.on('error', () => resolve());
    socket.setTimeout(2000, () => socket.destroy());
  });
}

/** Mostly what is plain, sometimes a fault: enough plain heads reach the comparison. */
const mostly = <T,>(plain: fc.Arbitrary<T>, fault: fc.Arbitrary<T>): fc.Arbitrary<T> =>
  fc.oneof({ arbitrary: plain, weight: 6 }, { arbitrary: fault, weight: 1 });
const headerName = mostly(
  fc
    .tuple(
      // Names the lane knows, and others (some a character away from one it knows), in any case.
      fc.constantFrom('X-A', 'x-b', 'Origin', 'Cookie', 'Authorization', 'Connection', 'User-Agent', 'Accept', 'If-None-Match', 'Upgrade', 'Sec-WebSocket-Key', 'Hosu', 'Cookie2', 'X-Forwarded-Fox', 'Accept-Encodinf'),
      fc.constantFrom('as is', 'upper', 'lower'),
    )
    .map(([name, as]) => (as === 'upper' ? name.toUpperCase() : as === 'lower' ? name.toLowerCase() : name)),
  fc.constantFrom('Host', 'Content-Length', 'Content-Length', 'Transfer-Encoding', 'Upgrade', 'Expect', 'Bad Name', 'X\u0000B', 'Ü', '', '', ' folded'),
);
const valueChar = mostly(fc.constantFrom('a', 'Z', '0', ' ', '\t', ',', ';', '=', '"', '/', ':'), fc.constantFrom('\r', '\n', '\u0000', '\u007f', 'é', 'ÿ'));
const headerValue = fc.oneof(
  fc.constantFrom('keep-alive', 'close', 'upgrade', 'Upgrade', 'keep-alive, Upgrade', 'websocket', 'WebSocket', 'h2c', 'websocket, h2c', '0', '5', '05', '3', '+3', '3, 3', '-1', '999', 'chunked', 'x', ''),
  fc.array(valueChar, { maxLength: 12 }).map((cs) => cs.join('')),
);
const separator = mostly(fc.constantFrom(': ', ':', ':\t', ':  '), fc.constant(' : '));
const lineEnd = mostly(fc.constant('\r\n'), fc.constantFrom('\n', '\r'));
const headerLine = fc.tuple(headerName, separator, headerValue, lineEnd).map(([n, s, v, e]) => `${n}${s}${v}${e}`);
const requestLine = fc
  .tuple(
    mostly(fc.constantFrom('GET', 'POST'), fc.constantFrom('HEAD', 'PUT', 'get', 'POS')),
    mostly(
      fc.constantFrom('/poll', '/poll?channel=a', '/poll?channel=a&cursor=a%3Dx.1', '/poll?x=%zz&y=/?:@!$', '/api/publish', '/api/publish?x=1', '/ws', '/ws?channel=a'),
      fc.constantFrom('/polls', '//poll', '/poll#f', 'http://h/poll', '/poll?a=b c', '*', '/api/publish/'),
    ),
    mostly(fc.constant('HTTP/1.1'), fc.constantFrom('HTTP/1.0', 'HTTP/2.0', 'HTTP/1.1 ', 'http/1.1')),
    lineEnd,
  )
  .map(([m, t, v, e]) => `${m} ${t} ${v}${e}`);

describe('lane heads', () => {
  it('reads a plain poll', () => {
    const text = 'GET /poll?channel=a HTTP/1.1\r\nHost: x\r\nConnection: close\r\nOrigin:  http://o \r\n\r\n';
    const head = read(Buffer.from(`${text}rest`));
    expect(head).toMatchObject({ method: 'GET', url: '/poll?channel=a', close: true, length: text.length, bodyLength: 0 });
    expect({ ...head?.headers }).toEqual({ host: 'x', connection: 'close', origin: 'http://o' });
  });

  it('reads a WebSocket upgrade as browsers send it, and the bytes after it are not its', () => {
    const text =
      'GET /ws?channel=a HTTP/1.1\r\nHost: localhost:8080\r\nConnection: Upgrade\r\nPragma: no-cache\r\nCache-Control: no-cache\r\n' +
      'User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0.0.0 Safari/537.36\r\nUpgrade: websocket\r\nOrigin: http://localhost:8080\r\n' +
      'Sec-WebSocket-Version: 13\r\nAccept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-US,en;q=0.9\r\nCookie: tidings_token=abc\r\n' +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n';
    const head = read(Buffer.from(`${text}\x81\x80`, 'latin1'));
    expect(head).toMatchObject({ method: 'GET', url: '/ws?channel=a', upgrade: true, close: false, length: text.length, bodyLength: 0 });
    expect(head?.headers).toMatchObject({ upgrade: 'websocket', connection: 'Upgrade', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' });
    // Firefox's Connection, and the protocol in another case.
    expect(read(Buffer.from('GET /ws HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n\r\n'))).toMatchObject({ upgrade: true });
    // A plain request is never an upgrade.
    expect(read(Buffer.from('GET /poll HTTP/1.1\r\nHost: x\r\n\r\n'))).toMatchObject({ upgrade: false });
  });

  it('reads a publish, whose body need not have come yet', () => {
    const text = 'POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n';
    expect(read(Buffer.from(text))).toMatchObject({ method: 'POST', url: '/api/publish', close: false, length: text.length, bodyLength: 12 });
    expect(read(Buffer.from('POST /api/publish HTTP/1.1\r\nHost: x\r\n\r\n'))).toMatchObject({ bodyLength: 0 });
  });

  it.each([
    ['another path', 'GET /sse HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['a cut head', 'GET /poll HTTP/1.1\r\nHost: x\r\n'],
    ['no Host', 'GET /poll HTTP/1.1\r\n\r\n'],
    ['a body', 'GET /poll HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc'],
    ['a header twice', 'GET /poll HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a: 2\r\n\r\n'],
    ['an upgrade where none is read', 'GET /poll HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n'],
    ['an upgrade to another protocol', 'GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n'],
    ['an Upgrade header without the Connection option', 'GET /ws HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nUpgrade: websocket\r\n\r\n'],
    ['a Connection option without the Upgrade header', 'GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\r\n'],
    ['a plain GET where upgrades are read', 'GET /ws HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['an upgrade with a length', 'GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n'],
    ['an upgrade by POST', 'POST /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n'],
    ['an upgrade as Connection names something else too', 'GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: websocket\r\n\r\n'],
    ['HTTP/1.0', 'GET /poll HTTP/1.0\r\nHost: x\r\n\r\n'],
    ['a POST where GET is read', 'POST /poll HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n'],
    ['a GET where POST is read', 'GET /api/publish HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['a chunked body', 'POST /api/publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
    ['a body over the limit', `POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: ${MAX_BODY + 1}\r\n\r\n`],
    ['a signed length', 'POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\nx'],
    ['a list of lengths', 'POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\nx'],
    ['a length twice', 'POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx'],
    ['Expect: 100-continue', 'POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n'],
  ])('leaves %s to Node', (_what, text) => {
    expect(read(Buffer.from(text, 'latin1'))).toBeUndefined();
  });

  it('waits for the rest of a head it may read, wherever a read cut it, and for no other', () => {
    for (const text of [
      'GET /poll?channel=a HTTP/1.1\r\nHost: x\r\nOrigin: o\r\n\r\n',
      'POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n',
      'GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
    ]) {
      expect(read(Buffer.from(text))).toBeDefined();
      for (let cut = 1; cut < text.length; cut++) expect(headMayFollow(Buffer.from(text.slice(0, cut)), ROUTES, MAX), text.slice(0, cut)).toBe(true);
    }
    for (const text of ['GET /sse HTTP/1.1\r\nHo', 'POST /ws HTTP/1.1\r\n', 'POST /poll HTTP/1.1\r\n', 'PUT /poll', 'GET /poll HTTP/1.0\r\n', 'GET /poll HTTP/1.1\nHost', `GET /poll?${'a'.repeat(MAX)}`]) {
      expect(headMayFollow(Buffer.from(text), ROUTES, MAX), text.slice(0, 40)).toBe(false);
    }
  });

  it('reads only what Node reads the same way', async () => {
    let seenByLane = 0;
    let upgradesByLane = 0;
    await fc.assert(
      fc.asyncProperty(
        requestLine,
        // Sometimes a WebSocket handshake's two headers (which the generated lines may contradict or repeat).
        fc.constantFrom('', 'Upgrade: websocket\r\nConnection: Upgrade\r\n', 'Connection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n'),
        fc.array(headerLine, { maxLength: 6 }),
        mostly(fc.constant(true), fc.constant(false)),
        fc.string({ unit: 'binary-ascii', maxLength: MAX_BODY + 2 }),
        // A body's length, sometimes said (and sometimes more than the body or the limit).
        fc.option(fc.oneof(fc.constant(-1), fc.nat(MAX_BODY + 2)), { freq: 2 }),
        fc.nat(),
        async (line, handshake, lines, host, body, said, n) => {
          const id = `r${n}-${Math.random().toString(36).slice(2)}`;
          const length = said === null ? '' : `Content-Length: ${said === -1 ? body.length : said}\r\n`;
          const head = `${line}${host ? 'Host: h\r\n' : ''}${length}${handshake}${lines.join('')}X-Id: ${id}\r\n\r\n`;
          // A head that ends early (a generated line made an empty one) is another head, without the id.
          fc.pre(head.indexOf('\r\n\r\n') === head.length - 4);
          const bytes = Buffer.from(head + body, 'latin1');
          const lane = read(bytes);
          if (lane === undefined) return;
          seenByLane += 1;
          if (lane.upgrade) upgradesByLane += 1;
          expect(lane.length).toBe(head.length);
          // What the lane takes as the body: Node must read the same bytes (the client sends them all).
          if (lane.length + lane.bodyLength > bytes.length) return;
          await sendToNode(bytes);
          const node = seen.get(id);
          expect(node, `Node refused what the lane read: ${JSON.stringify(head)}`).toBeDefined();
          expect(node?.upgrade, 'an upgrade to Node as to the lane').toBe(lane.upgrade);
          expect(node?.method).toBe(lane.method);
          expect(node?.url).toBe(lane.url);
          expect(node?.headers).toEqual({ ...lane.headers });
          expect(node?.body).toBe(body.slice(0, lane.bodyLength));
        },
      ),
      { numRuns: 5000 },
    );
    // The generator reaches the subset often enough for the comparison to mean something.
    expect(seenByLane).toBeGreaterThan(20);
    expect(upgradesByLane).toBeGreaterThan(10);
  });
});
