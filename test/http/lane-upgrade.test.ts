/**
 * WebSocket upgrades on the fast lane: a handshake in the lane's subset is read by the lane and given
 * to the gateway's upgrade without Node's parser, and the connection is the WebSocket's from then on.
 * Frames sent right behind the head are read, also while the authentication hook takes its time; a
 * client that leaves meanwhile takes nothing down; a head cut by reads is waited for; a connection
 * that polled first upgrades after its answer; a handshake outside the subset is still Node's.
 */
import { connect, type Socket } from 'node:net';
import { expect, it } from 'vitest';
import type { Authenticator } from '@tidings/server';
import { cleanupAfterEach, clientFrame, Opcode, parseHead, parseServerFrames, startGateway, type TestGateway } from '@tidings/testing';

const cleanup = cleanupAfterEach();

const KEY = 'dGhlIHNhbXBsZSBub25jZQ==';
const handshake = (target: string, extra = ''): string =>
  `GET ${target} HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${KEY}\r\n${extra}\r\n`;
const request = (frame: object): Buffer => clientFrame(Opcode.text, JSON.stringify(frame));

async function gateway(auth?: Authenticator): Promise<TestGateway> {
  const gw = await startGateway({}, auth === undefined ? {} : { auth });
  cleanup.push(() => gw.close());
  return gw;
}

/** How many upgrades and requests Node's HTTP server parsed. */
function nodeParsed(gw: TestGateway): { upgrades: number; requests: number } {
  const counts = { upgrades: 0, requests: 0 };
  const upgrade = (): void => void (counts.upgrades += 1);
  const req = (): void => void (counts.requests += 1);
  gw.gateway.server.on('upgrade', upgrade);
  gw.gateway.server.on('request', req);
  cleanup.push(() => gw.gateway.server.off('upgrade', upgrade).off('request', req));
  return counts;
}

/** A client at the byte level: HTTP answers until a 101, then the server's (unmasked) text frames. */
class Peer {
  readonly socket: Socket;
  readonly statuses: number[] = [];
  readonly frames: Array<Record<string, unknown>> = [];
  closed = false;
  #bytes: Buffer = Buffer.alloc(0);
  #upgraded = false;

  constructor(port: number) {
    this.socket = connect(port, '127.0.0.1');
    this.socket.on('data', (chunk: Buffer) => this.#read(chunk));
    this.socket.on('close', () => (this.closed = true));
    this.socket.on('error', () => undefined);
    cleanup.push(() => this.socket.destroy());
  }

  send(bytes: string | Buffer): void {
    this.socket.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes);
  }

  /** Waits for a frame of `type` (and `id`, when given). */
  async frame(type: string, id?: string): Promise<Record<string, unknown>> {
    const match = (f: Record<string, unknown>): boolean => f.type === type && (id === undefined || f.id === id);
    await expect.poll(() => this.frames.some(match), { timeout: 5000 }).toBe(true);
    return this.frames.find(match) as Record<string, unknown>;
  }

  #read(chunk: Buffer): void {
    this.#bytes = Buffer.concat([this.#bytes, chunk]);
    while (!this.#upgraded) {
      const text = this.#bytes.toString('latin1');
      const head = parseHead(text);
      if (head === undefined) return;
      const length = head.status === 101 ? 0 : Number(head.headers['content-length'] ?? 0);
      if (Buffer.byteLength(head.body, 'latin1') < length) return;
      this.statuses.push(head.status);
      this.#upgraded = head.status === 101;
      this.#bytes = this.#bytes.subarray(text.length - head.body.length + length);
    }
    const { frames, rest } = parseServerFrames(this.#bytes);
    this.#bytes = rest;
    for (const frame of frames) {
      if (frame.opcode !== Opcode.text) continue;
      for (const line of frame.payload.toString('utf8').split('\n')) if (line !== '') this.frames.push(JSON.parse(line) as Record<string, unknown>);
    }
  }
}

it('upgrades on the lane: Node parses nothing, and frames sent with the head are read', async () => {
  const gw = await gateway();
  const node = nodeParsed(gw);
  const peer = new Peer(gw.port);
  // The head, the subscription in the connect request, and a request frame: one write.
  peer.send(Buffer.concat([Buffer.from(handshake('/ws?channel=news')), request({ type: 'subscribe', id: 'b', channel: 'chat' })]));
  expect(await peer.frame('welcome')).toBeDefined();
  expect(await peer.frame('reply', 'subscribe:news')).toBeDefined();
  expect(await peer.frame('reply', 'b')).toBeDefined();
  expect(peer.statuses).toEqual([101]);
  await gw.publish('chat', { n: 1 });
  expect(await peer.frame('message')).toMatchObject({ message: { channel: 'chat', data: { n: 1 } } });
  expect(node).toEqual({ upgrades: 0, requests: 0 });
});

it('keeps frames sent while the authentication hook decides, and a client that leaves meanwhile takes nothing down', async () => {
  let admitted = 0;
  const auth: Authenticator = {
    connect: () => new Promise((resolve) => setTimeout(() => resolve({ user: `u${++admitted}`, anonymous: false }), 200)),
    canSubscribe: () => true,
    canPublish: () => true,
  };
  const gw = await gateway(auth);
  const node = nodeParsed(gw);

  // Two leave with a reset while their upgrades wait for the hook: one read by the lane, one by
  // Node (a header twice is outside the lane's subset).
  const leaving = [new Peer(gw.port), new Peer(gw.port)];
  leaving[0]?.send(handshake('/ws'));
  leaving[1]?.send(handshake('/ws', 'X-A: 1\r\nX-A: 2\r\n'));
  const staying = new Peer(gw.port);
  staying.send(Buffer.concat([Buffer.from(handshake('/ws')), request({ type: 'subscribe', id: 'a', channel: 'news' })]));
  await new Promise((resolve) => setTimeout(resolve, 50));
  for (const peer of leaving) peer.socket.resetAndDestroy();
  staying.send(request({ type: 'subscribe', id: 'b', channel: 'chat' }));

  expect(await staying.frame('reply', 'b')).toBeDefined();
  // Both read, in the order sent.
  expect(staying.frames.map((f) => f.id ?? f.type)).toEqual(['welcome', 'a', 'b']);
  expect(node.upgrades).toBe(1);
  expect((await fetch(`${gw.url}/healthz`)).status).toBe(200);
  // The ones that left hold no connection: only the one that stayed is counted.
  await expect.poll(() => gw.gateway.connections().websocket, { timeout: 5000 }).toBe(1);
});

it('waits for a handshake cut by reads, wherever the cut', async () => {
  const gw = await gateway();
  const node = nodeParsed(gw);
  const text = handshake('/ws?channel=news', 'Origin: http://gw\r\n');
  for (const cut of [1, 4, 20, text.indexOf('Upgrade'), text.length - 3, text.length - 1]) {
    const peer = new Peer(gw.port);
    peer.send(text.slice(0, cut));
    await new Promise((resolve) => setTimeout(resolve, 20));
    peer.send(text.slice(cut));
    expect(await peer.frame('reply', 'subscribe:news')).toBeDefined();
    peer.socket.destroy();
  }
  expect(node.upgrades).toBe(0);
});

it('upgrades a connection that polled first, after the poll is answered, pipelined or not', async () => {
  const gw = await gateway();
  const node = nodeParsed(gw);
  const pollHead = 'GET /poll?channel=news&timeout=0 HTTP/1.1\r\nHost: gw\r\n\r\n';
  for (const pipelined of [false, true]) {
    const peer = new Peer(gw.port);
    peer.send(pollHead);
    if (!pipelined) await expect.poll(() => peer.statuses, { timeout: 5000 }).toEqual([200]);
    peer.send(handshake('/ws?channel=news'));
    expect(await peer.frame('reply', 'subscribe:news')).toBeDefined();
    expect(peer.statuses).toEqual([200, 101]);
  }
  expect(node).toEqual({ upgrades: 0, requests: 0 });
});

it("leaves a handshake outside the lane's subset to Node, which upgrades it the same", async () => {
  const gw = await gateway();
  const node = nodeParsed(gw);
  const peer = new Peer(gw.port);
  // A header twice is Node's to judge.
  peer.send(handshake('/ws?channel=news', 'X-A: 1\r\nX-A: 2\r\n'));
  expect(await peer.frame('reply', 'subscribe:news')).toBeDefined();
  expect(node.upgrades).toBe(1);
});
