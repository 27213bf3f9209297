// The connection half of the lean load-generator clients: a raw node:net socket that sends one
// HTTP/1.1 request, checks the response head, then hands every later byte to the subclass's
// parser. A streaming client (WebSocket, SSE) reads one head; a long-poll client asks for the next
// head (`nextResponse()`) after each complete answer. It reads into one buffer shared by every
// socket (onread callbacks run one at a time) and keeps only an incomplete tail between reads.
import { connect } from 'node:net';

const SHARED = Buffer.allocUnsafe(256 * 1024);
const HEADER_END = Buffer.from('\r\n\r\n');

export class RawSubscriber {
  /** Set by the subclass once the subscription is in place; counted in `counters.ready`. */
  ready = false;
  #socket;
  #status;
  #headed = false;
  #pending = null;
  #done = false;

  /** Connects to host:port, sends `request`, expects the status line to start with `status`. */
  constructor({ host, port, counters, probe, localAddress }, request, status) {
    this.counters = counters;
    this.probe = probe;
    this.#status = status;
    this.#socket = connect({
      host,
      port,
      localAddress,
      noDelay: true,
      onread: { buffer: SHARED, callback: (n, buf) => this.#onBytes(buf, n) },
    });
    this.#socket.on('connect', () => {
      this.#socket.write(request);
      this.sent();
    });
    this.#socket.on('error', () => this.end());
    this.#socket.on('close', () => this.end());
  }

  write(bytes) {
    this.#socket.write(bytes);
  }

  /** Subscribed and not closed since. */
  get alive() {
    return this.ready && !this.#done;
  }

  markReady() {
    if (this.ready) return;
    this.ready = true;
    this.counters.ready++;
  }

  close() {
    this.#done = true;
    this.#socket.destroy();
  }

  end() {
    if (this.#done) return;
    this.#done = true;
    // A subscriber that was ready counts as lost; one that never got there as failed.
    if (this.ready) this.counters.closed++;
    else this.counters.failed++;
    this.#socket.destroy();
  }

  /** Called once the first request is written. */
  sent() {}

  /** Checks a response head (status line and headers, latin1); false ends the connection. */
  head(text) {
    if (!text.startsWith(this.#status)) return false;
    this.opened();
    return true;
  }

  /** Called once the first response head arrived with the expected status. */
  opened() {}

  /** Consumes complete units from `data[i..end)`; returns where the first incomplete one starts. */
  consume(_data, i) {
    return i;
  }

  /** The bytes after the current answer start a new response head (long polling). */
  nextResponse() {
    this.#headed = false;
  }

  #onBytes(buf, n) {
    let data = buf;
    let end = n;
    if (this.#pending !== null) {
      data = Buffer.concat([this.#pending, buf.subarray(0, n)]);
      end = data.length;
      this.#pending = null;
    }
    let i = 0;
    while (!this.#done) {
      if (!this.#headed) {
        const at = data.subarray(0, end).indexOf(HEADER_END, i);
        if (at === -1) break;
        if (!this.head(data.toString('latin1', i, at))) return this.end();
        this.#headed = true;
        i = at + 4;
      }
      i = this.consume(data, i, end);
      // Still inside this answer (a stream, or a body not complete yet): wait for more bytes.
      if (this.#headed || i >= end) break;
    }
    if (i < end && !this.#done) this.#pending = Buffer.from(data.subarray(i, end));
  }
}
