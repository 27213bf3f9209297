/**
 * Counts the writes the server makes to the next connection it accepts: one entry per write to the
 * kernel (`_write` or `_writev`), the number of chunks it carried. For tests of write coalescing.
 * @module
 */
import type { Server } from 'node:http';
import type { Socket } from 'node:net';

/** The writes to the next connection `server` accepts, as they happen. */
export function watchNextConnectionWrites(server: Server): number[] {
  const writes: number[] = [];
  server.once('connection', (socket: Socket) => {
    const write = socket._write.bind(socket);
    const writev = socket._writev?.bind(socket);
    socket._write = (chunk, encoding, cb) => {
      writes.push(1);
      write(chunk, encoding, cb);
    };
    if (writev !== undefined) {
      socket._writev = (chunks, cb) => {
        writes.push(chunks.length);
        writev(chunks, cb);
      };
    }
  });
  return writes;
}
