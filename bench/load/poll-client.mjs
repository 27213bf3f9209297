// Lean long-poll subscribers: one keep-alive HTTP/1.1 connection each, asking again the moment an
// answer is complete (bodies are read by Content-Length; every answer here has one).
//   TidingsPollSubscriber  Tidings and the raw baseline: `GET /poll?channel=&cursor=`, answered with
//                          `{"messages":[..],"gaps":[..],"cursor":".."}`; the first poll asks
//                          `timeout=0` and is answered at once with the cursor, so the subscriber is
//                          ready (and loses nothing after) as soon as it has one
//   NchanPollSubscriber    Nchan (`nchan_subscriber longpoll`): one message per answer, the body as
//                          published; the next one is asked for with If-Modified-Since / If-None-Match
//                          set from the answer's Last-Modified / Etag
import { deliverStamps } from './counters.mjs';
import { RawSubscriber } from './raw-subscriber.mjs';

const CURSOR = Buffer.from('"cursor":"');
const QUOTE = 0x22;

/** The value of header `name` (lower case) in a response head, or undefined. */
function header(head, lower, name) {
  const at = lower.indexOf(`\r\n${name}:`);
  if (at === -1) return undefined;
  const from = at + name.length + 3;
  const to = head.indexOf('\r\n', from);
  return head.slice(from, to === -1 ? head.length : to).trim();
}

class PollSubscriber extends RawSubscriber {
  #status = 0;
  #length = 0;

  constructor(options, request) {
    super(options, request, 'HTTP/1.1 ');
    this.target = `${options.host}:${options.port}`;
  }

  head(text) {
    const lower = text.toLowerCase();
    this.#status = Number(text.slice(9, 12));
    this.#length = Number(header(text, lower, 'content-length') ?? 0);
    // 304 / 408: nothing new within the server's hold time; ask again.
    if (this.#status !== 200 && this.#status !== 304 && this.#status !== 408) return false;
    if (this.#status === 200) this.answered(text, lower);
    return true;
  }

  consume(data, i, end) {
    if (end - i < this.#length) return i;
    const stop = i + this.#length;
    if (this.#status === 200 && !this.body(data, i, stop)) {
      this.end();
      return end;
    }
    this.nextResponse();
    this.write(this.request());
    return stop;
  }

  /** A 200 answer's head. */
  answered(_head, _lower) {}

  /** A 200 answer's whole body; false ends the connection. */
  body(_data, _from, _to) {
    return true;
  }

  /** The next poll request. */
  request() {
    return '';
  }
}

export class TidingsPollSubscriber extends PollSubscriber {
  #path;
  #cursor = '';

  constructor(options) {
    const path = `/poll?channel=${encodeURIComponent(options.channel)}`;
    super(options, `GET ${path}&timeout=0 HTTP/1.1\r\nHost: ${options.host}:${options.port}\r\n\r\n`);
    this.#path = path;
  }

  body(data, from, to) {
    const view = data.subarray(0, to);
    const at = view.lastIndexOf(CURSOR);
    if (at < from) return false;
    const start = at + CURSOR.length;
    const stop = view.indexOf(QUOTE, start);
    if (stop === -1) return false;
    this.#cursor = encodeURIComponent(data.toString('latin1', start, stop));
    if (this.ready) deliverStamps(this.counters, this.probe, data, from, at);
    else this.markReady();
    return true;
  }

  request() {
    return `GET ${this.#path}&cursor=${this.#cursor} HTTP/1.1\r\nHost: ${this.target}\r\n\r\n`;
  }
}

export class NchanPollSubscriber extends PollSubscriber {
  #path;
  #since = '';

  constructor(options) {
    const path = `/poll?channel=${encodeURIComponent(options.channel)}`;
    super(options, `GET ${path} HTTP/1.1\r\nHost: ${options.host}:${options.port}\r\n\r\n`);
    this.#path = path;
  }

  /** Nchan gives no sign that a poll is registered: it counts as subscribed once asked (the warm-up covers the rest). */
  sent() {
    this.markReady();
  }

  answered(head, lower) {
    this.#since = `If-Modified-Since: ${header(head, lower, 'last-modified')}\r\nIf-None-Match: ${header(head, lower, 'etag')}\r\n`;
  }

  body(data, from, to) {
    deliverStamps(this.counters, this.probe, data, from, to);
    return true;
  }

  request() {
    return `GET ${this.#path} HTTP/1.1\r\nHost: ${this.target}\r\n${this.#since}\r\n`;
  }
}
