// Acknowledged-publish load for `POST /api/publish`: raw keep-alive connections, each keeping a
// fixed number of requests pipelined (written without waiting for the answers, which HTTP/1.1
// returns in order) and writing the next request the moment one is answered, so the number in
// flight stays fixed. Requests are built once; only 200 answers count as acknowledged. Each answer
// is timed against its request's send time (publish-to-acknowledgement latency).
import { Counters, nowMicros } from './counters.mjs';
import { Pipeline } from './pipeline.mjs';

const RECONNECT_MS = 100;

/** One pipelined keep-alive connection that writes the next request the moment one is answered; reopened when the server closes it. */
class Connection {
  #owner;
  #index;
  #pipe;
  #next = 0;
  #closed = false;

  constructor(owner, index) {
    this.#owner = owner;
    this.#index = index;
    this.#open();
  }

  get inFlight() {
    return this.#pipe.inFlight;
  }

  #open() {
    const { host, port } = this.#owner.targetOf(this.#index);
    const pipe = new Pipeline({
      host,
      port,
      onConnect: () => {
        for (let k = 0; k < this.#owner.depth; k++) this.#send();
      },
      onAnswer: (status, sent, closing) => {
        this.#owner.answered(this.#index, status, sent);
        // A server closing the connection says so; the close handler opens another.
        if (!closing) this.#send();
      },
      onClose: (left) => {
        if (pipe !== this.#pipe) return;
        this.#owner.dropped(left.length);
        if (this.#owner.running && !this.#closed) setTimeout(() => this.#closed || this.#open(), RECONNECT_MS);
      },
    });
    this.#pipe = pipe;
  }

  #send() {
    if (!this.#owner.running || this.#closed) return;
    this.#pipe.send(this.#owner.request(this.#next++), nowMicros());
  }

  close() {
    this.#closed = true;
    this.#pipe.close();
  }
}

export class Blaster {
  /** Publications acknowledged (200), requests answered 200, answered otherwise, and lost to a closed connection. */
  acked = 0;
  answeredOk = 0;
  refused = 0;
  droppedRequests = 0;
  /** Answers by HTTP status. */
  statuses = {};
  running = false;
  /** Publish-to-acknowledgement latency, sampled while `latency.sampling`. */
  latency = new Counters();
  depth;
  #ports;
  #host;
  #perPort;
  #requests;
  #batch;
  #connections = [];
  #count;

  /**
   * `connections` connections to each of `ports`, `depth` requests pipelined on each. Every
   * request holds `batch` publications (one object when 1, an array otherwise) on one of
   * `channels` channels named `<channel>-<k>` (just `channel` when 1), taken in turn.
   */
  constructor({ host, ports, apiKey, channel, channels = 1, payload, batch = 1, connections, depth }) {
    this.#host = host;
    this.#ports = ports;
    this.#perPort = ports.map(() => 0);
    this.#batch = batch;
    this.#count = connections * ports.length;
    this.depth = depth;
    const pad = 'x'.repeat(payload);
    this.#requests = Array.from({ length: Math.max(1, channels) }, (_, k) => {
      const name = channels > 1 ? `${channel}-${k}` : channel;
      const one = JSON.stringify({ channel: name, data: { pad } });
      const body = batch === 1 ? one : `[${Array.from({ length: batch }, () => one).join(',')}]`;
      return Buffer.from(
        `POST /api/publish HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${apiKey}\r\n` +
          `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
      );
    });
  }

  /** Connection `index`'s server: connections are spread evenly over the ports. */
  targetOf(index) {
    return { host: this.#host, port: this.#ports[index % this.#ports.length] };
  }

  /** The `n`th request of a connection. */
  request(n) {
    return this.#requests[n % this.#requests.length];
  }

  /** Requests written and not answered yet, over every connection. */
  get inFlight() {
    return this.#connections.reduce((sum, c) => sum + c.inFlight, 0);
  }

  start() {
    this.running = true;
    for (let i = 0; i < this.#count; i++) this.#connections.push(new Connection(this, i));
  }

  /** Stops writing requests; those in flight still get answered. */
  stop() {
    this.running = false;
  }

  close() {
    this.running = false;
    for (const c of this.#connections) c.close();
  }

  answered(index, status, sentMicros) {
    this.statuses[status] = (this.statuses[status] ?? 0) + 1;
    if (status !== 200) {
      this.refused++;
      return;
    }
    this.answeredOk++;
    this.acked += this.#batch;
    this.#perPort[index % this.#ports.length] += this.#batch;
    if (sentMicros !== undefined) this.latency.sample(sentMicros);
  }

  dropped(n) {
    this.droppedRequests += n;
  }

  /** Counters at one instant. */
  snapshot() {
    return { acked: this.acked, answered: this.answeredOk, refused: this.refused, dropped: this.droppedRequests, perPort: [...this.#perPort], statuses: { ...this.statuses } };
  }
}
