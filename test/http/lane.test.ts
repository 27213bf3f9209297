/**
 * The fast lane: plain polls are read and answered on the socket, without Node's request and
 * response objects; everything else on the same port is still Node's. A connection goes to Node at
 * its first request the lane does not take, with the bytes already read, and answers stay in order.
 * SSE streams go on the lane too (the head, then chunks the stream writes itself). The lane keeps
 * Node's timeouts (an idle keep-alive connection, a connection that sends nothing) and is part of
 * the gateway's shutdown.
 */
import type { IncomingMessage } from 'node:http';
import { stat } from 'node:fs';
import { connect, type Socket } from 'node:net';
import fc from 'fast-check';
import { expect, it } from 'vitest';
import diagnostics from 'node:diagnostics_channel';
import { LANE_REQUESTS, MAX_LANE_BODY } from '../../packages/server/src/http/lane.js';
import { cleanupAfterEach, parseHead, rawRequest, startGateway, TEST_API_KEY, type TestGateway } from '@tidings/testing';

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

  /** Polls `channel` once, not held: the cursor of its answer (the conversation's first). */
  async startAt(channel: string): Promise<string> {
    this.send(poll(`channel=${channel}&timeout=0`));
    const [start] = await this.next(1);
    return (JSON.parse(start?.body ?? '') as { cursor: string }).cursor;
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
  let cursor = await talk.startAt('news');
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

it('reads a head cut over two writes itself, and leaves malformed input to Node', async () => {
  const gw = await gateway();
  const parsed = nodeRequests(gw);
  const talk = new Conversation(gw.port);
  talk.send('GET /poll?channel=a&timeout=0 HTTP/1.1\r\nHo');
  await new Promise((r) => setTimeout(r, 50));
  talk.send('st: gw\r\n\r\n');
  const [cut] = await talk.next(1);
  expect(cut?.body).toContain('"cursor":"a=');
  expect(parsed.get('/poll')).toBeUndefined();
  // A cut head that turns out to be another route's goes to Node whole.
  talk.send('GET /heal');
  await new Promise((r) => setTimeout(r, 50));
  talk.send('thz HTTP/1.1\r\nHost: gw\r\n\r\n');
  const [, other] = await talk.next(2);
  expect(other?.body).toContain('"status":"ok"');

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

it('lets a held poll outlive the keep-alive and head timeouts: only a connection waiting for a request is timed', async () => {
  const gw = await gateway({ headersTimeout: 300, requestTimeout: 300 });
  gw.gateway.server.keepAliveTimeout = 100;
  const parsed = nodeRequests(gw);
  const talk = new Conversation(gw.port);
  const cursor = await talk.startAt('a');
  // Held 2.5 s, past the idle deadline (1.1 s) the answer before it set.
  const asked = Date.now();
  talk.send(poll(`channel=a&timeout=2500&cursor=${encodeURIComponent(cursor)}`));
  const [, held] = await talk.next(2);
  expect(held?.status).toBe(200);
  expect(Date.now() - asked).toBeGreaterThanOrEqual(2400);
  expect(JSON.parse(held?.body ?? '')).toMatchObject({ messages: [] });
  expect(talk.closed).toBe(false);
  expect(parsed.size).toBe(0);
});

it('lets a client that leaves a held poll go, and ends idle lane connections when the gateway closes', async () => {
  const gw = await startGateway();
  const idle = new Conversation(gw.port);
  idle.send(poll('channel=a&timeout=0'));
  await idle.next(1);
  const gone = new Conversation(gw.port);
  gone.send(poll(`channel=a&cursor=${encodeURIComponent(await gone.startAt('a'))}`));
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

/** A plain publish: one request, its body sized (as bytes in a latin1 string, as {@link Conversation} sends them). */
const publish = (body: string, extra = '', key = TEST_API_KEY): string => {
  const bytes = Buffer.from(body).toString('latin1');
  return `POST /api/publish HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${key}\r\nContent-Type: application/json\r\nContent-Length: ${bytes.length}\r\n${extra}\r\n${bytes}`;
};

/** The messages of `channel` after `cursor`, by a poll. */
async function after(talk: Conversation, seen: number, cursor: string, channel = 'news'): Promise<unknown[]> {
  talk.send(poll(`channel=${channel}&timeout=0&cursor=${encodeURIComponent(cursor)}`));
  const answer = (await talk.next(seen + 1))[seen];
  return (JSON.parse(Buffer.from(answer?.body ?? '', 'latin1').toString()) as { messages: { data: unknown }[] }).messages.map((m) => m.data);
}

it('publishes on the lane, as Node would answer the same publish', async () => {
  const gw = await gateway();
  const parsed = nodeRequests(gw);
  const talk = new Conversation(gw.port);
  const cursor = await talk.startAt('news');
  talk.send(publish('{"channel":"news","data":1}'));
  const [, lane] = await talk.next(2);
  // The same publish with a header outside the lane's subset (twice): Node's server answers it.
  const other = new Conversation(gw.port);
  other.send(publish('{"channel":"news","data":2}', 'X-Twice: 1\r\nX-Twice: 2\r\n'));
  const [node] = await other.next(1);
  expect(parsed.get('/api/publish')).toBe(1);
  expect(lane?.status).toBe(200);
  const positions = [lane, node].map((a) => (JSON.parse(a?.body ?? '') as { position: { seq: number } }).position.seq);
  expect(positions[1]).toBe((positions[0] ?? 0) + 1);
  const names = (a: Answer | undefined): string[] => Object.keys(a?.headers ?? {}).sort();
  expect(names(lane)).toEqual(names(node));
  for (const name of ['content-type', 'cache-control', 'connection', 'keep-alive']) expect(lane?.headers[name]).toBe(node?.headers[name]);
  // Coded errors on the lane too, and the connection goes on after them (the whole body was read).
  talk.send(publish('{"channel":"news","data":', ''));
  talk.send(publish('{"channel":"news","data":3}', '', 'wrong-key'));
  const [bad, refused] = (await talk.next(4)).slice(2);
  expect(bad?.status).toBe(400);
  expect(JSON.parse(bad?.body ?? '')).toMatchObject({ error: { code: 'bad_json' } });
  expect(refused?.status).toBe(401);
  expect(await after(talk, 4, cursor)).toEqual([1, 2]);
  expect(parsed.get('/api/publish')).toBe(1);
  expect(talk.closed).toBe(false);
});

it('reads a body that comes after its head, in pieces, and answers pipelined publishes in order', async () => {
  const gw = await gateway();
  const parsed = nodeRequests(gw);
  const talk = new Conversation(gw.port);
  const cursor = await talk.startAt('news');
  const whole = publish('{"channel":"news","data":"é1"}');
  const cut = whole.indexOf('\r\n\r\n') + 4;
  talk.send(whole.slice(0, cut));
  await new Promise((r) => setTimeout(r, 50));
  talk.send(whole.slice(cut, cut + 10));
  await new Promise((r) => setTimeout(r, 50));
  talk.send(whole.slice(cut + 10));
  const [, first] = await talk.next(2);
  expect(first?.status).toBe(200);
  // Pipelined in one write, the last one's body cut off and sent later.
  const batch = [2, 3, 4].map((n) => publish(`{"channel":"news","data":${n}}`)).join('');
  talk.send(batch.slice(0, -5));
  await new Promise((r) => setTimeout(r, 50));
  talk.send(batch.slice(-5));
  const answers = (await talk.next(5)).slice(1);
  expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200]);
  const seqs = answers.map((a) => (JSON.parse(a.body) as { position: { seq: number } }).position.seq);
  expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
  expect(await after(talk, 5, cursor)).toEqual(['é1', 2, 3, 4]);
  expect(parsed.get('/api/publish')).toBeUndefined();
});

it('answers a body that does not come in time with 408, and leaves a body over the limit to Node, whose refusal ends the connection', async () => {
  const gw = await gateway({ headersTimeout: 300, requestTimeout: 400, maxBody: 1024 });
  const slow = await rawRequest(gw.port, publish('{"channel":"news","data":1}').slice(0, -3), { timeoutMs: 5000 });
  expect(slow.status).toBe(408);
  expect(slow.closed).toBe(true);

  const parsed = nodeRequests(gw);
  const big = await rawRequest(gw.port, publish(`{"channel":"news","data":"${'x'.repeat(2000)}"}`), { timeoutMs: 5000 });
  expect(big.status).toBe(413);
  expect(big.closed).toBe(true);
  expect(parsed.get('/api/publish')).toBe(1);
});

it('leaves a body larger than the lane reads to Node, which admits the request before it reads the body', async () => {
  const gw = await gateway();
  const parsed = nodeRequests(gw);
  const data = 'x'.repeat(MAX_LANE_BODY);
  const talk = new Conversation(gw.port);
  talk.send(publish(`{"channel":"news","data":"${data}"}`));
  const [answer] = await talk.next(1);
  expect(answer?.status).toBe(200);
  expect(parsed.get('/api/publish')).toBe(1);
  // Without the API key: refused at once, the body unread, and the connection ends.
  const refused = await rawRequest(gw.port, publish(`{"channel":"news","data":"${data}"}`, '', 'wrong-key').slice(0, 2000), { timeoutMs: 5000 });
  expect(refused.status).toBe(401);
  expect(refused.closed).toBe(true);
});

it('serves pipelined polls and publishes itself, in order, wherever the reads cut them', async () => {
  const gw = await gateway();
  const parsed = nodeRequests(gw);
  let round = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(fc.boolean(), { minLength: 1, maxLength: 6 }), fc.array(fc.nat(), { maxLength: 4 }), async (kinds, cuts) => {
      round += 1;
      const channel = `p${round}`;
      const talk = new Conversation(gw.port);
      const cursor = await talk.startAt(channel);
      // Publishes, and polls of another channel between them; one write, cut at the given places.
      const requests = kinds.map((publishing, i) => (publishing ? publish(`{"channel":"${channel}","data":${i}}`) : poll(`channel=q${round}&timeout=0`)));
      const stream = requests.join('');
      const at = [...new Set(cuts.map((c) => c % stream.length))].sort((a, b) => a - b);
      let from = 0;
      for (const to of [...at, stream.length]) {
        talk.send(stream.slice(from, to));
        from = to;
        await new Promise((r) => setTimeout(r, 5));
      }
      const answers = (await talk.next(1 + kinds.length)).slice(1);
      expect(answers.map((a) => a.status)).toEqual(kinds.map(() => 200));
      kinds.forEach((publishing, i) => expect(answers[i]?.body).toContain(publishing ? '"position"' : `"cursor":"q${round}=`));
      expect(await after(talk, 1 + kinds.length, cursor, channel)).toEqual(kinds.flatMap((publishing, i) => (publishing ? [i] : [])));
      talk.socket.destroy();
    }),
    { numRuns: 40 },
  );
  expect(parsed.size).toBe(0);
});

it('writes the answers of the requests of one read together, not one write each', async () => {
  const gw = await gateway();
  // The server's side of the connection, as the lane serves it: its writes to the kernel counted.
  const writes: number[] = [];
  const onRequest = (message: unknown): void => {
    const socket = (message as { request: { socket: Socket } }).request.socket as Socket & { _write: Socket['_write']; _writev?: Socket['_writev'] };
    if (writes.length > 0 || Object.hasOwn(socket, '_write')) return;
    writes.push(0);
    const write = socket._write.bind(socket);
    const writev = socket._writev?.bind(socket);
    socket._write = (...args) => {
      writes[0] = (writes[0] ?? 0) + 1;
      write(...args);
    };
    if (writev !== undefined) {
      socket._writev = (...args) => {
        writes[0] = (writes[0] ?? 0) + 1;
        writev(...args);
      };
    }
  };
  const requests = diagnostics.channel(LANE_REQUESTS);
  requests.subscribe(onRequest);
  cleanup.push(() => requests.unsubscribe(onRequest));
  const talk = new Conversation(gw.port);
  const cursor = await talk.startAt('burst');
  expect(writes).toEqual([1]);
  // Twenty publishes pipelined in one write, answered within the turn that read them: twenty answers
  // in order, in one write (two, should the kernel hand the server the twenty in two reads).
  const batch = Array.from({ length: 20 }, (_, i) => publish(`{"channel":"burst","data":${i}}`)).join('');
  talk.send(batch);
  const answers = (await talk.next(21)).slice(1);
  expect(answers.map((a) => a.status)).toEqual(Array.from({ length: 20 }, () => 200));
  expect(writes[0]).toBeLessThanOrEqual(3);
  expect(await after(talk, 21, cursor, 'burst')).toEqual(Array.from({ length: 20 }, (_, i) => i));
});

it('calls every close listener of a lane response once, however many it has', async () => {
  const gw = await gateway();
  const calls: string[] = [];
  const onRequest = (message: unknown): void => {
    const { response } = message as { response: { on(event: 'close', listener: () => void): unknown } };
    for (const name of ['a', 'b', 'c']) response.on('close', () => calls.push(name));
  };
  const requests = diagnostics.channel(LANE_REQUESTS);
  requests.subscribe(onRequest);
  cleanup.push(() => requests.unsubscribe(onRequest));
  const talk = new Conversation(gw.port);
  // A poll answered at once: these three, then its own two (its slots', its sink's), whose slot must go too.
  await talk.startAt('listeners');
  await expect.poll(() => calls.length).toBe(3);
  expect(calls).toEqual(['a', 'b', 'c']);
  await expect.poll(() => gw.gateway.connections().poll).toBe(0);
});

it('answers a read full of pipelined requests refused at once, in order, without deepening the stack', async () => {
  const gw = await gateway();
  const talk = new Conversation(gw.port);
  // About one read's worth: each is refused within its own serving (a bad timeout), so each answer
  // goes on to the next request while the previous one's call is still on the stack.
  const count = 1200;
  talk.send(Array.from({ length: count }, (_, i) => poll(`channel=deep&timeout=t${i}`)).join(''));
  const answers = await talk.next(count);
  expect(answers.map((a) => a.status)).toEqual(Array.from({ length: count }, () => 400));
  expect(answers.every((a) => (JSON.parse(a.body) as { error: { code: string } }).error.code === 'bad_request')).toBe(true);
  talk.send(health);
  await talk.next(count + 1);
  expect(talk.answers[count]?.status).toBe(200);
  expect(talk.closed).toBe(false);
});

it('keeps a held poll in its place when the answers before it wait for the client to take them', async () => {
  // One node-wide connection: a poll whose slot is never given back locks every client out.
  const gw = await gateway({ maxConnections: 1, maxConnectionsPerIp: 0, pollTimeout: 1000 });
  const talk = new Conversation(gw.port);
  // 150 publishes refused at once (more than 16 KiB of answers, written corked: the socket waits for
  // a drain), then a poll held on `held`, then a publish answered at once: their answers come in this order.
  const refused = 'POST /api/publish HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n'.repeat(150);
  talk.send(refused + poll('channel=held') + publish('{"channel":"after","data":1}'));
  await talk.next(150);
  await gw.publish('held', 'news');
  const answers = await talk.next(152);
  expect(answers.slice(0, 150).every((a) => a.status === 401)).toBe(true);
  expect(answers[150]?.body).toContain('"data":"news"');
  expect(answers[151]?.body).toContain('"position"');
  talk.socket.destroy();
  // Both polls gave their slot back: another client is served.
  await expect.poll(async () => (await rawRequest(gw.port, poll('channel=other&timeout=0'))).status, { timeout: 5000 }).toBe(200);
});

it('does not cut a client for the gateway\'s own lag: a request that came in time is served though the loop was too busy to read it then', async () => {
  const gw = await gateway({ headersTimeout: 200, requestTimeout: 200 });
  const answer = rawRequest(gw.port, '', {
    then: (socket) => {
      // In an I/O callback (the poll phase), after the gateway took the connection: the request is in
      // its socket buffer well within its time, then the event loop is busy past that time, so the
      // next turn runs its timers before it reads the request.
      setTimeout(() => {
        stat('.', () => {
          socket.write(poll('channel=lag&timeout=0'));
          const until = Date.now() + 600;
          while (Date.now() < until);
        });
      }, 50);
    },
  });
  expect((await answer).status).toBe(200);
});
