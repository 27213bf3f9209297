// What the bench's own Node peers share: `POST /api/publish` with the bearer key and a JSON body
// holding one publication or an array, answered as Tidings answers it (one result, or `{ results }`
// for an array) (raw-ws.mjs, floor.mjs, socketio.mjs); and the raw peers' WebSocket (raw-ws.mjs, floor.mjs).

/** Writes a JSON answer with its Content-Length (the load generator's publisher reads answers by it). */
export function reply(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** A `POST /api/publish` handler: `broadcast(publications)` returns one result per publication. */
export function publishHandler(apiKey, broadcast) {
  return (req, res) => {
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
  };
}

/**
 * A WebSocket the bench's raw peers (raw-ws.mjs, floor.mjs) accepted, in the Tidings shapes: a
 * `welcome`; then, when `server` (the API key was sent), every `publish` frame is published with
 * `publish(message)` (the result's JSON text) and answered with a `reply`; otherwise the first frame
 * subscribes the raw `socket` with `join(channel)` (the channel's state: its `ws` set and `seq`), and
 * later frames are ignored.
 */
export function serveWebSocket(ws, socket, { session, epoch, server, join, publish }) {
  ws.send(JSON.stringify({ type: 'welcome', version: 1, session, heartbeat: 0 }));
  ws.on('error', () => undefined);
  if (server) {
    ws.on('message', (data) => {
      const frame = JSON.parse(data.toString('utf8'));
      ws.send(`{"type":"reply","id":${JSON.stringify(frame.id)},"result":${publish(frame.message)}}`);
    });
    return;
  }
  let ch;
  ws.on('message', (data) => {
    if (ch !== undefined) return;
    const frame = JSON.parse(data.toString('utf8'));
    ch = join(frame.channel);
    ch.ws.add(socket);
    ws.send(JSON.stringify({ type: 'reply', id: frame.id, result: { channel: frame.channel, position: { epoch, seq: ch.seq }, recovered: false } }));
  });
  ws.on('close', () => ch?.ws.delete(socket));
}
