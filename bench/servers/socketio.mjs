// Socket.IO 4 peer, as an application would write it: WebSocket transport only, one room per
// channel (joined from the handshake's `channel` query), and `POST /api/publish` (the Tidings body
// and bearer key; one object or an array) broadcasting each publication with
// `io.to(channel).emit('message', {channel, position, data})`, which Socket.IO encodes once per
// broadcast. Usage: node socketio.mjs [port] [host]   (prints "listening on http://host:port")
import { createServer } from 'node:http';
import { Server } from 'socket.io';
import { publishHandler, reply } from './http-api.mjs';

const port = Number(process.argv[2] ?? 0);
const host = process.argv[3] ?? '127.0.0.1';
const apiKey = process.env.TIDINGS_API_KEY ?? '';
const EPOCH = '00000000';
const seqs = new Map();

/** Broadcasts each publication to its channel's room; one result each. */
function broadcast(pubs) {
  return pubs.map(({ channel, data }) => {
    const seq = (seqs.get(channel) ?? 0) + 1;
    seqs.set(channel, seq);
    const position = { epoch: EPOCH, seq };
    io.to(channel).emit('message', { channel, position, data });
    return { channel, position, duplicate: false };
  });
}

const publish = publishHandler(apiKey, broadcast);

const server = createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/api/publish') publish(req, res);
  else reply(res, 404, { error: { code: 'not_found' } });
});

const io = new Server(server, { transports: ['websocket'], serveClient: false, perMessageDeflate: false, httpCompression: false });
io.on('connection', (socket) => {
  const channel = socket.handshake.query.channel;
  if (typeof channel === 'string') void socket.join(channel);
});

server.listen(port, host, () => {
  process.stdout.write(`socket.io listening on http://${host}:${server.address().port}\n`);
});
process.once('SIGTERM', () => process.exit(0));
