// Publishing over one persistent server connection: a WebSocket to the server's publish path,
// authenticated with the API key (`Authorization: Bearer`), carrying the protocol's `publish`
// frames (`{"type":"publish","id":n,"message":{"channel":..,"data":{..}}}`), each answered by a
// `reply` or an `error` frame. `WsPublisher.open` checks the path with one publication first and
// rejects with "not supported by this server: ..." when it is not answered with a `reply`, so a
// server without such a path is skipped rather than measured wrong.
import { setTimeout as sleep } from 'node:timers/promises';
import { Counters, nowMicros } from './counters.mjs';
import { channelNames } from './publisher.mjs';
import { clientFrame, WsConnection } from './ws-client.mjs';

const CHAR_R = 0x72; // `r` of {"type":"reply"
const CHAR_E = 0x65; // `e` of {"type":"error"
const TYPE_AT = 9;
const PROBE_MS = 3000;

class PublishConnection extends WsConnection {
  constructor(owner, options, path, apiKey) {
    super({ ...options, counters: new Counters(), probe: false }, path, `Authorization: Bearer ${apiKey}\r\n`);
    this.owner = owner;
  }

  opened() {
    this.owner.opened();
  }

  text(data, p, len) {
    const kind = data[p + TYPE_AT];
    if (kind === CHAR_R) this.owner.acked++;
    else if (kind === CHAR_E) this.owner.refused(data.toString('utf8', p, p + len));
    return true;
  }

  end() {
    super.end();
    this.owner.lost();
  }
}

export class WsPublisher {
  sent = 0;
  acked = 0;
  errors = 0;
  /** The first `error` frame, for the probe's verdict. */
  firstError;
  #conn;
  #prefixes;
  #suffix;
  #next = 0;
  #whenOpen;
  #down = false;
  #port;

  constructor({ host, port, path, apiKey, channel, channels = 1, payload }) {
    this.#port = port;
    this.#prefixes = channelNames(channel, channels).map((name) => `,"message":{"channel":${JSON.stringify(name)},"data":{"bt":`);
    this.#suffix = `,"pad":${JSON.stringify('x'.repeat(payload))}}}}`;
    this.#whenOpen = new Promise((resolve) => (this.opened = resolve));
    this.#conn = new PublishConnection(this, { host, port }, path, apiKey);
  }

  /**
   * Connects and publishes one probe publication on `<channel>-probe`; resolves with the publisher
   * once it is acknowledged, or rejects with "not supported by this server: ..." within 3 s.
   */
  static async open(options) {
    const unsupported = (why) => new Error(`not supported by this server: ${options.path} with the API key: ${why.slice(0, 200)}`);
    const pub = new WsPublisher(options);
    const probe = new WsPublisher({ ...options, channels: 1, channel: `${options.channel}-probe` });
    try {
      if (!(await probe.#opened())) throw unsupported(`no upgrade within ${PROBE_MS} ms`);
      probe.publish();
      const t0 = Date.now();
      while (probe.acked === 0 && probe.errors === 0 && Date.now() - t0 < PROBE_MS) await sleep(10);
      if (probe.acked === 0) throw unsupported(probe.firstError ?? (probe.#down ? 'the connection was closed' : `no reply within ${PROBE_MS} ms`));
      if (!(await pub.#opened())) throw unsupported(`no upgrade within ${PROBE_MS} ms`);
      return pub;
    } catch (err) {
      pub.close();
      throw err;
    } finally {
      probe.close();
    }
  }

  /** Resolves true once upgraded, false after PROBE_MS. */
  #opened() {
    return Promise.race([this.#whenOpen.then(() => true), sleep(PROBE_MS).then(() => false)]);
  }

  get inFlight() {
    return this.sent - this.acked - this.errors;
  }

  /** Sends one publication now. */
  publish() {
    const id = ++this.sent;
    const c = this.#next++ % this.#prefixes.length;
    this.#conn.write(clientFrame(1, Buffer.from(`{"type":"publish","id":${id}${this.#prefixes[c]}${nowMicros()}${this.#suffix}`)));
  }

  flush() {}

  retarget(port) {
    if (port !== this.#port) throw new Error('a server connection publishes to the server it opened on');
  }

  refused(text) {
    this.errors++;
    this.firstError ??= text;
  }

  lost() {
    this.#down = true;
    this.errors += this.inFlight;
  }

  close() {
    this.#conn.close();
  }
}
