// Load generator process: on orchestrator commands (IPC) it opens subscribers and its publisher,
// publishes open-loop at a fixed rate, and reports what it measured. Requests are { id, cmd, ... };
// it answers { id, ev: 'done' | 'error', ... } and, during a run, { id, ev: 'started' } and
// { id, ev: 'stopped' } at the edges of the measured window.
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Blaster } from './blaster.mjs';
import { Counters, nowMicros } from './counters.mjs';
import { NchanPollSubscriber, TidingsPollSubscriber } from './poll-client.mjs';
import { channelNames, HttpPublisher } from './publisher.mjs';
import { SseSubscriber } from './sse-client.mjs';
import { NchanWsSubscriber, SocketIoSubscriber, WsSubscriber } from './ws-client.mjs';
import { WsPublisher } from './ws-publisher.mjs';

/** Subscriber classes by transport and by the server's dialect. */
const SUBSCRIBERS = {
  ws: { tidings: WsSubscriber, nchan: NchanWsSubscriber, socketio: SocketIoSubscriber },
  sse: { tidings: SseSubscriber, nchan: SseSubscriber },
  poll: { tidings: TidingsPollSubscriber, nchan: NchanPollSubscriber },
};

/**
 * Loopback source addresses the subscribers are spread over (to a server on 127.0.0.1). Each has its
 * own ephemeral ports. From one address, tens of thousands of connections plus what an earlier round
 * left in TIME_WAIT fill most of its port range, and the load generator's kernel time per connect
 * then grew and varied from round to round (see bench/README.md).
 */
const SOURCES = 16;
const sourceOf = (host, i) => (host === '127.0.0.1' ? `127.0.0.${2 + (i % SOURCES)}` : undefined);

const counters = new Counters();
const subscribers = [];
let publisher;
/** The port `open` was given: `run` publishes there unless told `publishPort`. */
let openPort;
/** Channels the subscribers and publications are spread over. */
let channelCount = 1;

const alive = () => counters.ready - counters.closed;
/** Deliveries each publication should make: the subscribers of one channel. */
const perPublication = () => alive() / channelCount;

/**
 * The publisher of `publish.mode`: 'http' (one publication per request), 'batch' (arrays of
 * `publish.batch`), or 'connection' (a server connection, checked with one publication first).
 */
async function openPublisher({ host, port, channel, channels, publish }) {
  const common = { host, port, channel, channels, apiKey: publish.apiKey, payload: publish.payload };
  if (publish.mode === 'connection') return WsPublisher.open({ ...common, path: publish.path });
  const batch = publish.mode === 'batch' ? publish.batch : 1;
  return new HttpPublisher({ ...common, format: publish.format, batch, sockets: publish.sockets });
}

/**
 * Opens subscribers until `count` were asked for in all (a later call adds to the earlier ones), at
 * most `concurrency` handshakes at a time, within `timeoutMs`. Subscriber i takes channel
 * `<channel>-<i mod channels>` (just `channel` when there is one); with `ownChannels`, also a quiet
 * channel of its own, `<channel>-own-<i>`, in the same subscription (a long poll of two channels). The
 * first call also opens the publisher (`publish`), which may reject ("not supported by this server").
 */
async function open({ transport, dialect, host, port, channel, channels = 1, count, probes, concurrency, timeoutMs, publish, connectSubscribe = false, ownChannels = false }) {
  const Subscriber = SUBSCRIBERS[transport]?.[dialect];
  if (Subscriber === undefined) throw new Error(`no ${transport} subscriber for ${dialect}`);
  if (publisher === undefined) {
    channelCount = channels;
    publisher = await openPublisher({ host, port, channel, channels, publish });
    openPort = port;
  }
  const names = channelNames(channel, channels);
  const stride = Math.max(1, Math.floor(count / Math.max(1, probes)));
  const before = { ready: counters.ready, failed: counters.failed };
  const t0 = performance.now();
  const deadline = t0 + timeoutMs;
  while (performance.now() < deadline) {
    while (subscribers.length < count && subscribers.length - counters.ready - counters.failed < concurrency) {
      const i = subscribers.length;
      const name = ownChannels ? `${names[i % names.length]},${channel}-own-${i}` : names[i % names.length];
      subscribers.push(new Subscriber({ host, port, channel: name, probe: i % stride === 0, counters, connectSubscribe, localAddress: sourceOf(host, i) }));
    }
    if (counters.ready + counters.failed >= count) break;
    await sleep(5);
  }
  const seconds = (performance.now() - t0) / 1000;
  return { requested: count, ready: counters.ready, failed: counters.failed, added: counters.ready - before.ready, newlyFailed: counters.failed - before.failed, seconds };
}

/**
 * Publishes `rate` publications per second for `seconds`, open loop: each when it is due (the
 * first at once), whatever was delivered. When this process falls behind its schedule (it was
 * busy), what is due goes at once, so a window always holds its publications. More than two
 * seconds of backlog (published, not yet delivered) means the system cannot keep up: those
 * publications are skipped rather than queued, and counted. Resolves with { skipped, lagMs }, the
 * longest a publication waited past its time.
 */
async function drive(rate, seconds, owed) {
  const start = performance.now();
  const stopAt = start + seconds * 1000;
  const total = Math.ceil(seconds * rate - 1e-9);
  const maxBacklog = Math.max(4, rate * 2);
  const backlog = () => outstanding() - owed;
  let skipped = 0;
  let scheduled = 0;
  let lagMs = 0;
  const publishDue = (t, due) => {
    if (due > scheduled) lagMs = Math.max(lagMs, t - (start + (scheduled / rate) * 1000));
    for (; scheduled < due; scheduled++) {
      if (backlog() > maxBacklog) skipped++;
      else publisher.publish();
    }
    publisher.flush();
  };
  for (let t = performance.now(); t < stopAt; t = performance.now()) {
    publishDue(t, Math.min(total, Math.floor(((t - start) / 1000) * rate) + 1));
    await sleep(1);
  }
  publishDue(performance.now(), total);
  return { skipped, lagMs };
}

/** Publications sent and not (yet) delivered, since the start. */
const outstanding = () => publisher.sent - counters.delivered / Math.max(1e-9, perPublication());

/**
 * Waits until what an earlier window left behind has arrived: nothing in flight and no delivery for
 * half a second (at most `ms`: a server an overloaded step left far behind may need many seconds,
 * and a window started before it caught up measures that backlog, not its own rate). Resolves with
 * what is still undelivered then, which never will be (refused, or lost with a subscriber): a
 * window's backlog is counted from there, so one step that fell behind does not fail every step
 * after it; with how long it took and whether it settled within `ms`.
 */
async function settle(ms) {
  const from = performance.now();
  const until = from + ms;
  let last = counters.delivered;
  let quietSince = from;
  let settled = false;
  for (let now = quietSince; now < until; now = performance.now()) {
    if (counters.delivered !== last || publisher.inFlight > 0) {
      last = counters.delivered;
      quietSince = now;
    } else if (now - quietSince >= 500) {
      settled = true;
      break;
    }
    await sleep(20);
  }
  return { owed: Math.max(0, outstanding()), settled, settleSeconds: (performance.now() - from) / 1000 };
}

/**
 * Settles, then warm-up, the measured window and a bounded drain; reports deliveries and latency.
 * With `publishPort`, publications go to that server (another node of the same cluster) instead.
 */
async function run({ rate, warmup, duration, drainMs, settleMs, publishPort }, emit) {
  const { owed, settled, settleSeconds } = await settle(settleMs ?? drainMs);
  publisher.retarget(publishPort ?? openPort);
  counters.sampling = false;
  await drive(rate, warmup, owed);
  counters.takeLatency();
  const d0 = counters.delivered;
  const p0 = publisher.sent;
  const e0 = publisher.errors;
  const t0 = performance.now();
  counters.from = nowMicros();
  counters.fresh = 0;
  counters.sampling = true;
  emit({ ev: 'started' });
  const { skipped, lagMs } = await drive(rate, duration, owed);
  const t1 = performance.now();
  const d1 = counters.delivered;
  const p1 = publisher.sent;
  emit({ ev: 'stopped' });
  // Until everything published was delivered, or nothing arrives for a while (a subscriber that
  // missed a publication would otherwise hold the drain to its end), within `drainMs`.
  const expected = () => publisher.sent * perPublication();
  let last = counters.delivered;
  let lastChange = performance.now();
  for (let now = lastChange; now < t1 + drainMs; now = performance.now()) {
    if (publisher.inFlight <= 0 && counters.delivered >= expected()) break;
    if (counters.delivered !== last) {
      last = counters.delivered;
      lastChange = now;
    } else if (now - lastChange > 500 && publisher.inFlight <= 0) break;
    await sleep(5);
  }
  counters.sampling = false;
  counters.from = Infinity;
  const probes = subscribers.filter((sub) => sub.probe && sub.alive).length;
  return {
    seconds: (t1 - t0) / 1000,
    published: p1 - p0,
    skipped,
    publisherLagMs: lagMs,
    deliveredAtStop: d1 - d0,
    delivered: counters.delivered - d0,
    drained: counters.delivered >= expected(),
    drainSeconds: (performance.now() - t1) / 1000,
    settled,
    settleSeconds,
    subscribers: alive(),
    perPublication: perPublication(),
    /** Deliveries of the window's own publications to the probes, and how many they should have had. */
    probeDeliveries: counters.fresh,
    probeExpected: ((p1 - p0) * probes) / channelCount,
    lost: counters.closed,
    httpErrors: publisher.errors - e0,
    latency: counters.takeLatency(),
  };
}

/**
 * Acknowledged-publish load, no subscribers needed: `connections` keep-alive connections to each
 * of `ports`, each with `depth` requests pipelined, for a warm-up and a measured window, then a
 * bounded drain. Reports publications answered 200 in the window, overall and per port.
 */
async function blast({ host, ports, apiKey, channel, channels, payload, batch, connections, depth, warmup, duration, drainMs }, emit) {
  const blaster = new Blaster({ host, ports, apiKey, channel, channels, payload, batch, connections, depth });
  try {
    blaster.start();
    await sleep(warmup * 1000);
    blaster.latency.takeLatency();
    const s0 = blaster.snapshot();
    const t0 = performance.now();
    blaster.latency.sampling = true;
    emit({ ev: 'started' });
    await sleep(duration * 1000);
    const t1 = performance.now();
    const s1 = blaster.snapshot();
    emit({ ev: 'stopped' });
    blaster.latency.sampling = false;
    blaster.stop();
    const drainUntil = t1 + drainMs;
    while (performance.now() < drainUntil && blaster.inFlight > 0) await sleep(5);
    return {
      seconds: (t1 - t0) / 1000,
      publications: s1.acked - s0.acked,
      requests: s1.answered - s0.answered,
      perPort: s1.perPort.map((x, i) => x - s0.perPort[i]),
      refused: s1.refused - s0.refused,
      dropped: s1.dropped - s0.dropped,
      statuses: s1.statuses,
      inFlight: connections * depth * ports.length,
      drained: blaster.inFlight === 0,
      ackLatency: blaster.latency.takeLatency(),
    };
  } finally {
    blaster.close();
  }
}

function close() {
  for (const s of subscribers) s.close();
  publisher?.close();
  setTimeout(() => process.exit(0), 100);
  return {};
}

const commands = { open, run, blast, close };

process.on('message', (msg) => {
  const emit = (body) => process.send({ id: msg.id, ...body });
  const command = commands[msg.cmd];
  Promise.resolve()
    .then(() => (command === undefined ? Promise.reject(new Error(`unknown command ${msg.cmd}`)) : command(msg, emit)))
    .then(
      (result) => emit({ ev: 'done', result }),
      (err) => emit({ ev: 'error', message: err instanceof Error ? err.stack : String(err) }),
    );
});
// The orchestrator owns this process: exit with it.
process.on('disconnect', () => process.exit(0));
