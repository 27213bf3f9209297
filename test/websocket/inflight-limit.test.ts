/**
 * Requests in flight per WebSocket are bounded (`maxInflight`) without refusing any: past the bound
 * requests wait in order while the connection stops reading, an unsubscribe is applied after the
 * subscribe of its channel, and a client with more subscriptions than the bound gets every one.
 */
import { expect, it } from 'vitest';
import WebSocket from 'ws';
import { createClient, type WebSocketConstructor } from '@tidings/client';
import { cleanupAfterEach, RawWsClient, startGateway, until } from '@tidings/testing';

const cleanup = cleanupAfterEach();

it('an unsubscribe arriving while the connection has maxInflight requests in flight still unsubscribes', async () => {
  const gw = await startGateway({ maxInflight: 4 });
  cleanup.push(() => gw.close());
  const c = await RawWsClient.connect(gw.wsUrl);
  cleanup.push(() => c.terminate());
  // One TCP write: three subscribes and the fourth fill the four slots, then the unsubscribe of the fourth.
  const socket = (c.ws as unknown as { _socket: { cork(): void; uncork(): void } })._socket;
  socket.cork();
  for (const channel of ['a', 'b', 'c', 'x']) c.send({ type: 'subscribe', id: `subscribe ${channel}`, channel });
  c.send({ type: 'unsubscribe', id: 'unsubscribe x', channel: 'x' });
  socket.uncork();
  await c.until((x) => x.ofType('reply').length + x.ofType('error').length === 5);
  expect(c.ofType('error')).toEqual([]);
  await until(() => gw.gateway.stats().hub.channels === 3, 2000, 'x released');
});

it('holds one unsubscribe behind a subscribe an authorization hook holds up; more are answered at once', async () => {
  let release = (): void => undefined;
  const held = new Promise<boolean>((resolve) => (release = () => resolve(true)));
  const gw = await startGateway({}, { authorize: { subscribe: () => held } });
  cleanup.push(() => gw.close());
  const c = await RawWsClient.connect(gw.wsUrl);
  cleanup.push(() => c.terminate());
  c.send({ type: 'subscribe', id: 'subscribe', channel: 'slow' });
  for (let i = 0; i < 50; i++) c.send({ type: 'unsubscribe', id: `unsubscribe ${i}`, channel: 'slow' });
  // Every one past the first is answered while the subscribe still waits.
  await c.until((x) => x.ofType('error').length === 49);
  expect(new Set(c.ofType('error').map((f) => f.error.code))).toEqual(new Set(['not_subscribed']));
  expect(c.ofType('reply')).toEqual([]);
  release();
  await c.until((x) => x.ofType('reply').length === 2);
  expect(c.ofType('reply').map((f) => f.id).sort()).toEqual(['subscribe', 'unsubscribe 0']);
  await until(() => gw.gateway.stats().hub.channels === 0, 2000, 'slow released');
});

it('a WebSocket client with more subscriptions than maxInflight gets every one of them', async () => {
  const gw = await startGateway({});
  cleanup.push(() => gw.close());
  const client = createClient(gw.url, { transports: ['websocket'], WebSocket: WebSocket as unknown as WebSocketConstructor, storage: null });
  cleanup.push(() => client.close());
  const errors: string[] = [];
  const subs = Array.from({ length: 100 }, (_, i) => {
    const s = client.subscribe(`many-${i}`);
    s.on('error', (e) => errors.push(e.code));
    return s;
  });
  await until(() => subs.every((s) => s.position !== undefined || !s.active), 5000, 'every subscription answered');
  expect(errors).toEqual([]);
  expect(subs.filter((s) => s.position !== undefined)).toHaveLength(100);
});

it('runs a burst far past maxInflight, every request answered and none refused', async () => {
  const gw = await startGateway({ maxInflight: 4, demo: true });
  cleanup.push(() => gw.close());
  const c = await RawWsClient.connect(gw.wsUrl);
  cleanup.push(() => c.terminate());
  const socket = (c.ws as unknown as { _socket: { cork(): void; uncork(): void } })._socket;
  socket.cork();
  for (let i = 0; i < 1000; i++) c.send({ type: 'publish', id: i, message: { channel: 'demo:burst', data: i } });
  socket.uncork();
  await c.until((x) => x.ofType('reply').length + x.ofType('error').length === 1000, 10_000);
  expect(c.ofType('error')).toEqual([]);
  // Published in the order sent.
  const seqOf = new Map(c.ofType('reply').map((r) => [r.id, (r.result as { position: { seq: number } }).position.seq]));
  expect(Array.from({ length: 1000 }, (_, i) => seqOf.get(i))).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1));
});

it('keeps a connection whose reading stopped at maxInflight: its pongs wait unread, so their absence says nothing of the peer', async () => {
  let release = (): void => undefined;
  const held = new Promise<string>((resolve) => (release = () => resolve('done')));
  const gw = await startGateway({ maxInflight: 2, pingInterval: 300 }, { rpc: { slow: () => held } });
  cleanup.push(() => gw.close());
  const c = await RawWsClient.connect(gw.wsUrl);
  cleanup.push(() => c.terminate());
  // Two requests fill the bound, a third waits: the server stops reading this connection.
  for (let i = 0; i < 3; i++) c.send({ type: 'rpc', id: `slow ${i}`, method: 'slow' });
  // Several heartbeat intervals while nothing is read.
  await new Promise((r) => setTimeout(r, 1500));
  expect(c.closed).toBe(false);
  release();
  await c.until((x) => x.ofType('reply').length === 3, 3000);
  // Reading again, and judged again: still alive (it answers pings).
  await new Promise((r) => setTimeout(r, 900));
  expect(c.closed).toBe(false);
});
