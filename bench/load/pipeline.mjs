// One keep-alive HTTP/1.1 connection with requests pipelined: written without waiting for the
// answers, which HTTP/1.1 returns in order. Each request carries a tag (a number: its send time,
// or how many publications it holds) that comes back with its answer. Only the status and the
// Content-Length of an answer are read.
import { connect } from 'node:net';

const HEADER_END = Buffer.from('\r\n\r\n');

export class Pipeline {
  #socket;
  #buf = Buffer.alloc(0);
  /** Tags of the requests written and not answered yet, oldest first. */
  #tags = [];
  #head = 0;
  #closed = false;
  #onAnswer;
  #onClose;

  /**
   * Connects to host:port. `onConnect()` runs once connected; `onAnswer(status, tag, closing)` for
   * every answer, in order (`closing`: the server said `Connection: close`); `onClose(tags)` once,
   * with the tags of the requests left unanswered.
   */
  constructor({ host, port, onConnect = () => undefined, onAnswer, onClose = () => undefined }) {
    this.#onAnswer = onAnswer;
    this.#onClose = onClose;
    const socket = connect({ host, port, noDelay: true });
    this.#socket = socket;
    socket.on('connect', onConnect);
    socket.on('data', (chunk) => this.#onData(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => this.#end());
  }

  /** Requests written and not answered yet. */
  get inFlight() {
    return this.#tags.length - this.#head;
  }

  get closed() {
    return this.#closed;
  }

  /** Writes one request (buffered until connected); `tag` comes back with its answer. */
  send(bytes, tag) {
    if (this.#closed) return false;
    this.#socket.write(bytes);
    this.#tags.push(tag);
    return true;
  }

  close() {
    this.#socket.destroy();
    this.#end();
  }

  #end() {
    if (this.#closed) return;
    this.#closed = true;
    const left = this.#tags.slice(this.#head);
    this.#tags = [];
    this.#head = 0;
    this.#onClose(left);
  }

  #onData(chunk) {
    let buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    let i = 0;
    for (;;) {
      const headEnd = buf.indexOf(HEADER_END, i);
      if (headEnd === -1) break;
      const head = buf.toString('latin1', i, headEnd).toLowerCase();
      const at = head.indexOf('\r\ncontent-length:');
      const length = at === -1 ? 0 : Number.parseInt(head.slice(at + 17), 10);
      const end = headEnd + 4 + length;
      if (buf.length < end) break;
      i = end;
      const tag = this.#tags[this.#head++];
      if (this.#head > 1024 && this.#head * 2 > this.#tags.length) {
        this.#tags = this.#tags.slice(this.#head);
        this.#head = 0;
      }
      this.#onAnswer(Number(head.slice(9, 12)), tag, head.includes('\r\nconnection: close'));
    }
    buf = buf.subarray(i);
    this.#buf = buf.length === 0 ? Buffer.alloc(0) : Buffer.from(buf);
  }
}
