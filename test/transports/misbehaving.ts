/**
 * Misbehaving clients for the transport suite's "a broken client does not disturb a healthy one",
 * one set per transport, all on the healthy subscriber's channel:
 * - a deaf client: subscribes and stops reading while publications flow, so the gateway must shed it
 *   as a slow consumer (WebSocket, SSE) or answer it and keep nothing (a long poll it never reads);
 * - garbage: malformed WebSocket frames (bad JSON and binary frames until the protocol close, then
 *   wire-level violations), or garbage requests on the SSE / long-poll endpoint itself;
 * - a half-closed socket: the client sends its FIN right after subscribing.
 * Each garbage round reports what the gateway answered, so the test can check that the misbehaviour
 * really reached the gateway and was refused, not only that the healthy client survived it.
 * @module
 */
import { connect, type Socket } from 'node:net';
import { formatCursor, type Channel, type Position } from '@tidings/protocol';
import {
  clientFrame,
  Opcode,
  rawRequest,
  rawWebSocket,
  RawSseClient,
  RawWsClient,
  until,
  type RawWebSocket,
  type TestGateway,
  type TransportKind,
} from '@tidings/testing';

/** What one garbage round sent, what the gateway should answer and what it did answer. */
export interface Outcome {
  readonly what: string;
  readonly expected: string;
  readonly actual: string;
}

/** The close code of the first close frame among the (unmasked) frames a server wrote; 'none' without one. */
export function serverCloseCode(received: readonly Buffer[]): number | 'none' {
  const bytes = Buffer.concat(received);
  let at = 0;
  while (at + 2 <= bytes.length) {
    const opcode = (bytes[at] as number) & 0x0f;
    let len = (bytes[at + 1] as number) & 0x7f;
    let head = 2;
    if (len === 126) {
      if (at + 4 > bytes.length) break;
      len = bytes.readUInt16BE(at + 2);
      head = 4;
    } else if (len === 127) {
      if (at + 10 > bytes.length) break;
      len = Number(bytes.readBigUInt64BE(at + 2));
      head = 10;
    }
    if (at + head + len > bytes.length) break;
    if (opcode === Opcode.close) return len >= 2 ? bytes.readUInt16BE(at + head) : 1005;
    at += head + len;
  }
  return 'none';
}

const text = (s: string): Buffer => clientFrame(Opcode.text, s);

/** A raw WebSocket peer subscribed to `channel` (the reply has arrived). */
async function rawSubscriber(gw: TestGateway, channel: Channel): Promise<RawWebSocket> {
  const peer = await rawWebSocket(gw.port);
  peer.send(text(JSON.stringify({ type: 'subscribe', id: 1, channel })));
  await until(() => Buffer.concat(peer.received).includes('"type":"reply"') || peer.closed, 3000, 'subscribe reply');
  return peer;
}

/** Sends a raw HTTP request on a connection of its own; `received` is what has arrived so far (while the socket is read). */
function rawHttp(gw: TestGateway, request: string): { socket: Socket; received: () => string } {
  const socket = connect(gw.port, '127.0.0.1');
  let got = '';
  socket.setEncoding('latin1');
  socket.on('data', (chunk: string) => (got += chunk));
  socket.on('error', () => undefined);
  socket.on('connect', () => socket.write(request));
  return { socket, received: () => got };
}

/** The status and code of a coded JSON error reply, as `400 bad_channel`. */
async function codeOf(res: Response): Promise<string> {
  const body = (await res.json().catch(() => ({}))) as { error?: { code?: string } };
  return `${res.status} ${body.error?.code ?? '-'}`;
}

export class BrokenClients {
  readonly #closers: Array<() => void> = [];
  readonly #deafPolls: Socket[] = [];

  constructor(
    readonly kind: TransportKind,
    readonly gw: TestGateway,
    readonly channel: Channel,
    /** The channel's position when the test began (seq 0 of its epoch). */
    readonly start: Position,
  ) {}

  /**
   * Subscribes and stops reading (WebSocket, SSE); a long poll has nothing to stop (see `deafPoll`).
   * The WebSocket one still sends unsolicited pongs, as a peer whose reading side is stuck may, so
   * it is not taken for a dead peer: only its unread backlog can get it shed. Resolves with a
   * function that reads again and reports what the gateway told it in the end.
   */
  async stopReading(): Promise<() => Promise<string>> {
    const { gw, channel } = this;
    if (this.kind === 'websocket') {
      const c = await RawWsClient.connect(gw.wsUrl);
      this.#closers.push(() => c.terminate());
      const reply = await c.request({ type: 'subscribe', channel });
      if (reply.type !== 'reply') throw new Error(`deaf subscribe failed: ${JSON.stringify(reply)}`);
      c.ws.pause();
      const alive = setInterval(() => c.ws.pong(), 20);
      this.#closers.push(() => clearInterval(alive));
      return async () => {
        clearInterval(alive);
        c.ws.resume();
        await c.until((x) => x.closed, 8000).catch(() => undefined);
        return c.closed ? `closed ${c.closeCode}` : 'still open';
      };
    }
    if (this.kind === 'sse') {
      const c = await RawSseClient.open(`${gw.url}/sse?channel=${encodeURIComponent(channel)}`);
      this.#closers.push(() => c.close());
      await c.until((x) => x.named('tidings:welcome').length === 1);
      c.pause();
      return async () => {
        c.resume();
        await c.until((x) => x.ended, 8000).catch(() => undefined);
        const told = c.named('tidings:error').map((e) => (JSON.parse(e.data) as { code: string }).code);
        return c.ended ? `ended after tidings:error ${told.join(',')}` : 'still open';
      };
    }
    return () => Promise.resolve('nothing to tell');
  }

  /** A long poll from the channel's start whose (large) answer is never read. */
  deafPoll(): void {
    const cursor = encodeURIComponent(formatCursor(new Map([[this.channel, this.start]])));
    const { socket } = rawHttp(this.gw, `GET /poll?channel=${encodeURIComponent(this.channel)}&cursor=${cursor}&timeout=5000 HTTP/1.1\r\nhost: x\r\n\r\n`);
    socket.pause();
    this.#deafPolls.push(socket);
    this.#closers.push(() => socket.destroy());
  }

  /** Reads the deaf polls' answers at last: each must be a 200 carrying publications. */
  async deafPollAnswers(): Promise<string[]> {
    return Promise.all(
      this.#deafPolls.map(async (socket) => {
        let head = '';
        socket.on('data', (chunk: string) => {
          if (head.length < 64) head += chunk;
        });
        socket.resume();
        await until(() => head.length >= 64, 5000, 'the deaf poll was answered');
        return /^HTTP\/1\.1 (\d+)/.exec(head)?.[1] ?? head.slice(0, 20);
      }),
    );
  }

  /**
   * Subscribes (or, for a long poll, starts a held poll), then half-closes its socket: its FIN is
   * all the gateway hears. Resolves with whether the gateway closed the connection in turn.
   */
  async halfClose(): Promise<string> {
    const { gw, channel } = this;
    let socket: Socket;
    let closed: () => boolean;
    if (this.kind === 'websocket') {
      const peer = await rawSubscriber(gw, channel);
      this.#closers.push(() => peer.destroy());
      socket = peer.socket;
      closed = () => peer.closed;
    } else {
      const path = this.kind === 'sse' ? '/sse' : '/poll';
      const conn = rawHttp(gw, `GET ${path}?channel=${encodeURIComponent(channel)}&timeout=5000 HTTP/1.1\r\nhost: x\r\n\r\n`);
      socket = conn.socket;
      this.#closers.push(() => conn.socket.destroy());
      let ended = false;
      socket.on('close', () => (ended = true));
      closed = () => ended;
      if (this.kind === 'sse') await until(() => conn.received().includes('tidings:welcome'), 3000, 'half-closing SSE client welcomed');
      else await new Promise((r) => setTimeout(r, 30));
    }
    socket.end();
    try {
      await until(closed, 3000, 'the gateway closed the half-closed connection');
      return 'closed by the gateway';
    } catch {
      return 'left open';
    }
  }

  /** One round of garbage per call, on this transport's endpoint; rounds run between batches of publications. */
  garbageRounds(): Array<() => Promise<Outcome>> {
    return this.kind === 'websocket' ? this.#wsGarbage() : this.#httpGarbage(this.kind === 'sse' ? '/sse' : '/poll');
  }

  #wsGarbage(): Array<() => Promise<Outcome>> {
    const { gw, channel } = this;
    /** A subscribed raw peer sends one malformed frame; the gateway must close it with `code`. */
    const wire = (what: string, frame: Buffer, code: number) => async (): Promise<Outcome> => {
      const peer = await rawSubscriber(gw, channel);
      this.#closers.push(() => peer.destroy());
      peer.send(frame);
      await until(() => peer.closed, 3000, `closed after ${what}`).catch(() => undefined);
      const actual = `${peer.closed ? 'closed' : 'open'} ${serverCloseCode(peer.received)}`;
      peer.destroy();
      return { what, expected: `closed ${code}`, actual };
    };
    const application = async (): Promise<Outcome> => {
      const c = await RawWsClient.connect(gw.wsUrl);
      this.#closers.push(() => c.terminate());
      const reply = await c.request({ type: 'subscribe', channel });
      const bad = [
        '{not json',
        '{"type":"nope","id":1}',
        '[]',
        '"subscribe"',
        '{"type":"subscribe","id":2,"channel":"bad channel"}',
        '{"type":"subscribe","id":3,"channel":"x","since":{"epoch":7,"seq":-1}}',
        '{"type":"publish","id":{"x":1},"message":{}}',
      ];
      for (let i = 0; i < 30 && !c.closed; i++) {
        if (i % 5 === 4) c.ws.send(Buffer.from([0xde, 0xad, 0xbe, 0xef]), { binary: true });
        else c.sendText(bad[i % bad.length] as string);
      }
      await c.until((x) => x.closed, 3000).catch(() => undefined);
      const errors = c.ofType('error').length;
      return {
        what: 'bad JSON, unknown and malformed frames and binary frames',
        expected: `subscribed, error frames, closed 4003`,
        actual: `${reply.type === 'reply' ? 'subscribed' : 'not subscribed'}, ${errors > 0 ? 'error frames' : 'no error frames'}, ${c.closed ? `closed ${c.closeCode}` : 'open'}`,
      };
    };
    return [
      application,
      wire('a frame with RSV1 set (no extension negotiated)', clientFrame(Opcode.text, '{"type":"ping"}', { rsv: 4 }), 1002),
      wire('a reserved opcode', clientFrame(0x3, 'x'), 1002),
      wire('an unmasked client frame', clientFrame(Opcode.text, '{"type":"ping"}', { mask: false }), 1002),
      wire('invalid UTF-8 in a text frame', clientFrame(Opcode.text, Buffer.from([0x7b, 0xff, 0xfe, 0x7d])), 1007),
      wire('a continuation frame with nothing to continue', clientFrame(Opcode.continuation, 'x'), 1002),
      wire('a fragmented ping', clientFrame(Opcode.ping, 'x', { fin: false }), 1002),
      wire('a frame declaring a length beyond maxPayload', clientFrame(Opcode.text, 'x', { declaredLength: 10 * 1024 * 1024 }), 1009),
    ];
  }

  #httpGarbage(path: '/sse' | '/poll'): Array<() => Promise<Outcome>> {
    const { gw, channel } = this;
    const ch = encodeURIComponent(channel);
    const sse = path === '/sse';
    /** A request with a bad cursor: the `Last-Event-ID` header on SSE, the `cursor` query on long polling. */
    const withCursor = (cursor: string): Promise<Response> =>
      sse
        ? fetch(`${gw.url}/sse?channel=${ch}`, { headers: { 'last-event-id': cursor } })
        : fetch(`${gw.url}/poll?channel=${ch}&timeout=0&cursor=${encodeURIComponent(cursor)}`);
    const coded = (what: string, expected: string, send: () => Promise<Response>) => async (): Promise<Outcome> => ({
      what,
      expected,
      actual: await codeOf(await send()),
    });
    const raw = (what: string, expected: string, request: string | Buffer) => async (): Promise<Outcome> => {
      const res = await rawRequest(gw.port, request, { timeoutMs: 3000 });
      const code = (/"code":"([a-z_]+)"/.exec(res.body) ?? [])[1] ?? '-';
      return { what, expected, actual: `${res.status} ${code}` };
    };
    const forged = formatCursor(new Map([[channel, { epoch: this.start.epoch, seq: 1_000_000 }]]));
    return [
      coded('a channel outside the grammar', '400 bad_channel', () => fetch(`${gw.url}${path}?channel=${ch}&channel=%20x`)),
      coded('an unconfigured namespace', '404 unknown_namespace', () => fetch(`${gw.url}${path}?channel=${ch}&channel=zzz:x`)),
      coded('no channel at all', '400 bad_request', () => fetch(`${gw.url}${path}`)),
      coded('65 channels', '429 limit_exceeded', () => fetch(`${gw.url}${path}?${Array.from({ length: 65 }, (_, i) => `channel=${ch}-${i}`).join('&')}`)),
      coded('a garbage cursor', '400 bad_cursor', () => withCursor('not a cursor')),
      coded('a cursor with a broken position', '400 bad_cursor', () => withCursor(`${channel}=x.!`)),
      coded('a forged cursor ahead of the channel', '400 bad_position', () => withCursor(forged)),
      coded('POST', '405 method_not_allowed', () => fetch(`${gw.url}${path}?channel=${ch}`, { method: 'POST', body: 'x' })),
      coded('DELETE', '405 method_not_allowed', () => fetch(`${gw.url}${path}?channel=${ch}`, { method: 'DELETE' })),
      raw('an unparseable content-length', '400 bad_request', `GET ${path}?channel=${ch} HTTP/1.1\r\nhost: x\r\ncontent-length: nope\r\n\r\n`),
      raw('a header line without a colon', '400 bad_request', `GET ${path}?channel=${ch} HTTP/1.1\r\nhost: x\r\nno colon here\r\n\r\n`),
      raw('a TLS hello on the plain port', '400 bad_request', Buffer.from('1603010200010001fc0303deadbeef000000000000000000000000', 'hex')),
      raw('oversized headers', '431 header_too_large', `GET ${path}?channel=${ch} HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(100_000)}\r\n\r\n`),
      raw('a target that is not a URL', '400 bad_request', `GET http://[${path} HTTP/1.1\r\nhost: x\r\n\r\n`),
      ...(sse ? [] : [coded('a timeout that is not a number', '400 bad_request', () => fetch(`${gw.url}/poll?channel=${ch}&timeout=soon`))]),
    ];
  }

  /** Drops every connection these clients still hold. */
  close(): void {
    for (const f of this.#closers.splice(0)) f();
  }
}
