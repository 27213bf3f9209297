/**
 * The fast lane's request heads are a strict subset of what Node's HTTP parser accepts: any head the
 * lane reads, Node reads the same way (the same target, the same headers and values). Heads are
 * generated from HTTP's grammar with the faults that matter (bare LF, folded lines, spaces before the
 * colon, controls and non-ASCII in values, duplicates, bodies, other versions and methods) and fed
 * to both: the lane's reader, and a real Node server over a socket.
 */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readLaneHead } from '../../packages/server/src/http/lane-head.js';

const PATHS = new Set(['/poll']);
const MAX = 16 * 1024;

interface NodeSaw {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
}

let server: Server;
let port = 0;
/** What Node's server saw of each request, by the `x-id` header the test adds last. */
const seen = new Map<string, NodeSaw>();

beforeAll(async () => {
  server = createServer((req, res) => {
    const id = req.headers['x-id'];
    if (typeof id === 'string') seen.set(id, { method: req.method ?? '', url: req.url ?? '', headers: { ...req.headers } });
    res.end('ok');
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
  fc.constantFrom('X-A', 'x-b', 'Origin', 'Cookie', 'Authorization', 'Connection', 'User-Agent', 'Accept', 'If-None-Match'),
  fc.constantFrom('Host', 'Content-Length', 'Transfer-Encoding', 'Upgrade', 'Expect', 'Bad Name', 'X\u0000B', 'Ü', '', '', ' folded'),
);
const valueChar = mostly(fc.constantFrom('a', 'Z', '0', ' ', '\t', ',', ';', '=', '"', '/', ':'), fc.constantFrom('\r', '\n', '\u0000', '\u007f', 'é', 'ÿ'));
const headerValue = fc.oneof(fc.constantFrom('keep-alive', 'close', 'upgrade', '0', '5', 'chunked', 'x', ''), fc.array(valueChar, { maxLength: 12 }).map((cs) => cs.join('')));
const separator = mostly(fc.constantFrom(': ', ':', ':\t', ':  '), fc.constant(' : '));
const lineEnd = mostly(fc.constant('\r\n'), fc.constantFrom('\n', '\r'));
const headerLine = fc.tuple(headerName, separator, headerValue, lineEnd).map(([n, s, v, e]) => `${n}${s}${v}${e}`);
const requestLine = fc
  .tuple(
    mostly(fc.constant('GET'), fc.constantFrom('HEAD', 'POST', 'get')),
    mostly(
      fc.constantFrom('/poll', '/poll?channel=a', '/poll?channel=a&cursor=a%3Dx.1', '/poll?x=%zz&y=/?:@!$'),
      fc.constantFrom('/polls', '//poll', '/poll#f', 'http://h/poll', '/poll?a=b c', '*'),
    ),
    mostly(fc.constant('HTTP/1.1'), fc.constantFrom('HTTP/1.0', 'HTTP/2.0', 'HTTP/1.1 ', 'http/1.1')),
    lineEnd,
  )
  .map(([m, t, v, e]) => `${m} ${t} ${v}${e}`);

describe('lane heads', () => {
  it('reads a plain poll', () => {
    const text = 'GET /poll?channel=a HTTP/1.1\r\nHost: x\r\nConnection: close\r\nOrigin:  http://o \r\n\r\n';
    const head = readLaneHead(Buffer.from(`${text}rest`), PATHS, MAX);
    expect(head).toMatchObject({ url: '/poll?channel=a', close: true, length: text.length });
    expect({ ...head?.headers }).toEqual({ host: 'x', connection: 'close', origin: 'http://o' });
  });

  it.each([
    ['another path', 'GET /sse HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['a cut head', 'GET /poll HTTP/1.1\r\nHost: x\r\n'],
    ['no Host', 'GET /poll HTTP/1.1\r\n\r\n'],
    ['a body', 'GET /poll HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc'],
    ['a header twice', 'GET /poll HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a: 2\r\n\r\n'],
    ['an upgrade', 'GET /poll HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n'],
    ['HTTP/1.0', 'GET /poll HTTP/1.0\r\nHost: x\r\n\r\n'],
  ])('leaves %s to Node', (_what, text) => {
    expect(readLaneHead(Buffer.from(text, 'latin1'), PATHS, MAX)).toBeUndefined();
  });

  it('reads only what Node reads the same way', async () => {
    let read = 0;
    await fc.assert(
      fc.asyncProperty(requestLine, fc.array(headerLine, { maxLength: 6 }), mostly(fc.constant(true), fc.constant(false)), fc.nat(), async (line, lines, host, n) => {
        const id = `r${n}-${Math.random().toString(36).slice(2)}`;
        const text = `${line}${host ? 'Host: h\r\n' : ''}${lines.join('')}X-Id: ${id}\r\n\r\n`;
        const bytes = Buffer.from(text, 'latin1');
        const lane = readLaneHead(bytes, PATHS, MAX);
        if (lane === undefined) return;
        read += 1;
        expect(lane.length).toBe(bytes.length);
        await sendToNode(bytes);
        const node = seen.get(id);
        expect(node, `Node refused what the lane read: ${JSON.stringify(text)}`).toBeDefined();
        expect(node?.method).toBe('GET');
        expect(node?.url).toBe(lane.url);
        expect(node?.headers).toEqual({ ...lane.headers });
      }),
      { numRuns: 1500 },
    );
    // The generator reaches the subset often enough for the comparison to mean something.
    expect(read).toBeGreaterThan(20);
  });
});
