/**
 * Lingering closes, as nginx does them: the last bytes go out with FIN, and what the client is still
 * sending is read and dropped for a short while before the connection is cut. Cutting at once would
 * reset a connection with data unread, and the client could lose the answer to the reset.
 * @module
 */
import type { Duplex } from 'node:stream';

/** How long, and how much, is read after the last bytes before the connection is cut. */
const LINGER_MS = 2000;
const LINGER_BYTES = 1024 * 1024;

/**
 * Node ends a connection whose answer said `Connection: close` with `destroySoon()`: FIN, then
 * destroy once it is flushed. Here that becomes {@link lingerAndClose}.
 */
export function lingerWhenClosed(socket: Duplex): void {
  (socket as Duplex & { destroySoon?: () => void }).destroySoon = function (this: Duplex): void {
    lingerAndClose(this);
  };
}

/** Sends `last` (if any) and FIN, then reads and drops for a short while before cutting. */
export function lingerAndClose(socket: Duplex, last?: Buffer): void {
  if (socket.destroyed || !socket.writable) return;
  if (last === undefined) socket.end();
  else socket.end(last);
  let read = 0;
  const cut = setTimeout(() => socket.destroy(), LINGER_MS).unref();
  socket.on('data', (chunk: Buffer) => {
    read += chunk.length;
    if (read > LINGER_BYTES) socket.destroy();
  });
  socket.once('close', () => clearTimeout(cut));
}
