// A lean SSE subscriber: one raw HTTP/1.1 GET, then a scan of complete events (up to the last
// blank-line delimiter) that counts publications and reads probe send stamps. Tidings, the raw
// baseline and Nchan (`nchan_subscriber eventsource`) all serve `GET /sse?channel=`.
import { deliverStamps } from './counters.mjs';
import { RawSubscriber } from './raw-subscriber.mjs';

const EVENT_END = Buffer.from('\n\n');

export class SseSubscriber extends RawSubscriber {
  /** Opens GET /sse?channel=<channel> on host:port; progress goes to `counters`. */
  constructor(options) {
    const { host, port, channel } = options;
    super(options, `GET /sse?channel=${encodeURIComponent(channel)} HTTP/1.1\r\nHost: ${host}:${port}\r\nAccept: text/event-stream\r\n\r\n`, 'HTTP/1.1 200');
  }

  opened() {
    this.markReady();
  }

  consume(data, i, end) {
    // Only whole events are scanned, so a stamp is never cut by a read boundary.
    const last = data.subarray(0, end).lastIndexOf(EVENT_END);
    const stop = last < i ? i : last + 2;
    deliverStamps(this.counters, this.probe, data, i, stop);
    return stop;
  }
}
