// Baseline broadcast server, the practical Node ceiling: `ws` does the handshakes, and each
// publication is framed once and the same bytes are written to every subscriber's raw socket (raw
// ws), every SSE response (raw SSE) and every held long poll (raw poll).
// Speaks the Tidings shapes the load generator needs: POST /api/publish, GET /ws (a `subscribe`
// frame; or, with the API key as a bearer token, `publish` frames), GET /sse?channel=,
// GET /poll?channel=&cursor=.
// Usage: node raw-ws.mjs [port] [host]   (prints "listening on http://host:port")
import { createServer } from 'node:http';
import { WebSocketServer } from 'ws';
import { publishHandler, reply, serveWebSocket } from './http-api.mjs';

const port = Number(process.argv[2] ?? 0);
const host = process.argv[3] ?? '127.0.0.1';
const apiKey = process.env.TIDINGS_API_KEY ?? '';
const EPOCH = '00000000';

/** Publications a channel keeps for polls that come back behind (no more: the baseline has no history). */
const RECENT = 64;

/**
 * channel -> { seq, ws: Set<net.Socket>, sse: Set<http.ServerResponse>, polls: Set<http.ServerResponse>
 * (held, all at `seq`), recent: message JSON of the last RECENT publications, oldest first }
 */
const channels = new Map();

function channelOf(name) {
  let ch = channels.get(name);
  if (ch === undefined) channels.set(name, (ch = { name, seq: 0, ws: new Set(), sse: new Set(), polls: new Set(), recent: [] }));
  return ch;
}

/** The poll cursor text of a channel at `seq`, as Tidings writes it (`channel=epoch.seq36`). */
const cursorOf = (ch, seq) => `${ch.name}=${EPOCH}.${seq.toString(36)}`;

/** A complete unmasked text frame (RFC 6455 5.2): FIN + opcode 1, 7/16/64-bit length. */
function frameText(text) {
  const body = Buffer.from(text);
  const len = body.length;
  const head = Buffer.alloc(len < 126 ? 2 : len < 65536 ? 4 : 10);
  head[0] = 0x81;
  if (len < 126) {
    head[1] = len;
  } else if (len < 65536) {
    head[1] = 126;
    head.writeUInt16BE(len, 2);
  } else {
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(len), 2);
  }
  return Buffer.concat([head, body]);
}

/** Encodes a batch once per channel and writes the same bytes to every subscriber. */
function broadcast(pubs) {
  const byChannel = new Map();
  const results = [];
  for (const { channel, data } of pubs) {
    const ch = channelOf(channel);
    ch.seq += 1;
    const position = { epoch: EPOCH, seq: ch.seq };
    results.push({ channel, position, duplicate: false });
    const json = `{"channel":"${channel}","position":{"epoch":"${EPOCH}","seq":${ch.seq}},"data":${JSON.stringify(data)}}`;
    ch.recent.push(json);
    if (ch.recent.length > RECENT) ch.recent.shift();
    let out = byChannel.get(ch);
    if (out === undefined) byChannel.set(ch, (out = { ws: [], sse: [], json: [] }));
    out.ws.push(frameText(`{"type":"message","message":${json}}`));
    out.sse.push(Buffer.from(`data: ${json}\n\n`));
    out.json.push(json);
  }
  for (const [ch, out] of byChannel) {
    const ws = out.ws.length === 1 ? out.ws[0] : Buffer.concat(out.ws);
    const sse = out.sse.length === 1 ? out.sse[0] : Buffer.concat(out.sse);
    for (const socket of ch.ws) socket.write(ws);
    for (const res of ch.sse) res.write(sse);
    if (ch.polls.size > 0) {
      const body = pollBody(out.json, cursorOf(ch, ch.seq));
      for (const res of ch.polls) answerPoll(res, body);
      ch.polls.clear();
    }
  }
  return results;
}

const pollBody = (jsons, cursor) => Buffer.from(`{"messages":[${jsons.join(',')}],"gaps":[],"cursor":"${cursor}"}`);

function answerPoll(res, body) {
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
  res.end(body);
}

const publish = publishHandler(apiKey, broadcast);

function openSse(req, res, url) {
  const ch = channelOf(url.searchParams.get('channel') ?? '');
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  res.socket.setNoDelay(true);
  res.write(': welcome\n\n');
  ch.sse.add(res);
  res.on('close', () => ch.sse.delete(res));
}

/**
 * `GET /poll?channel=&cursor=`: answered at once when the cursor is behind (with what `recent`
 * still holds) or with `timeout=0`, else held until the next publication. No hold timeout.
 */
function poll(req, res, url) {
  const ch = channelOf(url.searchParams.get('channel') ?? '');
  const cursor = url.searchParams.get('cursor');
  const seq = cursor === null ? ch.seq : parseInt(cursor.slice(cursor.lastIndexOf('.') + 1), 36);
  if (seq < ch.seq || url.searchParams.get('timeout') === '0') {
    return answerPoll(res, pollBody(ch.recent.slice(Math.max(0, ch.recent.length - (ch.seq - seq))), cursorOf(ch, ch.seq)));
  }
  ch.polls.add(res);
  res.on('close', () => ch.polls.delete(res));
}

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, clientTracking: false });

const server = createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://baseline');
  if (req.method === 'POST' && url.pathname === '/api/publish') publish(req, res);
  else if (req.method === 'GET' && url.pathname === '/sse') openSse(req, res, url);
  else if (req.method === 'GET' && url.pathname === '/poll') poll(req, res, url);
  else reply(res, 404, { error: { code: 'not_found' } });
});

server.on('upgrade', (req, socket, head) => {
  socket.on('error', () => socket.destroy());
  wss.handleUpgrade(req, socket, head, (ws) =>
    serveWebSocket(ws, socket, {
      session: 'raw',
      epoch: EPOCH,
      server: req.headers.authorization === `Bearer ${apiKey}`,
      join: channelOf,
      publish: (message) => JSON.stringify(broadcast([message])[0]),
    }),
  );
});

server.listen(port, host, () => {
  const addr = server.address();
  process.stdout.write(`raw-ws listening on http://${host}:${addr.port}\n`);
});
process.once('SIGTERM', () => process.exit(0));
