// A lean SSE subscriber over node:net: one raw HTTP/1.1 GET, then a scan of complete events
// (up to the last blank-line delimiter) that counts publications and reads probe send stamps.
import { connect } from 'node:net';
import { STAMP, readStamp } from './counters.mjs';

/** One receive buffer shared by every socket: onread callbacks run one at a time. */
const SHARED = Buffer.allocUnsafe(256 * 1024);
const HEADER_END = Buffer.from('\r\n\r\n');
const EVENT_END = Buffer.from('\n\n');

export class SseSubscriber {
  #socket;
  #open = false;
  #pending = null;
  #counters;
  #probe;
  #done = false;

  /** Opens GET /sse?channel=<channel> on host:port; progress goes to `counters`. */
  constructor({ host, port, channel, probe, counters, localAddress }) {
    this.#counters = counters;
    this.#probe = probe;
    this.#socket = connect({
      host,
      port,
      localAddress,
      noDelay: true,
      onread: { buffer: SHARED, callback: (n, buf) => this.#onBytes(buf, n) },
    });
    this.#socket.on('connect', () => {
      this.#socket.write(
        `GET /sse?channel=${encodeURIComponent(channel)} HTTP/1.1\r\nHost: ${host}:${port}\r\nAccept: text/event-stream\r\n\r\n`,
      );
    });
    this.#socket.on('error', () => this.#end());
    this.#socket.on('close', () => this.#end());
  }

  close() {
    this.#done = true;
    this.#socket.destroy();
  }

  #end() {
    if (this.#done) return;
    this.#done = true;
    // A subscriber that was ready counts as lost; one that never got there as failed.
    if (this.#open) this.#counters.closed++;
    else this.#counters.failed++;
    this.#socket.destroy();
  }

  #onBytes(buf, n) {
    let data = buf.subarray(0, n);
    if (this.#pending !== null) {
      data = Buffer.concat([this.#pending, data]);
      this.#pending = null;
    }
    let i = 0;
    if (!this.#open) {
      const head = data.indexOf(HEADER_END);
      if (head === -1) {
        this.#pending = Buffer.from(data);
        return;
      }
      if (data.toString('latin1', 0, 12) !== 'HTTP/1.1 200') return this.#end();
      this.#open = true;
      this.#counters.ready++;
      i = head + 4;
    }
    // Only whole events are scanned, so a stamp is never cut by a read boundary.
    const last = data.lastIndexOf(EVENT_END);
    const end = last < i ? i : last + 2;
    const counters = this.#counters;
    for (let at = data.indexOf(STAMP, i); at !== -1 && at < end; at = data.indexOf(STAMP, at + STAMP.length)) {
      if (this.#probe && counters.sampling) counters.sample(readStamp(data, at, end));
      counters.deliver();
    }
    if (end < data.length) this.#pending = Buffer.from(data.subarray(end));
  }
}
