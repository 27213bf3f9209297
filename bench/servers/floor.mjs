// The Node floor: what the shapes the gateway's HTTP rows measure cost in Node with nothing but
// `net`. No HTTP server, no request or response objects, no validation, no history, no auth beyond
// one string compare: each connection's bytes are cut into requests by hand (pipelined requests
// read together, their answers corked into one write), a publication is framed once and written
// straight to its subscribers' sockets, and a held long poll is a socket in a set, answered with one
// buffer made once per publication. `ws` does the WebSocket handshakes only.
// Not a server anyone should run: it trusts its input. It shows how close to Nchan any Node
// server can come on these shapes (see bench/README.md, "The Node floor").
// Speaks what the load generator needs: POST /api/publish (one publication or an array),
// GET /ws (a `subscribe` frame; or, with the API key as a bearer token, `publish` frames), GET /poll?channel=&cursor=.
// Usage: node floor.mjs [port] [host]   (prints "listening on http://host:port")
import { createServer } from 'node:net';
import { URLSearchParams } from 'node:url';
import { WebSocketServer } from 'ws';
import { serveWebSocket } from './http-api.mjs';

const port = Number(process.argv[2] ?? 0);
const host = process.argv[3] ?? '127.0.0.1';
const bearer = `Bearer ${process.env.TIDINGS_API_KEY ?? ''}`;
const EPOCH = '00000000';
const HEAD_END = Buffer.from('\r\n\r\n');
/** Publications a channel keeps for polls that come back behind. */
const RECENT = 64;

/** channel -> { name, seq, ws: Set<Socket>, polls: Set<Socket> (held, all at `seq`), recent: message JSON, oldest first } */
const channels = new Map();

function channelOf(name) {
  let ch = channels.get(name);
  if (ch === undefined) channels.set(name, (ch = { name, seq: 0, ws: new Set(), polls: new Set(), recent: [] }));
  return ch;
}

const cursorOf = (ch, seq) => `${ch.name}=${EPOCH}.${seq.toString(36)}`;

/** A complete unmasked text frame (RFC 6455 5.2), 7- or 16-bit length. */
function frameText(text) {
  const len = Buffer.byteLength(text);
  const head = len < 126 ? 2 : 4;
  const frame = Buffer.allocUnsafe(head + len);
  frame[0] = 0x81;
  if (len < 126) frame[1] = len;
  else {
    frame[1] = 126;
    frame.writeUInt16BE(len, 2);
  }
  frame.write(text, head);
  return frame;
}

/** One HTTP/1.1 answer, head and body in one buffer. */
function answer(status, body) {
  const len = Buffer.byteLength(body);
  return `HTTP/1.1 ${status}\r\ncontent-type: application/json\r\ncontent-length: ${len}\r\n\r\n${body}`;
}

const pollAnswer = (jsons, cursor) => Buffer.from(answer('200 OK', `{"messages":[${jsons.join(',')}],"gaps":[],"cursor":"${cursor}"}`));

/** Publishes `pubs` in order; returns one result per publication. */
function broadcast(pubs) {
  const results = [];
  for (const { channel, data } of pubs) {
    const ch = channelOf(channel);
    ch.seq += 1;
    results.push(`{"channel":${JSON.stringify(channel)},"position":{"epoch":"${EPOCH}","seq":${ch.seq}},"duplicate":false}`);
    const json = `{"channel":${JSON.stringify(channel)},"position":{"epoch":"${EPOCH}","seq":${ch.seq}},"data":${JSON.stringify(data)}}`;
    ch.recent.push(json);
    if (ch.recent.length > RECENT) ch.recent.shift();
    if (ch.ws.size > 0) {
      const frame = frameText(`{"type":"message","message":${json}}`);
      for (const socket of ch.ws) socket.write(frame);
    }
    if (ch.polls.size > 0) {
      const bytes = pollAnswer([json], cursorOf(ch, ch.seq));
      for (const socket of ch.polls) {
        socket.write(bytes);
        resumeAfterPoll(socket);
      }
      ch.polls.clear();
    }
  }
  return results;
}

/** The value of `name` (lower case, with its colon) in head text `lower`, or ''. */
function headerOf(head, lower, name) {
  const at = lower.indexOf(`\r\n${name}`);
  if (at === -1) return '';
  const from = at + 2 + name.length;
  const to = head.indexOf('\r\n', from);
  return head.slice(from, to === -1 ? head.length : to).trim();
}

/** A connection's state: bytes not yet served, and the poll it holds (if any). */
const conns = new WeakMap();

function onData(chunk) {
  const conn = conns.get(this);
  conn.buf = conn.buf === undefined ? chunk : Buffer.concat([conn.buf, chunk]);
  serve(this, conn);
}

function resumeAfterPoll(socket) {
  const conn = conns.get(socket);
  conn.held = undefined;
  if (conn.buf !== undefined) serve(socket, conn);
}

/** Serves the whole requests in `conn.buf`, their answers corked into one write. */
function serve(socket, conn) {
  let corked = false;
  while (conn.buf !== undefined && conn.held === undefined) {
    const buf = conn.buf;
    const end = buf.indexOf(HEAD_END);
    if (end === -1) break;
    const head = buf.toString('latin1', 0, end);
    const lower = head.toLowerCase();
    const length = Number(headerOf(head, lower, 'content-length:') || 0);
    const total = end + 4 + length;
    if (buf.length < total) break;
    conn.buf = total < buf.length ? buf.subarray(total) : undefined;
    if (!corked && conn.buf !== undefined) {
      corked = true;
      socket.cork();
    }
    const line = head.slice(0, head.indexOf('\r\n'));
    const target = line.slice(line.indexOf(' ') + 1, line.lastIndexOf(' '));
    if (line.startsWith('POST /api/publish ')) {
      if (headerOf(head, lower, 'authorization:') !== bearer) {
        socket.write(answer('401 Unauthorized', '{"error":{"code":"unauthorized"}}'));
        continue;
      }
      const body = JSON.parse(buf.toString('utf8', end + 4, total));
      const results = broadcast(Array.isArray(body) ? body : [body]);
      socket.write(answer('200 OK', Array.isArray(body) ? `{"results":[${results.join(',')}]}` : results[0]));
    } else if (line.startsWith('GET /poll?')) {
      const query = new URLSearchParams(target.slice(target.indexOf('?') + 1));
      const ch = channelOf(query.get('channel') ?? '');
      const cursor = query.get('cursor');
      const seq = cursor === null ? ch.seq : parseInt(cursor.slice(cursor.lastIndexOf('.') + 1), 36);
      if (seq < ch.seq || query.get('timeout') === '0') {
        socket.write(pollAnswer(ch.recent.slice(Math.max(0, ch.recent.length - (ch.seq - seq))), cursorOf(ch, ch.seq)));
      } else {
        conn.held = ch;
        ch.polls.add(socket);
      }
    } else if (line.startsWith('GET /ws') && lower.includes('\r\nupgrade:')) {
      upgrade(socket, conn, head, target);
      break;
    } else {
      socket.write(answer('404 Not Found', '{"error":{"code":"not_found"}}'));
    }
  }
  if (corked) socket.uncork();
}

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, clientTracking: false });

/** Hands the socket to `ws` for the handshake; a subscriber then subscribes with its first frame. */
function upgrade(socket, conn, head, target) {
  socket.off('data', onData);
  const rest = conn.buf ?? Buffer.alloc(0);
  conn.buf = undefined;
  const headers = {};
  for (const line of head.split('\r\n').slice(1)) {
    const colon = line.indexOf(':');
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  const req = { method: 'GET', url: target, headers };
  wss.handleUpgrade(req, socket, rest, (ws) =>
    serveWebSocket(ws, socket, { session: 'floor', epoch: EPOCH, server: headers.authorization === bearer, join: channelOf, publish: (message) => broadcast([message])[0] }),
  );
}

const server = createServer({ noDelay: true }, (socket) => {
  conns.set(socket, { buf: undefined, held: undefined });
  socket.on('data', onData);
  socket.on('error', () => socket.destroy());
  socket.on('close', () => conns.get(socket)?.held?.polls.delete(socket));
});

server.listen(port, host, () => {
  const addr = server.address();
  process.stdout.write(`floor listening on http://${host}:${addr.port}\n`);
});
process.once('SIGTERM', () => process.exit(0));
