// Sessions about connections rather than deliveries, one server at a time:
//   idle     memory per idle connection at growing counts (one server process per transport:
//            the load generator adds connections up to each size, and the server's memory is read
//            after a settle and a full GC each time, against its reading before any connected)
//   connect  connect-to-subscribed rate: a fresh server per round, every connection opened at
//            once (at most `connectConcurrency` handshakes in flight), timed until the last one
//            is subscribed; the figure is the median round
import { setTimeout as sleep } from 'node:timers/promises';
import { LoadGen } from './loadgen.mjs';
import { fdCount, sampleCpu, usage } from './procfs.mjs';
import { PROFILE_DIR, startServer } from './servers.mjs';
import { errText, median, subscribe } from './session.mjs';

const kib = (x) => `${(x / 1024).toFixed(2)} KiB`;
const SATURATED = 0.9;

/** Memory per idle connection of one side at each of `sizes` (cumulative), pushed to `readings` as they come. */
async function idleSide(side, sizes, cfg, log, readings) {
  const server = await startServer(side.kind, cfg.serverCpu, undefined, [], cfg.loadCpu);
  const lg = new LoadGen(cfg.loadCpu);
  try {
    await sleep(cfg.settle * 1000);
    const idle = await server.memory();
    const fdsBefore = fdCount(server.pid);
    for (const size of sizes) {
      log(`  ${side.label}: up to ${size} idle ${side.transport} connections`);
      const opened = await subscribe(lg, server, side, size, cfg, log);
      await sleep(cfg.settle * 1000);
      const loaded = await server.memory();
      const per = (key) => (loaded[key] === undefined || idle[key] === undefined ? null : (loaded[key] - idle[key]) / opened.ready);
      const reading = {
        connections: opened.ready,
        bytesPerConnection: per('vmRss'),
        heapBytesPerConnection: per('heapUsed'),
        externalBytesPerConnection: per('external'),
        rssBefore: idle.vmRss,
        rssAfter: loaded.vmRss,
        fdsBefore,
        fdsAfter: fdCount(server.pid),
      };
      readings.push(reading);
      const heap = reading.heapBytesPerConnection === null ? '' : `, ${kib(reading.heapBytesPerConnection)} JS heap`;
      log(`  ${opened.ready} connections: ${kib(reading.bytesPerConnection)} RSS per connection${heap}`);
    }
  } finally {
    await lg.close();
    await server.stop();
  }
}

/** The idle session of one transport: every side in turn (a failure keeps the counts measured before it). */
export async function runIdle(session, cfg, log) {
  const out = { sides: session.sides.map(({ id, label, kind, transport }) => ({ id, label, kind, transport })), sizes: session.sizes, skipped: {}, memory: {} };
  for (const side of session.sides) {
    try {
      await idleSide(side, session.sizes, cfg, log, (out.memory[side.id] = []));
    } catch (err) {
      out.skipped[side.id] = errText(err);
      log(`  ${side.label}: SKIPPED: ${out.skipped[side.id]}`);
    }
  }
  return out;
}

/** One round of one side: a fresh server, `count` WebSocket connections opened at once once the cores are quiet. */
async function connectOnce(side, count, cfg, log, contention) {
  const profile = cfg.profile ? `connect-${side.id}-${Date.now()}` : undefined;
  const server = await startServer(side.kind, cfg.serverCpu, profile && `${profile}.cpuprofile`, [], cfg.loadCpu);
  const lg = new LoadGen(cfg.loadCpu, profile && { dir: PROFILE_DIR, name: `${profile}-loadgen.cpuprofile` });
  if (profile !== undefined) log(`  profiling to bench/results/profiles/${profile}{,-loadgen}.cpuprofile`);
  try {
    await contention.waitForQuiet();
    const procs = { server: { pid: server.cpuPids, core: cfg.serverCpu }, load: { pid: lg.pid, core: cfg.loadCpu } };
    const a = sampleCpu(procs);
    const opened = await subscribe(lg, server, side, count, cfg, log);
    const u = usage(a, sampleCpu(procs));
    const rate = opened.ready / opened.seconds;
    const cpu = { server: u.server.util, load: u.load.util };
    // What a connection costs the server, whether or not the server was the bottleneck.
    const micros = (u.server.seconds * 1e6) / Math.max(1, opened.ready);
    log(`  ${Math.round(rate)} connections/s subscribed (server ${Math.round(cpu.server * 100)}%, load ${Math.round(cpu.load * 100)}%; server ${Math.round(micros)} µs CPU per connection)`);
    return { rate, micros, seconds: opened.seconds, ready: opened.ready, failed: opened.failed, cpu, otherLoad: { serverCore: u.server.other, loadCore: u.load.other }, loadBound: cpu.load >= SATURATED && cpu.server < SATURATED };
  } finally {
    await lg.close();
    await server.stop();
  }
}

/** The connect session: `cfg.connectRounds` rounds over the sides, the order reversed every round. */
export async function runConnect(session, cfg, log, contention) {
  const out = { sides: session.sides.map(({ id, label, kind, transport }) => ({ id, label, kind, transport })), count: session.subs, skipped: {}, connect: {} };
  const rounds = new Map(session.sides.map((s) => [s.id, []]));
  for (let round = 0; round < cfg.connectRounds; round++) {
    for (const side of round % 2 === 0 ? session.sides : [...session.sides].reverse()) {
      if (out.skipped[side.id] !== undefined) continue;
      log(`  connect round ${round + 1}/${cfg.connectRounds} ${side.label}: ${session.subs} WebSocket connections, ${cfg.connectConcurrency} handshakes in flight`);
      try {
        rounds.get(side.id).push(await connectOnce(side, session.subs, cfg, log, contention));
      } catch (err) {
        out.skipped[side.id] = errText(err);
        log(`  ${side.label}: SKIPPED: ${out.skipped[side.id]}`);
      }
    }
  }
  for (const [id, all] of rounds) {
    if (all.length === 0) continue;
    const mid = [...all].sort((a, b) => a.rate - b.rate)[Math.floor((all.length - 1) / 2)];
    out.connect[id] = { ...mid, median: median(all.map((m) => m.rate)), rounds: all.map((m) => m.rate), medianMicros: median(all.map((m) => m.micros)), microsRounds: all.map((m) => m.micros) };
  }
  return out;
}
