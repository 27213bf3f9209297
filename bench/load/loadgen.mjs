// Load generator process: on orchestrator commands (IPC) it opens subscribers, publishes at a fixed
// rate or closed-loop (a bounded number of publications in flight), and reports what it measured.
// Requests are { id, cmd, ... }; it answers { id, ev: 'done' | 'error', ... } and, during a run,
// { id, ev: 'started' } and { id, ev: 'stopped' } at the edges of the measured window.
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Blaster } from './blaster.mjs';
import { Counters } from './counters.mjs';
import { Publisher } from './publisher.mjs';
import { SseSubscriber } from './sse-client.mjs';
import { WsSubscriber } from './ws-client.mjs';

const counters = new Counters();
const subscribers = [];
let publisher;
/** The port `open` was given: `run` publishes there unless told `publishPort`. */
let openPort;

const alive = () => counters.ready - counters.closed;

/** Opens `count` subscribers, at most `concurrency` handshakes at a time, within `timeoutMs`. */
async function open({ transport, host, port, channel, count, probes, concurrency, timeoutMs, apiKey, payload, window }) {
  const Subscriber = transport === 'sse' ? SseSubscriber : WsSubscriber;
  publisher = new Publisher({ host, port, apiKey, channel, payload, sockets: Math.max(1, window) });
  openPort = port;
  const stride = Math.max(1, Math.floor(count / Math.max(1, probes)));
  const t0 = performance.now();
  const deadline = t0 + timeoutMs;
  while (performance.now() < deadline) {
    while (subscribers.length < count && subscribers.length - counters.ready - counters.failed < concurrency) {
      const i = subscribers.length;
      subscribers.push(new Subscriber({ host, port, channel, probe: i % stride === 0, counters }));
    }
    if (counters.ready + counters.failed >= count) break;
    await sleep(5);
  }
  return { requested: count, ready: counters.ready, failed: counters.failed, seconds: (performance.now() - t0) / 1000 };
}

/** Publishes for `seconds`: `rate` per second, or closed-loop keeping `window` publications undelivered. */
async function drive({ mode, rate, window, seconds }) {
  const start = performance.now();
  const stopAt = start + seconds * 1000;
  const backlog = () => publisher.sent - counters.delivered / Math.max(1, alive());
  let skipped = 0;
  if (mode === 'closed') {
    const pump = () => {
      const n = alive();
      if (n === 0 || performance.now() >= stopAt) return;
      while (publisher.sent - counters.delivered / n < window) publisher.publish();
      counters.gate = Math.floor((publisher.sent - window) * n) + 1;
    };
    counters.onGate = pump;
    pump();
    // The gate drives publishing; this tick only backs it up (e.g. after a subscriber is lost).
    while (performance.now() < stopAt) {
      await sleep(5);
      pump();
    }
    counters.gate = Infinity;
    counters.onGate = () => undefined;
  } else {
    // More than two seconds of backlog means the system cannot keep up: skip rather than queue.
    const maxBacklog = Math.max(window, rate * 2);
    let scheduled = 0;
    for (let t = performance.now(); t < stopAt; t = performance.now()) {
      const due = Math.min(1000, Math.floor(((t - start) / 1000) * rate) - scheduled);
      for (let k = 0; k < due; k++, scheduled++) {
        if (backlog() > maxBacklog) skipped++;
        else publisher.publish();
      }
      await sleep(1);
    }
  }
  return skipped;
}

/**
 * Warm-up, then the measured window, then a bounded drain; reports deliveries and latency. With
 * `publishPort`, publications go to that server (another node of the same cluster) instead.
 */
async function run({ mode, rate, window, warmup, duration, drainMs, publishPort }, emit) {
  publisher.retarget(publishPort ?? openPort);
  counters.sampling = false;
  await drive({ mode, rate, window, seconds: warmup });
  counters.takeLatency();
  const d0 = counters.delivered;
  const p0 = publisher.sent;
  const e0 = publisher.errors;
  const t0 = performance.now();
  counters.sampling = true;
  emit({ ev: 'started' });
  const skipped = await drive({ mode, rate, window, seconds: duration });
  const t1 = performance.now();
  const d1 = counters.delivered;
  const p1 = publisher.sent;
  emit({ ev: 'stopped' });
  const drainUntil = t1 + drainMs;
  while (performance.now() < drainUntil && (publisher.inFlight > 0 || counters.delivered < publisher.sent * alive())) await sleep(5);
  counters.sampling = false;
  return {
    seconds: (t1 - t0) / 1000,
    published: p1 - p0,
    skipped,
    deliveredAtStop: d1 - d0,
    delivered: counters.delivered - d0,
    drained: counters.delivered >= publisher.sent * alive(),
    drainSeconds: (performance.now() - t1) / 1000,
    subscribers: alive(),
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
