// The HTTP side shared by the bench's own Node peers (raw-ws.mjs, socketio.mjs): `POST
// /api/publish` with the bearer key and a JSON body holding one publication or an array, answered
// as Tidings answers it (one result, or `{ results }` for an array).

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
