// Honest load for bench/attack.mjs, in its own process: subscribers on WebSocket, SSE and long
// polling spread over a few channels, and one publisher at a steady rate. Every subscriber checks
// what it receives against its channel's positions: each seq once, in order, no holes, no gap
// events; after any disconnect it resumes from its last position like a real client (the protocol
// promises nothing is lost then). Talks to the orchestrator over IPC:
//   in:  { type: 'start', url, apiKey, subscribers, channels, rate, pollDelay }
//        { type: 'phase', name }     (latencies are kept per phase)
//        { type: 'stop-publishing' } { type: 'report' }
//   out: { type: 'ready', ... } { type: 'stats', ... } every second, { type: 'report', ... }
import { request, Agent } from 'node:http';
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';

const send = (msg) => process.send?.(msg);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.timeOrigin + performance.now();
process.on('disconnect', () => process.exit(0));

/** Latency samples per phase (a bounded reservoir). */
class Latencies {
  constructor() {
    this.phases = new Map();
    this.phase = 'connect';
  }
  add(kind, ms) {
    const key = `${this.phase} ${kind}`;
    let p = this.phases.get(key);
    if (p === undefined) this.phases.set(key, (p = { n: 0, samples: [] }));
    p.n += 1;
    if (p.samples.length < 50_000) p.samples.push(ms);
    else {
      const i = Math.floor(Math.random() * p.n);
      if (i < p.samples.length) p.samples[i] = ms;
    }
  }
  summary() {
    const out = {};
    for (const [name, { n, samples }] of this.phases) {
      const s = samples.slice().sort((a, b) => a - b);
      const q = (f) => (s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.floor(f * s.length))]);
      out[name] = { deliveries: n, p50: q(0.5), p99: q(0.99), max: s.at(-1) ?? NaN };
    }
    return out;
  }
}
const latencies = new Latencies();
const reconnectReasons = new Map();

/** What one subscriber saw on its channel. */
class Tracker {
  constructor(kind, channel) {
    this.kind = kind;
    this.channel = channel;
    this.epoch = undefined;
    this.start = undefined;
    this.last = undefined;
    this.received = 0;
    this.duplicates = 0;
    this.holes = [];
    this.gapEvents = [];
    this.epochChanges = 0;
    this.reconnects = 0;
    this.connected = false;
  }
  /** A reconnect (or, for a poll, a failed request retried with the same cursor), and why. */
  retried(reason) {
    this.reconnects += 1;
    const key = `${this.kind}: ${String(reason).slice(0, 100)}`;
    reconnectReasons.set(key, (reconnectReasons.get(key) ?? 0) + 1);
  }
  /** The start position: on first connect, where it begins; on a resume, the server must agree with ours. */
  started(position) {
    if (this.epoch === undefined) {
      this.epoch = position.epoch;
      this.start = position.seq;
      this.last = position.seq;
    }
  }
  message(m) {
    const { seq, epoch } = m.position;
    if (epoch !== this.epoch) {
      this.epochChanges += 1;
      return;
    }
    if (seq <= this.last) {
      this.duplicates += 1;
      return;
    }
    if (seq !== this.last + 1) this.holes.push([this.last + 1, seq - 1]);
    this.last = seq;
    this.received += 1;
    const t = m.data?.t;
    if (typeof t === 'number') latencies.add(this.kind, now() - t);
  }
  gap(g) {
    this.gapEvents.push(g);
    if (g.to.epoch === this.epoch && g.to.seq > this.last) this.last = g.to.seq;
  }
  cursor() {
    return `${this.channel}=${this.epoch}.${this.last.toString(36)}`;
  }
}

// --- WebSocket -------------------------------------------------------------------------------

function wsSubscriber(base, t) {
  const url = `${base.replace(/^http/, 'ws')}/ws`;
  const connect = () => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    let done = false;
    let why = 'closed';
    const retry = () => {
      if (done) return;
      done = true;
      t.connected = false;
      t.retried(why);
      setTimeout(connect, 200 + Math.random() * 800);
    };
    ws.on('open', () => {
      const since = t.epoch === undefined ? undefined : { epoch: t.epoch, seq: t.last };
      ws.send(JSON.stringify(since === undefined ? { type: 'subscribe', id: 1, channel: t.channel } : { type: 'subscribe', id: 1, channel: t.channel, since }));
    });
    ws.on('message', (data) => {
      const f = JSON.parse(data.toString('utf8'));
      if (f.type === 'message') t.message(f.message);
      else if (f.type === 'gap') t.gap(f.gap);
      else if (f.type === 'reply' && f.id === 1) {
        t.started(f.result.position);
        t.connected = true;
      } else if (f.type === 'error' && f.id === 1) ws.terminate();
    });
    ws.on('error', (err) => (why = `error ${err.message}`));
    ws.on('close', (code) => {
      if (why === 'closed') why = `closed ${code}`;
      retry();
    });
  };
  connect();
}

// --- SSE -------------------------------------------------------------------------------------

function sseSubscriber(base, t) {
  const connect = () => {
    const headers = { accept: 'text/event-stream' };
    if (t.epoch !== undefined) headers['last-event-id'] = t.cursor();
    let done = false;
    const retry = (why) => {
      if (done) return;
      done = true;
      t.connected = false;
      t.retried(why);
      setTimeout(connect, 200 + Math.random() * 800);
    };
    const req = request(`${base}/sse?channel=${encodeURIComponent(t.channel)}`, { headers, agent: false }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        res.on('end', () => retry(`status ${res.statusCode}`));
        return;
      }
      res.setEncoding('utf8');
      let buf = '';
      res.on('data', (chunk) => {
        buf += chunk;
        let end;
        while ((end = buf.indexOf('\n\n')) !== -1) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          let event = 'message';
          let data = '';
          let id;
          for (const line of block.split('\n')) {
            if (line.startsWith('event: ')) event = line.slice(7);
            else if (line.startsWith('data: ')) data += line.slice(6);
            else if (line.startsWith('id: ')) id = line.slice(4);
          }
          if (event === 'tidings:welcome') {
            const entry = (id ?? '').split(',').find((e) => e.startsWith(`${t.channel}=`));
            if (entry !== undefined) {
              const [epoch, seq36] = entry.slice(t.channel.length + 1).split('.');
              t.started({ epoch, seq: parseInt(seq36, 36) });
            }
            t.connected = true;
          } else if (event === 'tidings:gap') t.gap(JSON.parse(data));
          else if (event !== 'tidings:error' && data !== '') t.message(JSON.parse(data));
        }
      });
      res.on('end', () => retry('stream ended'));
      res.on('error', (err) => retry(`error ${err.message}`));
    });
    req.on('error', (err) => retry(`error ${err.message}`));
    req.end();
  };
  connect();
}

// --- Long polling ----------------------------------------------------------------------------

const pollAgent = new Agent({ keepAlive: true, maxSockets: 512 });

function pollOnce(base, t, timeout) {
  return new Promise((resolve, reject) => {
    const q = `channel=${encodeURIComponent(t.channel)}${t.epoch === undefined ? '' : `&cursor=${encodeURIComponent(t.cursor())}`}&timeout=${timeout}`;
    const req = request(`${base}/poll?${q}`, { agent: pollAgent }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (text += c));
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new Error(`poll ${res.statusCode} ${text.slice(0, 200)}`));
        else resolve(JSON.parse(text));
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(60_000, () => req.destroy(new Error('poll timed out')));
    req.end();
  });
}

async function pollSubscriber(base, t, pollDelay) {
  let first = true;
  for (;;) {
    try {
      const body = await pollOnce(base, t, first ? 0 : 25_000);
      if (first) {
        const entry = body.cursor.split(',').find((e) => e.startsWith(`${t.channel}=`));
        const [epoch, seq36] = entry.slice(t.channel.length + 1).split('.');
        t.started({ epoch, seq: parseInt(seq36, 36) });
        first = false;
        t.connected = true;
      }
      for (const g of body.gaps) t.gap(g);
      for (const m of body.messages) t.message(m);
      // The cursor is the authority: it may point past the last message returned.
      const entry = body.cursor.split(',').find((e) => e.startsWith(`${t.channel}=`));
      if (entry !== undefined) {
        const seq = parseInt(entry.split('.').at(-1), 36);
        if (seq > t.last) t.holes.push([t.last + 1, seq]);
        t.last = Math.max(t.last, seq);
      }
      // A client that batches: wait a little between polls (the history holds what arrives meanwhile).
      if (pollDelay > 0) await sleep(pollDelay);
    } catch (err) {
      t.retried(err.message);
      await sleep(200 + Math.random() * 800);
    }
  }
}

// --- Publisher -------------------------------------------------------------------------------

const publishAgent = new Agent({ keepAlive: true, maxSockets: 4 });

function publish(base, apiKey, channel, data) {
  return new Promise((resolve, reject) => {
    const body = JSON.stringify({ channel, data });
    const req = request(
      `${base}/api/publish`,
      { method: 'POST', agent: publishAgent, headers: { 'content-type': 'application/json', authorization: `Bearer ${apiKey}`, 'content-length': Buffer.byteLength(body) } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (text += c));
        res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(text)) : reject(new Error(`${res.statusCode} ${text.slice(0, 200)}`))));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.setTimeout(30_000, () => req.destroy(new Error('publish timed out')));
    req.end(body);
  });
}

// --- Main ------------------------------------------------------------------------------------

const trackers = [];
const published = new Map();
const publishErrors = new Map();
let publishing = false;
let publishLatencyMax = 0;
let publishedCount = 0;

async function publisher(base, apiKey, channels, rate) {
  publishing = true;
  let n = 0;
  const interval = 1000 / rate;
  let next = performance.now();
  while (publishing) {
    const channel = channels[n % channels.length];
    n += 1;
    const t0 = performance.now();
    try {
      const r = await publish(base, apiKey, channel, { n, t: now(), pad: 'x'.repeat(64) });
      published.set(channel, r.position);
      publishedCount += 1;
    } catch (err) {
      const key = String(err.message ?? err).slice(0, 120);
      publishErrors.set(key, (publishErrors.get(key) ?? 0) + 1);
    }
    publishLatencyMax = Math.max(publishLatencyMax, performance.now() - t0);
    next += interval;
    const wait = next - performance.now();
    if (wait > 0) await sleep(wait);
    else next = performance.now();
  }
}

function counts() {
  const by = { websocket: 0, sse: 0, poll: 0 };
  let connected = 0;
  let reconnects = 0;
  let received = 0;
  for (const t of trackers) {
    by[t.kind] += 1;
    if (t.connected) connected += 1;
    reconnects += t.reconnects;
    received += t.received;
  }
  return { by, connected, reconnects, received };
}

function report() {
  const perKind = {};
  for (const t of trackers) {
    const k = (perKind[t.kind] ??= { subscribers: 0, complete: 0, received: 0, missing: 0, duplicates: 0, gapEvents: 0, epochChanges: 0, reconnects: 0, examples: [] });
    const final = published.get(t.channel);
    const behind = final === undefined || t.last === undefined ? 0 : final.seq - t.last;
    const missing = t.holes.reduce((n, [a, b]) => n + (b - a + 1), 0) + Math.max(0, behind);
    k.subscribers += 1;
    k.received += t.received;
    k.missing += missing;
    k.duplicates += t.duplicates;
    k.gapEvents += t.gapEvents.length;
    k.epochChanges += t.epochChanges;
    k.reconnects += t.reconnects;
    if (missing === 0 && t.duplicates === 0 && t.gapEvents.length === 0 && t.epochChanges === 0) k.complete += 1;
    else if (k.examples.length < 5) {
      k.examples.push(
        `${t.channel} from ${t.start}: last ${t.last} of ${final?.seq}, holes ${JSON.stringify(t.holes.slice(0, 5))}, dup ${t.duplicates}, gaps ${JSON.stringify(t.gapEvents.slice(0, 2))}, reconnects ${t.reconnects}`,
      );
    }
  }
  return {
    type: 'report',
    perKind,
    published: Object.fromEntries(published),
    publishedCount,
    publishErrors: Object.fromEntries(publishErrors),
    publishLatencyMax,
    latencies: latencies.summary(),
    reconnectReasons: Object.fromEntries([...reconnectReasons].sort((a, b) => b[1] - a[1]).slice(0, 10)),
  };
}

process.on('message', async (msg) => {
  if (msg.type === 'start') {
    const { url, apiKey, subscribers, channels, rate, pollDelay } = msg;
    const kinds = [];
    for (let i = 0; i < subscribers; i++) kinds.push(i % 10 < 5 ? 'websocket' : i % 10 < 8 ? 'sse' : 'poll');
    // Connect in waves, so the gateway is not hit by a thousand handshakes at once.
    for (let i = 0; i < subscribers; i++) {
      const t = new Tracker(kinds[i], channels[i % channels.length]);
      trackers.push(t);
      if (t.kind === 'websocket') wsSubscriber(url, t);
      else if (t.kind === 'sse') sseSubscriber(url, t);
      else void pollSubscriber(url, t, pollDelay);
      if (i % 50 === 49) await sleep(20);
    }
    const deadline = Date.now() + 60_000;
    while (counts().connected < subscribers && Date.now() < deadline) await sleep(100);
    void publisher(url, apiKey, channels, rate);
    setInterval(() => send({ type: 'stats', ...counts(), publishedCount, publishErrors: [...publishErrors.values()].reduce((a, b) => a + b, 0), latencies: latencies.summary() }), 1000).unref();
    send({ type: 'ready', ...counts() });
  } else if (msg.type === 'phase') {
    latencies.phase = msg.name;
  } else if (msg.type === 'stop-publishing') {
    publishing = false;
    send({ type: 'stopped', published: Object.fromEntries(published) });
  } else if (msg.type === 'caught-up?') {
    const lagging = trackers.filter((t) => {
      const final = published.get(t.channel);
      return final !== undefined && (t.last === undefined || t.last < final.seq);
    }).length;
    send({ type: 'caught-up', lagging });
  } else if (msg.type === 'report') {
    send(report());
  }
});
