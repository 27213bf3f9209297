// Baseline broadcast server, the practical Node ceiling: `ws` does the handshakes, and each
// publication is framed once and the same bytes are written to every subscriber's raw socket.
// Speaks the Tidings shapes the load generator needs: POST /api/publish, GET /ws, GET /sse?channel=.
// Usage: node raw-ws.mjs [port] [host]   (prints "listening on http://host:port")
import { createServer } from 'node:http';
import { WebSocketServer } from 'ws';

const port = Number(process.argv[2] ?? 0);
const host = process.argv[3] ?? '127.0.0.1';
const apiKey = process.env.TIDINGS_API_KEY ?? '';
const EPOCH = '00000000';

/** channel -> { seq, ws: Set<net.Socket>, sse: Set<http.ServerResponse> } */
const channels = new Map();

function channelOf(name) {
  let ch = channels.get(name);
  if (ch === undefined) channels.set(name, (ch = { seq: 0, ws: new Set(), sse: new Set() }));
  return ch;
}

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
    let out = byChannel.get(ch);
    if (out === undefined) byChannel.set(ch, (out = { ws: [], sse: [] }));
    out.ws.push(frameText(`{"type":"message","message":${json}}`));
    out.sse.push(Buffer.from(`data: ${json}\n\n`));
  }
  for (const [ch, out] of byChannel) {
    const ws = out.ws.length === 1 ? out.ws[0] : Buffer.concat(out.ws);
    const sse = out.sse.length === 1 ? out.sse[0] : Buffer.concat(out.sse);
    for (const socket of ch.ws) socket.write(ws);
    for (const res of ch.sse) res.write(sse);
  }
  return results;
}

function reply(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function publish(req, res) {
  if (req.headers.authorization !== `Bearer ${apiKey}`) return reply(res, 401, { error: { code: 'unauthorized' } });
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      return reply(res, 400, { error: { code: 'bad_json' } });
    }
    const results = broadcast(Array.isArray(body) ? body : [body]);
    reply(res, 200, Array.isArray(body) ? { results } : results[0]);
  });
}

function openSse(req, res, url) {
  const ch = channelOf(url.searchParams.get('channel') ?? '');
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  res.socket.setNoDelay(true);
  res.write(': welcome\n\n');
  ch.sse.add(res);
  res.on('close', () => ch.sse.delete(res));
}

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, clientTracking: false });

const server = createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://baseline');
  if (req.method === 'POST' && url.pathname === '/api/publish') publish(req, res);
  else if (req.method === 'GET' && url.pathname === '/sse') openSse(req, res, url);
  else reply(res, 404, { error: { code: 'not_found' } });
});

server.on('upgrade', (req, socket, head) => {
  socket.on('error', () => socket.destroy());
  wss.handleUpgrade(req, socket, head, (ws) => {
    let ch;
    ws.send(JSON.stringify({ type: 'welcome', version: 1, session: 'raw', heartbeat: 0 }));
    // The first frame is the subscribe request; later frames are ignored.
    ws.on('message', (data) => {
      if (ch !== undefined) return;
      const frame = JSON.parse(data.toString('utf8'));
      ch = channelOf(frame.channel);
      ch.ws.add(socket);
      ws.send(JSON.stringify({ type: 'reply', id: frame.id, result: { channel: frame.channel, position: { epoch: EPOCH, seq: ch.seq }, recovered: false } }));
    });
    ws.on('close', () => ch?.ws.delete(socket));
    ws.on('error', () => undefined);
  });
});

server.listen(port, host, () => {
  const addr = server.address();
  process.stdout.write(`raw-ws listening on http://${host}:${addr.port}\n`);
});
process.once('SIGTERM', () => process.exit(0));
