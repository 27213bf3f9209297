/**
 * The fast lane: plain polls are read and answered on the socket, without Node's request and
 * response objects; everything else on the same port is still Node's. A connection goes to Node at
 * its first request the lane does not take, with the bytes already read, and answers stay in order.
 * SSE streams go on the lane too (the head, then chunks the stream writes itself). The lane keeps
 * Node's timeouts (an idle keep-alive connection, a connection that sends nothing) and is part of
 * the gateway's shutdown.
 */
import type { IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';
import { expect, it } from 'vitest';
import { cleanupAfterEach, parseHead, rawRequest, startGateway, type TestGateway } from '@tidings/testing';

const cleanup = cleanupAfterEach();

async function gateway(config: Parameters<typeof startGateway>[0] = {}): Promise<TestGateway> {
  const gw = await startGateway(config);
  cleanup.push(() => gw.close());
  return gw;
}

interface Answer {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: string;
}

/** One keep-alive connection: write bytes, read whole answers (sized by Content-Length) in order. */
class Conversation {
  readonly socket: Socket;
  readonly answers: Answer[] = [];
  closed = false;
  #buffer = '';

  constructor(port: number) {
    this.socket = connect(port, '127.0.0.1');
    this.socket.setEncoding('latin1');
    this.socket.on('data', (chunk: string) => this.#read(chunk));
    this.socket.on('close', () => (this.closed = true));
    this.socket.on('error', () => undefined);
    cleanup.push(() => this.socket.destroy());
  }

  send(text: string): void {
    this.socket.write(Buffer.from(text, 'latin1'));
  }

  async next(count: number): Promise<Answer[]> {
    await expect.poll(() => this.answers.length, { timeout: 5000 }).toBeGreaterThanOrEqual(count);
    return this.answers.slice(0, count);
  }

  #read(chunk: string): void {
    this.#buffer += chunk;
    for (;;) {
      const head = parseHead(this.#buffer);
      if (head === undefined) return;
      const length = Number(head.headers['content-length'] ?? 0);
      if (Buffer.byteLength(head.body, 'latin1') < length) return;
      this.answers.push({ status: head.status, headers: head.headers, body: head.body.slice(0, length) });
      this.#buffer = head.body.slice(length);
    }
  }
}

const poll = (query: string, extra = ''): string => `GET /poll?${query} HTTP/1.1\r\nHost: gw\r\n${extra}\r\n`;
const health = 'GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n';

/** Counts the requests Node's HTTP server parsed, by path. */
function nodeRequests(gw: TestGateway): Map<string, number> {
  const counts = new Map<string, number>();
  const listener = (req: IncomingMessage): void => {
    const path = (req.url ?? '').split('?')[0] ?? '';
    counts.set(path, (counts.get(path) ?? 0) + 1);
  };
  gw.gateway.server.on('request', listener);
  cleanup.push(() => gw.gateway.server.off('request', listener));
  return counts;
}

it('answers a plain poll itself, as Node would answer it', async () => {
  const gw = await gateway();
  const parsed = nodeRequests(gw);
  const at = await gw.publish('news', 'first');
  const talk = new Conversation(gw.port);
  talk.send(poll('channel=news&timeout=0', 'Origin: http://app.example\r\n'));
  // The same poll, with a header outside the lane's subset (twice): Node's server answers it.
  talk.send(poll('channel=news&timeout=0', 'Origin: http://app.example\r\nX-Twice: 1\r\nX-Twice: 2\r\n'));
  const [lane, node] = await talk.next(2);
  expect(parsed.get('/poll')).toBe(1);
  expect(lane?.status).toBe(200);
  expect(lane?.body).toBe(node?.body);
  expect(JSON.parse(lane?.body ?? '')).toMatchObject({ messages: [], cursor: `news=${at.position.epoch}.${at.position.seq.toString(36)}` });
  const names = (a: Answer | undefined): string[] => Object.keys(a?.headers ?? {}).sort();
  expect(names(lane)).toEqual(names(node));
  for (const name of ['content-type', 'cache-control', 'access-control-allow-origin', 'connection', 'keep-alive']) expect(lane?.headers[name]).toBe(node?.headers[name]);
});

it('holds a poll and answers it with what is published, on the same connection again and again', async () => {
  const gw = await gateway();
  const parsed = nodeRequests(gw);
  const talk = new Conversation(gw.port);
  talk.send(poll('channel=news&timeout=0'));
  const [first] = await talk.next(1);
  let cursor = (JSON.parse(first?.body ?? '') as { cursor: string }).cursor;
  for (let i = 1; i <= 3; i++) {
    talk.send(poll(`channel=news&cursor=${encodeURIComponent(cursor)}`));
    await expect.poll(() => gw.gateway.stats().polls.parked, { timeout: 5000 }).toBe(1);
    await gw.publish('news', i);
    const answer = (await talk.next(i + 1))[i];
    const body = JSON.parse(answer?.body ?? '') as { messages: { data: unknown }[]; cursor: string };
    expect(body.messages.map((m) => m.data)).toEqual([i]);
    cursor = body.cursor;
  }
  expect(parsed.get('/poll')).toBeUndefined();
});

it('hands a connection to Node at its first other request, with pipelined requests answered in order', async () => {
  const gw = await gateway();
  const parsed = nodeRequests(gw);
  const talk = new Conversation(gw.port);
  // One write: a lane poll, then a request for Node, then another poll (Node's now, the connection is).
  talk.send(poll('channel=a&timeout=0') + health + poll('channel=b&timeout=0'));
  const answers = await talk.next(3);
  expect(answers.map((a) => a.status)).toEqual([200, 200, 200]);
  expect(answers[0]?.body).toContain('"cursor":"a=');
  expect(answers[1]?.body).toContain('"status":"ok"');
  expect(answers[2]?.body).toContain('"cursor":"b=');
  expect(parsed.get('/poll')).toBe(1);
  expect(parsed.get('/healthz')).toBe(1);
});

it('answers a held poll before the request pipelined behind it', async () => {
  const gw = await gateway();
  const talk = new Conversation(gw.port);
  talk.send(poll('channel=a&timeout=300') + health);
  const answers = await talk.next(2);
  expect(answers[0]?.body).toContain('"cursor":"a=');
  expect(answers[1]?.body).toContain('"status":"ok"');
});

it('leaves a head cut over two writes, and malformed input, to Node', async () => {
  const gw = await gateway();
  const talk = new Conversation(gw.port);
  talk.send('GET /poll?channel=a&timeout=0 HTTP/1.1\r\nHo');
  await new Promise((r) => setTimeout(r, 50));
  talk.send('st: gw\r\n\r\n');
  const [cut] = await talk.next(1);
  expect(cut?.body).toContain('"cursor":"a=');

  const bad = await rawRequest(gw.port, 'GET /poll?channel=a HTTP/1.1\r\nHost: gw\r\nBad Header: x\r\n\r\n');
  expect(bad.status).toBe(400);
  // After a lane answer, on the same connection.
  const after = await rawRequest(gw.port, `${poll('channel=a&timeout=0')}GET /poll HTTP/1.1\r\nHost: gw\r\nX:\u0000\r\n\r\n`, { timeoutMs: 2000 });
  expect(after.status).toBe(200);
  expect(after.body).toContain('HTTP/1.1 400');
});

it('closes after the answer when the client asks', async () => {
  const gw = await gateway();
  const talk = new Conversation(gw.port);
  talk.send(poll('channel=a&timeout=0', 'Connection: close\r\n'));
  const [answer] = await talk.next(1);
  expect(answer?.headers.connection).toBe('close');
  await expect.poll(() => talk.closed, { timeout: 5000 }).toBe(true);
});

it('ends an idle keep-alive connection after Node keep-alive time, and answers a silent one with 408', async () => {
  const gw = await gateway({ headersTimeout: 300, requestTimeout: 300 });
  gw.gateway.server.keepAliveTimeout = 100;
  const talk = new Conversation(gw.port);
  talk.send(poll('channel=a&timeout=0'));
  const [answer] = await talk.next(1);
  expect(answer?.headers['keep-alive']).toBe('timeout=0');
  const answered = Date.now();
  await expect.poll(() => talk.closed, { timeout: 5000 }).toBe(true);
  // Node keeps an idle connection its keep-alive time plus one second.
  expect(Date.now() - answered).toBeGreaterThanOrEqual(1000);

  const silent = await rawRequest(gw.port, '', { timeoutMs: 5000 });
  expect(silent.status).toBe(408);
  expect(silent.closed).toBe(true);
});

it('lets a client that leaves a held poll go, and ends idle lane connections when the gateway closes', async () => {
  const gw = await startGateway();
  const idle = new Conversation(gw.port);
  idle.send(poll('channel=a&timeout=0'));
  await idle.next(1);
  const gone = new Conversation(gw.port);
  gone.send(poll('channel=a&timeout=0'));
  const [first] = await gone.next(1);
  gone.send(poll(`channel=a&cursor=${encodeURIComponent((JSON.parse(first?.body ?? '') as { cursor: string }).cursor)}`));
  await expect.poll(() => gw.gateway.stats().polls.parked, { timeout: 5000 }).toBe(1);
  gone.socket.end();
  await expect.poll(() => gw.gateway.stats().polls.parked, { timeout: 5000 }).toBe(0);
  const started = Date.now();
  await gw.close();
  expect(Date.now() - started).toBeLessThan(3000);
  await expect.poll(() => idle.closed, { timeout: 2000 }).toBe(true);
});

it('streams SSE on the lane: chunked events, a last chunk when the stream ends, and the connection goes on', async () => {
  const gw = await gateway();
  const parsed = nodeRequests(gw);
  const socket = connect(gw.port, '127.0.0.1');
  cleanup.push(() => socket.destroy());
  let received = '';
  socket.setEncoding('latin1');
  socket.on('data', (chunk: string) => (received += chunk));
  socket.write('GET /sse?channel=news HTTP/1.1\r\nHost: gw\r\nAccept: text/event-stream\r\n\r\n');
  await expect.poll(() => received, { timeout: 5000 }).toContain('event: tidings:welcome');
  const head = parseHead(received);
  expect(head?.status).toBe(200);
  expect(head?.headers['transfer-encoding']).toBe('chunked');
  expect(head?.headers['content-type']).toBe('text/event-stream; charset=utf-8');
  expect(head?.headers['content-length']).toBeUndefined();
  await gw.publish('news', { n: 1 });
  await expect.poll(() => received, { timeout: 5000 }).toContain('{"n":1}');
  gw.gateway.disconnectAll();
  await expect.poll(() => received, { timeout: 5000 }).toContain('\r\n0\r\n\r\n');
  // Every chunk is framed exactly: the body, unchunked, is a well-formed event stream.
  const body = received.slice(received.indexOf('\r\n\r\n') + 4);
  let events = '';
  for (let at = 0; ; ) {
    const eol = body.indexOf('\r\n', at);
    const size = parseInt(body.slice(at, eol), 16);
    if (size === 0) break;
    events += body.slice(eol + 2, eol + 2 + size);
    expect(body.slice(eol + 2 + size, eol + 4 + size)).toBe('\r\n');
    at = eol + 4 + size;
  }
  expect(events).toContain('event: tidings:error');
  expect(events.split('\n\n').every((e) => e === '' || /^(retry|event|id|data|:)/m.test(e))).toBe(true);
  // The same connection serves the next request.
  const before = received.length;
  socket.write(poll('channel=news&timeout=0'));
  await expect.poll(() => received.slice(before), { timeout: 5000 }).toContain('"cursor":"news=');
  expect(parsed.get('/sse')).toBeUndefined();
  expect(parsed.get('/poll')).toBeUndefined();
});
