// Lean WebSocket clients: a hand-written client handshake, a frame parser that hands whole text
// frames to the dialect, and pong replies. Dialects:
//   WsSubscriber        Tidings and the raw baseline: a `subscribe` frame (Tidings: the channel in
//                       the connect request instead), ready at its `reply`,
//                       counts `message` frames (it looks at one byte of the payload)
//   NchanWsSubscriber   Nchan: the channel is in the URL, every text frame is one publication's data
//   SocketIoSubscriber  Socket.IO 4 (Engine.IO v4 over WebSocket): `40` connect, `42[...]` events,
//                       pings `2` answered `3`; the server joins the room named in the query
import { readStamp } from './counters.mjs';
import { RawSubscriber } from './raw-subscriber.mjs';

/** A masked client frame (RFC 6455 5.3); a zero masking key leaves the payload as is. */
export function clientFrame(opcode, payload) {
  const len = payload.length;
  if (len >= 65536) throw new Error('client frames here are under 64 KiB');
  const head = len < 126 ? Buffer.from([0x80 | opcode, 0x80 | len, 0, 0, 0, 0]) : Buffer.from([0x80 | opcode, 0x80 | 126, len >> 8, len & 0xff, 0, 0, 0, 0]);
  return Buffer.concat([head, payload]);
}

const textFrame = (text) => clientFrame(1, Buffer.from(text));

/** The upgrade request for `path` on host:port, with `headers` (each ending in CRLF) added. */
function upgrade(host, port, path, headers) {
  return (
    `GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${headers}\r\n`
  );
}

/** A client WebSocket: whole text frames go to `text()`, pings are answered, a close frame ends it. */
export class WsConnection extends RawSubscriber {
  constructor(options, path, headers = '') {
    super(options, upgrade(options.host, options.port, path, headers), 'HTTP/1.1 101');
  }

  /** One whole text frame, payload `data[p..p+len)`; returns false when the connection ended. */
  text(_data, _p, _len) {
    return true;
  }

  /** Consumes whole frames from `data[i..end)`; returns where the first incomplete one starts. */
  consume(data, i, end) {
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
        if (!this.text(data, p, len)) return end;
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

  /** Counts one delivery, timed when this is a probe. */
  deliver(data, p, len) {
    const counters = this.counters;
    if (this.probe && counters.sampling) counters.sample(readStamp(data, p, p + len));
    counters.delivered++;
  }
}

const CHAR_M = 0x6d; // `m` of {"type":"message"
const CHAR_R = 0x72; // `r` of {"type":"reply"
const CHAR_E = 0x65; // `e` of {"type":"error"
const TYPE_AT = 9; // offset of that character in the payload

/**
 * Tidings (and the raw baseline): `GET /ws`, then a `subscribe` frame; or, with `connectSubscribe`,
 * `GET /ws?channel=`, which subscribes in the connect request. Either way it is ready at the reply.
 */
export class WsSubscriber extends WsConnection {
  #subscribe;

  constructor(options) {
    super(options, options.connectSubscribe ? `/ws?channel=${encodeURIComponent(options.channel)}` : '/ws');
    this.#subscribe = options.connectSubscribe ? undefined : textFrame(JSON.stringify({ type: 'subscribe', id: 1, channel: options.channel }));
  }

  opened() {
    if (this.#subscribe !== undefined) this.write(this.#subscribe);
  }

  text(data, p, len) {
    const kind = data[p + TYPE_AT];
    if (kind === CHAR_M) this.deliver(data, p, len);
    else if (kind === CHAR_R) this.markReady();
    else if (kind === CHAR_E) {
      this.end();
      return false;
    }
    return true;
  }
}

/** Nchan: `GET /ws?channel=`; subscribed once upgraded; each text frame is the data as published. */
export class NchanWsSubscriber extends WsConnection {
  constructor(options) {
    super(options, `/ws?channel=${encodeURIComponent(options.channel)}`);
  }

  opened() {
    this.markReady();
  }

  text(data, p, len) {
    this.deliver(data, p, len);
    return true;
  }
}

const EIO_OPEN = 0x30; // `0{"sid":..}`
const EIO_PING = 0x32; // `2`
const EIO_MESSAGE = 0x34; // `4` + a Socket.IO packet
const EIO_CLOSE = 0x31; // `1`
const SIO_CONNECT = 0x30; // `40{"sid":..}`
const SIO_EVENT = 0x32; // `42["message",{..}]`
const SIO_CONNECT_ERROR = 0x34; // `44{"message":..}`
const CONNECT = textFrame('40');
const PONG = textFrame('3');

/** Socket.IO 4: Engine.IO v4 over WebSocket only, the room named by the `channel` query. */
export class SocketIoSubscriber extends WsConnection {
  constructor(options) {
    super(options, `/socket.io/?EIO=4&transport=websocket&channel=${encodeURIComponent(options.channel)}`);
  }

  text(data, p, len) {
    const eio = data[p];
    if (eio === EIO_MESSAGE && len >= 2) {
      const sio = data[p + 1];
      if (sio === SIO_EVENT) this.deliver(data, p, len);
      else if (sio === SIO_CONNECT) this.markReady();
      else if (sio === SIO_CONNECT_ERROR) {
        this.end();
        return false;
      }
    } else if (eio === EIO_PING) {
      this.write(PONG);
    } else if (eio === EIO_OPEN) {
      this.write(CONNECT);
    } else if (eio === EIO_CLOSE) {
      this.end();
      return false;
    }
    return true;
  }
}
