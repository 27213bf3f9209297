// Attackers for bench/attack.mjs, in their own process: every hostile class of the test kit
// (packages/testing/dist: request lines, headers, queries, cursors, bodies, raw WebSocket frames,
// hostile protocol frames, slowloris, never-reading floods), each as a pool of concurrent attackers
// drawing fresh inputs from fast-check until the deadline, plus attacks that only make sense as
// sustained load: subscribe/unsubscribe churn on fresh names, oversized bodies, slow consumers on a
// busy channel, and publish floods into a client-publish namespace. Talks to the orchestrator over
// IPC: in { type: 'start', port, apiKey, seconds, seed, ctx }, out { type: 'stats', ... } every
// second and { type: 'done', ... } at the end.
import { connect } from 'node:net';
import { request } from 'node:http';
import fc from 'fast-check';
import {
  clientFrame,
  describeAttack,
  hostileArbitraries,
  HostileTally,
  Opcode,
  rawWebSocket,
  runAttack,
  shedBound,
} from '../../packages/testing/dist/index.js';

const send = (msg) => process.send?.(msg);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
process.on('disconnect', () => process.exit(0));
// A peer that resets mid-write is the normal case here.
process.on('uncaughtException', (err) => count('attacker-side exception', String(err?.message ?? err)));

const tally = new HostileTally();
/** Bench-only attacks: inputs sent and what came back, by kind. */
const extra = new Map();
const notes = new Map();
function count(kind, note) {
  const e = extra.get(kind) ?? { inputs: 0 };
  e.inputs += 1;
  extra.set(kind, e);
  if (note !== undefined) notes.set(`${kind}: ${note}`, (notes.get(`${kind}: ${note}`) ?? 0) + 1);
}
/** How long slow connections lived before the gateway cut them, by kind (Infinity: not cut while watched). */
const cuts = new Map();
/** Hostile inputs sent and still waiting for their outcome. */
let inflight = 0;
function inputs() {
  let n = tally.inputs + inflight;
  for (const e of extra.values()) n += e.inputs;
  return n;
}

/** Concurrency per hostile class, and per bench-only attack. */
const POOLS = {
  'request-line': 4,
  headers: 4,
  query: 4,
  cursor: 4,
  body: 4,
  'ws-frames': 4,
  'ws-json': 4,
  slowloris: 64,
  flood: 2,
};

async function classPool(cls, arb, concurrency, deadline, port, seed, options) {
  let batch = [];
  let k = 0;
  const next = () => {
    if (batch.length === 0) batch = fc.sample(arb, { numRuns: 50, seed: seed + k++ });
    return batch.pop();
  };
  const worker = async () => {
    while (Date.now() < deadline) {
      const attack = next();
      inflight += 1;
      const outcome = await runAttack(port, attack, options);
      inflight -= 1;
      // Outcomes that end after the deadline are not judged: the attackers leave at the deadline.
      if (Date.now() < deadline) {
        tally.add(outcome, (a) => describeAttack(a, 200));
        if (attack.cutWithinMs !== undefined) {
          const key = `${attack.kind === 'ws' ? 'WebSocket without pongs' : attack.label.startsWith('headers') || attack.label.startsWith('connection') ? 'HTTP headers' : 'HTTP body'} (bound ${attack.cutWithinMs} ms)`;
          const list = cuts.get(key) ?? [];
          list.push(outcome.closedByServer ? outcome.elapsed : Infinity);
          cuts.set(key, list);
        }
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

// --- Bench-only attacks --------------------------------------------------------------------

/** Subscribe/unsubscribe churn on fresh channel names, reading replies. */
async function churn(port, deadline, id) {
  while (Date.now() < deadline) {
    let peer;
    try {
      peer = await rawWebSocket(port);
      for (let i = 0; i < 200 && Date.now() < deadline; i++) {
        const channel = `open:churn-${id}-${Date.now().toString(36)}-${i}`;
        peer.send(clientFrame(Opcode.text, JSON.stringify({ type: 'subscribe', id: i * 2, channel })));
        peer.send(clientFrame(Opcode.text, JSON.stringify({ type: 'unsubscribe', id: i * 2 + 1, channel })));
        count('subscribe/unsubscribe churn');
        if (i % 20 === 19) await sleep(5);
      }
    } catch (err) {
      count('subscribe/unsubscribe churn', `connect failed: ${String(err.message).slice(0, 60)}`);
      await sleep(100);
    } finally {
      peer?.destroy();
    }
  }
}

/** Bodies far over maxBody: declared (refused before reading) and chunked (refused while reading). */
async function oversized(port, apiKey, deadline) {
  const big = Buffer.alloc(2 * 1024 * 1024, 0x61);
  while (Date.now() < deadline) {
    const chunked = Math.random() < 0.5;
    const status = await new Promise((resolve) => {
      const socket = connect(port, '127.0.0.1');
      let text = '';
      socket.setEncoding('latin1');
      socket.on('data', (d) => (text += d));
      socket.on('error', () => undefined);
      socket.on('close', () => resolve(/^HTTP\/1\.1 (\d+)/.exec(text)?.[1] ?? 'none'));
      socket.setTimeout(10_000, () => socket.destroy());
      socket.on('connect', () => {
        const head = `POST /api/publish HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${apiKey}\r\ncontent-type: application/json\r\n${chunked ? 'transfer-encoding: chunked' : `content-length: ${big.length}`}\r\n\r\n`;
        socket.write(head);
        if (chunked) {
          for (let i = 0; i < 4; i++) socket.write(Buffer.concat([Buffer.from(`${big.length.toString(16)}\r\n`), big, Buffer.from('\r\n')]));
          socket.end('0\r\n\r\n');
        } else socket.end(big);
      });
    });
    count('oversized body', `${chunked ? 'chunked' : 'declared'} -> ${status}`);
  }
}

/**
 * A consumer that subscribes to the busy channel and stops reading for 10 s (WebSocket or SSE),
 * then reads again: a gateway that bounds what it queues has closed it by then (a paused socket
 * cannot see the close until it reads what came before it).
 */
async function slowConsumer(port, deadline) {
  while (Date.now() < deadline) {
    const ws = Math.random() < 0.5;
    const outcome = await new Promise((resolve) => {
      const socket = connect(port, '127.0.0.1');
      let got = 0;
      let resumed = false;
      let pong;
      const finish = (what) => {
        clearInterval(pong);
        clearTimeout(giveUp);
        socket.destroy();
        resolve(what);
      };
      socket.on('error', () => undefined);
      socket.on('close', () => finish(resumed ? `closed by the gateway (read ${(got / 1024 / 1024).toFixed(1)} MiB)` : 'closed before it read again'));
      socket.on('data', (d) => {
        got += d.length;
        // Read the handshake and the first answer, then stop reading: everything piles up in the gateway.
        if (!resumed && got > 200) socket.pause();
      });
      socket.on('connect', () => {
        if (ws) {
          socket.write(
            'GET /ws HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
          );
          socket.write(clientFrame(Opcode.text, '{"type":"subscribe","id":1,"channel":"open:busy"}'));
          // Answer pings blindly so the heartbeat does not cut it: only the write bound may.
          pong = setInterval(() => socket.write(clientFrame(Opcode.pong, '')), 5000);
        } else socket.write('GET /sse?channel=open:busy HTTP/1.1\r\nhost: x\r\n\r\n');
      });
      setTimeout(() => {
        resumed = true;
        socket.resume();
      }, 10_000);
      const giveUp = setTimeout(() => finish(`still open 20 s after it read again (read ${(got / 1024 / 1024).toFixed(1)} MiB)`), 30_000);
    });
    count(`slow consumer (${ws ? 'WebSocket' : 'SSE'})`, outcome.replace(/\d+\.\d MiB/, (m) => `${Math.round(Number(m.split(' ')[0]))} MiB`));
  }
}

/**
 * Publishes into the client-publish namespace (the busy channel and 750 fresh ones) over WebSocket:
 * 20 publications of 1 KiB every FLOOD_INTERVAL_MS per connection, 4 connections, about 8,000
 * publications (8 MiB) a second in all. Capped so the attacker process, which shares its core with
 * the honest load, leaves room for the other attacks. The frames are built once and written again
 * and again.
 */
const FLOOD_INTERVAL_MS = 10;
const FLOOD_BATCHES = (() => {
  const data = 'p'.repeat(1024);
  const run = Math.random().toString(36).slice(2, 6);
  const batches = [];
  // 50 batches of 20 frames: every 4th to the busy channel, the rest to 750 fresh channels, so
  // what the flood leaves in history is spread over many streams, as a real flood's would be.
  for (let b = 0; b < 50; b++) {
    const frames = [];
    for (let j = 0; j < 20; j++) {
      const k = b * 20 + j;
      const channel = k % 4 === 0 ? 'open:busy' : `open:flood-${run}-${k}`;
      frames.push(clientFrame(Opcode.text, JSON.stringify({ type: 'publish', id: j, message: { channel, data } })));
    }
    batches.push(Buffer.concat(frames));
  }
  return batches;
})();

async function publishFlood(port, deadline) {
  while (Date.now() < deadline) {
    let peer;
    try {
      peer = await rawWebSocket(port);
      for (let i = 0; Date.now() < deadline && !peer.closed; i++) {
        const ok = peer.socket.write(FLOOD_BATCHES[i % FLOOD_BATCHES.length]);
        for (let j = 0; j < 20; j++) count('publish flood (WebSocket)');
        // Keep what was received small: the point is publishing, not being a slow consumer.
        peer.received.length = 0;
        if (!ok) await new Promise((r) => peer.socket.once('drain', r));
        await sleep(FLOOD_INTERVAL_MS);
      }
    } catch (err) {
      count('publish flood (WebSocket)', `connect failed: ${String(err.message).slice(0, 60)}`);
      await sleep(100);
    } finally {
      peer?.destroy();
    }
  }
}

async function sendFlood(port, deadline) {
  const body = JSON.stringify([...Array(20)].map((_, i) => ({ channel: `eph:send-${i}`, data: { i } })));
  while (Date.now() < deadline) {
    const status = await new Promise((resolve) => {
      const req = request({ host: '127.0.0.1', port, path: '/send', method: 'POST', agent: false, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode));
      });
      req.on('error', () => resolve('error'));
      req.end(body);
    });
    count('publish flood (POST /send)', String(status));
  }
}

// --- Main ----------------------------------------------------------------------------------

process.on('message', async (msg) => {
  if (msg.type !== 'start') return;
  const { port, apiKey, seconds, seed, ctx, maxBufferedBytes } = msg;
  const deadline = Date.now() + seconds * 1000;
  // A slow connection cut late is watched for 15 s more, so the report gives how late.
  const options = { httpDeadlineMs: ctx.requestTimeout + 5000, wsDeadlineMs: 5000, idleMs: 150, shedBoundBytes: shedBound(maxBufferedBytes), cutGraceMs: 15_000 };
  const arbs = hostileArbitraries(ctx);
  const ticker = setInterval(() => send({ type: 'stats', inputs: inputs(), violations: tally.violations.length }), 1000);
  const jobs = [];
  for (const [cls, concurrency] of Object.entries(POOLS)) jobs.push(classPool(cls, arbs[cls], concurrency, deadline, port, seed + jobs.length * 1000, options));
  for (let i = 0; i < 4; i++) jobs.push(churn(port, deadline, i));
  for (let i = 0; i < 2; i++) jobs.push(oversized(port, apiKey, deadline));
  for (let i = 0; i < 8; i++) jobs.push(slowConsumer(port, deadline));
  for (let i = 0; i < 4; i++) jobs.push(publishFlood(port, deadline));
  jobs.push(sendFlood(port, deadline));
  // At the deadline the attackers leave, whatever is still in flight (slow connections are meant to be).
  await Promise.race([Promise.all(jobs), sleep(Math.max(0, deadline - Date.now()))]);
  clearInterval(ticker);
  // Violations by kind: the first line of each, with a count and one example input.
  const kinds = new Map();
  for (const v of tally.violations) {
    const [what, input] = v.split('\n    input: ');
    const key = what.replace(/\d+/g, 'N').slice(0, 140);
    const k = kinds.get(key) ?? { count: 0, example: `${what.slice(0, 200)} <- ${(input ?? '').slice(0, 200)}` };
    k.count += 1;
    kinds.set(key, k);
  }
  send({
    type: 'done',
    inputs: inputs(),
    inflight,
    summary: tally.summary(),
    extra: Object.fromEntries(extra),
    notes: Object.fromEntries([...notes].sort((a, b) => b[1] - a[1]).slice(0, 30)),
    violations: [...kinds.values()].sort((a, b) => b.count - a.count),
    cuts: Object.fromEntries(
      [...cuts].map(([k, list]) => {
        const sorted = list.slice().sort((a, b) => a - b);
        const q = (f) => sorted[Math.min(sorted.length - 1, Math.floor(f * sorted.length))];
        return [k, { n: sorted.length, p50: q(0.5), p90: q(0.9), max: sorted.at(-1), notCut: sorted.filter((x) => x === Infinity).length }];
      }),
    ),
  });
  setTimeout(() => process.exit(0), 200);
});
