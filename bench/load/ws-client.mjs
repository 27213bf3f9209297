// A lean WebSocket subscriber: hand-written client handshake, a frame parser that only counts
// `message` frames and reads the send stamp of probe subscribers, and pong replies.
import { readStamp } from './counters.mjs';
import { RawSubscriber } from './raw-subscriber.mjs';

const CHAR_M = 0x6d; // `m` of {"type":"message"
const CHAR_R = 0x72; // `r` of {"type":"reply"
const CHAR_E = 0x65; // `e` of {"type":"error"
const TYPE_AT = 9; // offset of that character in the payload

/** A masked client frame (RFC 6455 5.3); a zero masking key leaves the payload as is. */
function clientFrame(opcode, payload) {
  if (payload.length > 125) throw new Error('client frames here are short');
  return Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | payload.length, 0, 0, 0, 0]), payload]);
}

export class WsSubscriber extends RawSubscriber {
  #subscribe;

  /** Connects to ws://host:port/ws and subscribes to `channel`; progress goes to `counters`. */
  constructor(options) {
    const { host, port, channel } = options;
    super(
      options,
      `GET /ws HTTP/1.1\r\nHost: ${host}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
      'HTTP/1.1 101',
    );
    this.#subscribe = clientFrame(1, Buffer.from(JSON.stringify({ type: 'subscribe', id: 1, channel })));
  }

  opened() {
    this.write(this.#subscribe);
  }

  /** Consumes whole frames from `data[i..end)`; returns where the first incomplete one starts. */
  consume(data, i, end) {
    const counters = this.counters;
    while (end - i >= 2) {
      const b0 = data[i];
      let len = data[i + 1] & 0x7f;
      let head = 2;
      if (len === 126) {
        if (end - i < 4) break;
        len = data.readUInt16BE(i + 2);
        head = 4;
      } else if (len === 127) {
        if (end - i < 10) break;
        len = data.readUInt32BE(i + 2) * 2 ** 32 + data.readUInt32BE(i + 6);
        head = 10;
      }
      if (end - i < head + len) break;
      const p = i + head;
      const opcode = b0 & 0x0f;
      if (opcode === 1) {
        const kind = data[p + TYPE_AT];
        if (kind === CHAR_M) {
          if (this.probe && counters.sampling) counters.sample(readStamp(data, p, p + len));
          counters.deliver();
        } else if (kind === CHAR_R) {
          this.markReady();
        } else if (kind === CHAR_E) {
          this.end();
          return end;
        }
      } else if (opcode === 9) {
        this.write(clientFrame(10, Buffer.from(data.subarray(p, p + len))));
      } else if (opcode === 8) {
        this.end();
        return end;
      }
      i = p + len;
    }
    return i;
  }
}
