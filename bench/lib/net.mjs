// Loopback helpers for the servers the bench starts itself: a free port, and a one-shot question.
import { connect, createServer } from 'node:net';

/** A port free on 127.0.0.1 right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Resolves with the first bytes the server answers to `request` on a fresh connection, or '' on error or after `ms`. */
export function ask(port, request, ms) {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    const done = (text) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(text);
    };
    const timer = setTimeout(() => done(''), ms);
    socket.once('error', () => done(''));
    socket.once('connect', () => (request === '' ? done('connected') : socket.write(request)));
    socket.once('data', (d) => done(d.toString('latin1')));
  });
}
