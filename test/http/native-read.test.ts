/**
 * The gateway's HTTP sockets stay on Node's native read path: the server's parser reads the socket
 * directly, without stream `data` events. A `data` listener on such a socket (for instance to learn
 * that a connection has spoken) takes the parser off that path for the rest of the connection, and
 * every request's bytes then go through stream events. Node marks the parser `_consumed` while it
 * reads the socket itself. (A connection whose first request is not a plain poll goes from the
 * gateway's fast lane to Node's server at its first bytes, and from then on is read natively.)
 */
import type { Socket } from 'node:net';
import { connect } from 'node:net';
import { expect, it } from 'vitest';
import { cleanupAfterEach, startGateway } from '@tidings/testing';

const cleanup = cleanupAfterEach();

/** Whether the HTTP parser of `socket` reads it directly (Node's own flag). */
const native = (socket: Socket): unknown => (socket as Socket & { parser?: { _consumed?: boolean } | null }).parser?._consumed;

it('keeps a keep-alive connection on the native read path through its requests', async () => {
  const gw = await startGateway();
  cleanup.push(() => gw.close());
  const accepted = new Promise<Socket>((resolve) => gw.gateway.server.once('connection', resolve));
  const client = connect(gw.port, '127.0.0.1');
  cleanup.push(() => client.destroy());
  const socket = await accepted;

  // Two requests on the one connection: each is answered, and the parser reads the socket itself.
  let received = '';
  client.on('data', (d: Buffer) => (received += d.toString('latin1')));
  for (let i = 1; i <= 2; i++) {
    client.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    await expect.poll(() => received.split('HTTP/1.1 200').length - 1, { timeout: 5000 }).toBe(i);
    expect(native(socket)).toBe(true);
  }
  expect(socket.listenerCount('data')).toBe(1);
});
