// Publishes through `POST /api/publish` over keep-alive HTTP, stamping each publication's data
// with the send time so subscribers in this same process measure publish-to-receive latency.
import { Agent, request } from 'node:http';
import { nowMicros } from './counters.mjs';

export class Publisher {
  /** Publications sent, replies received, and failed requests. */
  sent = 0;
  acked = 0;
  errors = 0;
  #agent;
  #options;
  #channel;
  #pad;

  constructor({ host, port, apiKey, channel, payload, sockets }) {
    this.#agent = new Agent({ keepAlive: true, maxSockets: sockets });
    this.#channel = JSON.stringify(channel);
    this.#pad = JSON.stringify('x'.repeat(payload));
    this.#options = {
      host,
      port,
      method: 'POST',
      path: '/api/publish',
      agent: this.#agent,
      headers: { 'content-type': 'application/json', authorization: `Bearer ${apiKey}` },
    };
  }

  /** Requests sent and not yet answered. */
  get inFlight() {
    return this.sent - this.acked - this.errors;
  }

  /** Sends later publications to `port` on the same host (counters carry on). */
  retarget(port) {
    if (port !== this.#options.port) this.#options = { ...this.#options, port };
  }

  /** Sends one publication now. */
  publish() {
    const body = `{"channel":${this.#channel},"data":{"bt":${nowMicros()},"pad":${this.#pad}}}`;
    this.sent++;
    const req = request(this.#options, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? this.acked++ : this.errors++));
    });
    req.on('error', () => this.errors++);
    req.setHeader('content-length', Buffer.byteLength(body));
    req.end(body);
  }

  close() {
    this.#agent.destroy();
  }
}
