// Open-loop HTTP publisher: each publication is written the moment it is due, on a few keep-alive
// connections taken in turn with requests pipelined (never waiting for answers), and stamped with
// the send time in its data (`"bt"`) so subscribers in this same process measure
// publish-to-receive latency. Publications go to the channels `<channel>-0 .. -<channels-1>` in
// turn (just `<channel>` when there is one). Request shapes:
//   api    `POST /api/publish` with the API key, `{"channel":..,"data":{..}}` (Tidings, the raw
//          baseline, the Socket.IO server); with `batch` > 1, an array of that many publications
//          per request, each stamped when the request is written
//   nchan  `POST /pub?channel=<channel>` with the data itself as the body (`nchan_publisher`)
import { nowMicros } from './counters.mjs';
import { Pipeline } from './pipeline.mjs';

/** The channel of each publication, in turn: `<channel>-<k>` for k < channels, or `channel` alone. */
export function channelNames(channel, channels) {
  return channels > 1 ? Array.from({ length: channels }, (_, k) => `${channel}-${k}`) : [channel];
}

export class HttpPublisher {
  /** Publications handed over, publications acknowledged (2xx), and publications refused or lost. */
  sent = 0;
  acked = 0;
  errors = 0;
  #host;
  #port;
  #pipes = [];
  #turn = 0;
  #sockets;
  #heads;
  #prefixes;
  #suffix;
  #batch;
  #queued = [];
  #next = 0;

  constructor({ host, port, apiKey, channel, channels = 1, payload, format = 'api', batch = 1, sockets = 4 }) {
    this.#host = host;
    this.#port = port;
    this.#sockets = Math.max(1, sockets);
    this.#batch = format === 'api' ? Math.max(1, batch) : 1;
    const names = channelNames(channel, channels);
    const pad = JSON.stringify('x'.repeat(payload));
    this.#suffix = `,"pad":${pad}}${format === 'api' ? '}' : ''}`;
    if (format === 'nchan') {
      this.#heads = names.map((name) => `POST /pub?channel=${encodeURIComponent(name)} HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/json\r\nContent-Length: `);
      this.#prefixes = names.map(() => '{"bt":');
    } else if (format === 'api') {
      const head = `POST /api/publish HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${apiKey}\r\nContent-Type: application/json\r\nContent-Length: `;
      this.#heads = names.map(() => head);
      this.#prefixes = names.map((name) => `{"channel":${JSON.stringify(name)},"data":{"bt":`);
    } else {
      throw new Error(`unknown publish format ${format}`);
    }
  }

  /** Publications handed over and not answered yet (queued for a batch included). */
  get inFlight() {
    return this.sent - this.acked - this.errors;
  }

  /** Sends later publications to `port` on the same host (counters carry on). */
  retarget(port) {
    if (port === this.#port) return;
    this.#port = port;
    for (const pipe of this.#pipes) pipe.close();
    this.#pipes = [];
  }

  /** Hands over one publication: written now, or queued until a batch is full. */
  publish() {
    this.sent++;
    const c = this.#next++ % this.#prefixes.length;
    if (this.#batch === 1) {
      const body = `${this.#prefixes[c]}${nowMicros()}${this.#suffix}`;
      this.#write(`${this.#heads[c]}${body.length}\r\n\r\n${body}`, 1);
      return;
    }
    this.#queued.push(c);
    if (this.#queued.length >= this.#batch) this.flush();
  }

  /** Writes the publications queued for a batch, if any. */
  flush() {
    const n = this.#queued.length;
    if (n === 0) return;
    const bt = nowMicros();
    const body = `[${this.#queued.map((c) => `${this.#prefixes[c]}${bt}${this.#suffix}`).join(',')}]`;
    this.#write(`${this.#heads[0]}${body.length}\r\n\r\n${body}`, n);
    this.#queued = [];
  }

  close() {
    for (const pipe of this.#pipes) pipe.close();
  }

  /** Writes a request holding `count` publications on the next connection, opening it when needed. */
  #write(text, count) {
    const k = this.#turn++ % this.#sockets;
    let pipe = this.#pipes[k];
    if (pipe === undefined || pipe.closed) {
      pipe = new Pipeline({
        host: this.#host,
        port: this.#port,
        onAnswer: (status, n) => (status >= 200 && status < 300 ? (this.acked += n) : (this.errors += n)),
        onClose: (left) => (this.errors += left.reduce((sum, n) => sum + n, 0)),
      });
      this.#pipes[k] = pipe;
    }
    pipe.send(text, count);
  }
}
