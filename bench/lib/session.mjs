// Side-by-side sessions: every side (a server kind with a transport and a way of publishing) gets a
// fresh server and its own load generator with the session's subscribers, all up at once; then
//   cpu     server CPU per delivery at the session's fixed reference rate, in rounds that visit
//           the sides in turn, the order reversed every round (ABBA), so drift on the machine hits
//           all alike; each side's figure is its median round, each ratio the median of the
//           per-round ratios
//   ladder  the open-loop rate ladder (lib/ladder.mjs): highest rate sustained, p50 / p99 there
// A side that cannot start (a server not installed, a publish path not supported) or fails a window
// is skipped from then on with the reason; the others carry on.
import { LoadGen } from './loadgen.mjs';
import { runLadders, stepSeconds } from './ladder.mjs';
import { sampleCpu, usage } from './procfs.mjs';
import { API_KEY, PROFILE_DIR, serverInfo, startServer } from './servers.mjs';

const SATURATED = 0.9;
const pct = (x) => `${Math.round(x * 100)}%`;
// The first line: a load generator's error carries its stack.
export const errText = (err) => (err instanceof Error ? err.message : String(err)).split('\n')[0];

/** Which side ran out of CPU over a window: 'server', 'load generator', 'both' or 'neither'. */
function saturation(window) {
  const s = window.server.util >= SATURATED;
  const l = window.load.util >= SATURATED;
  return s && l ? 'both' : s ? 'server' : l ? 'load generator' : 'neither';
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/**
 * The load generator's `open` arguments: `count` subscribers in all of `spec.transport` (default
 * ws) on `spec.channels` channels (default 1) of `server`, and its publisher (`spec.publish`:
 * 'http' by default, 'batch' or 'connection').
 */
function openArgs(server, spec, count, cfg) {
  const info = serverInfo(spec.kind);
  return {
    transport: spec.transport ?? 'ws',
    dialect: info.dialect,
    connectSubscribe: info.connectSubscribe === true,
    ownChannels: spec.ownChannels === true,
    host: '127.0.0.1',
    port: server.port,
    channel: cfg.channel,
    channels: spec.channels ?? 1,
    count,
    probes: spec.probes ?? cfg.probes,
    concurrency: cfg.connectConcurrency,
    timeoutMs: 120_000,
    publish: { mode: spec.publish ?? 'http', format: info.format, path: info.connectionPath, apiKey: API_KEY, payload: cfg.payload, batch: cfg.pubBatch, sockets: cfg.pubSockets },
  };
}

/** Asks `lg` for `count` subscribers in all; resolves with what `open` reported, throws below 99%. */
export async function subscribe(lg, server, spec, count, cfg, log) {
  const opened = await lg.request('open', openArgs(server, spec, count, cfg), { timeoutMs: 150_000 });
  log(`  ${spec.label}: ${opened.ready} ready, ${opened.failed} failed in ${opened.seconds.toFixed(1)} s`);
  if (opened.ready < count * 0.99) throw new Error(`only ${opened.ready} of ${count} subscribers connected`);
  return opened;
}

/**
 * A load generator process on the load core with `spec.subs` subscribers on `server` (see
 * `openArgs`); resolves with { lg, opened } once at least 99% are subscribed, and closes the load
 * generator and throws otherwise.
 */
export async function openSubscribers(server, spec, cfg, log, profile) {
  const lg = new LoadGen(cfg.loadCpu, profile && { dir: PROFILE_DIR, name: `${profile}-loadgen.cpuprofile` });
  try {
    log(`  ${spec.label}: opening ${spec.subs} ${spec.transport ?? 'ws'} subscribers${(spec.channels ?? 1) > 1 ? ` on ${spec.channels} channels` : ''}`);
    return { lg, opened: await subscribe(lg, server, spec, spec.subs, cfg, log) };
  } catch (err) {
    await lg.close();
    throw err;
  }
}

/**
 * One window of the load generator's `run` (`args`: rate, and optionally duration, warmup,
 * publishPort), with both processes' CPU sampled at its edges. `extra` names more server-side
 * processes ({ name: { pid, core } }: a broker, another gateway node), whose CPU is sampled
 * alike, reported in `cpu`, and counted in `serverSideMicrosPerDelivery`.
 */
export async function measureOnce({ lg, server }, args, cfg, log, extra = {}) {
  const pids = { server: { pid: server.cpuPids ?? server.pid, core: cfg.serverCpu }, load: { pid: lg.pid, core: cfg.loadCpu }, ...extra };
  let started;
  let stopped;
  const drainMs = 5000;
  // What an earlier overloaded step left behind must arrive before this window starts.
  const settleMs = 30_000;
  const duration = args.duration ?? cfg.cpuDuration;
  const warmup = args.warmup ?? cfg.warmup;
  const r = await lg.request('run', { ...args, warmup, duration, drainMs, settleMs }, {
    timeoutMs: (warmup + duration) * 1000 + drainMs + settleMs + 30_000,
    onEvent: (ev) => {
      if (ev.ev === 'started') started = sampleCpu(pids);
      else if (ev.ev === 'stopped') stopped = sampleCpu(pids);
    },
  });
  const end = sampleCpu(pids);
  server.check?.();
  if (!r.settled) log(`  WARNING: the backlog of earlier windows had not arrived after ${r.settleSeconds.toFixed(1)} s; this window started anyway`);
  if (args.quiet !== true && (r.lost > 0 || !r.drained || r.httpErrors > 0)) {
    log(`  WARNING: ${r.lost} subscribers lost, ${r.httpErrors} publications refused or lost, ${r.drained ? 'drained' : 'NOT drained'}`);
  }
  const window = usage(started, stopped);
  const total = usage(started, end);
  const extraNames = Object.keys(extra);
  const otherCores = extraNames.filter((n) => extra[n].core !== cfg.serverCpu && extra[n].core !== cfg.loadCpu);
  const serverSideSeconds = total.server.seconds + extraNames.reduce((sum, n) => sum + total[n].seconds, 0);
  return {
    ...r,
    deliveriesPerSecond: r.deliveredAtStop / r.seconds,
    publicationsPerSecond: r.published / r.seconds,
    cpu: { server: window.server.util, load: window.load.util, ...Object.fromEntries(extraNames.map((n) => [n, window[n].util])) },
    otherLoad: {
      serverCore: window.server.other,
      loadCore: window.load.other,
      ...Object.fromEntries(otherCores.map((n) => [`${n}Core`, window[n].other])),
    },
    saturated: saturation(window),
    /**
     * The share of the window's publications delivered (by the end of the drain): counted by the
     * probes, from the stamps, so late deliveries of warm-up publications do not count.
     */
    completeness: r.probeExpected > 0 ? r.probeDeliveries / r.probeExpected : null,
    serverCpuSeconds: total.server.seconds,
    serverMicrosPerDelivery: r.delivered > 0 ? (total.server.seconds / r.delivered) * 1e6 : null,
    ...(extraNames.length === 0
      ? {}
      : {
          extraCpuSeconds: Object.fromEntries(extraNames.map((n) => [n, total[n].seconds])),
          serverSideMicrosPerDelivery: r.delivered > 0 ? (serverSideSeconds / r.delivered) * 1e6 : null,
        }),
  };
}

/** A side's server with its load generator and subscribers. */
async function openSide(side, session, cfg, log) {
  const profile = cfg.profile ? `${session.id}-${side.id}-${Date.now()}` : undefined;
  const server = await startServer(side.kind, cfg.serverCpu, profile && `${profile}.cpuprofile`, [], cfg.loadCpu);
  if (profile !== undefined) log(`  profiling to bench/results/profiles/${profile}{,-loadgen}.cpuprofile`);
  try {
    const { lg, opened } = await openSubscribers(server, { ...side, subs: session.subs, channels: session.channels, probes: session.probes }, cfg, log, profile);
    return { ...side, server, lg, opened, close: () => lg.close().then(() => server.stop()) };
  } catch (err) {
    await server.stop();
    throw err;
  }
}

/** `fn(side)`; on failure the side is dropped for the rest of the session with the reason. */
function guardFor(out, log) {
  return async (side, fn) => {
    try {
      return await fn();
    } catch (err) {
      side.dropped = true;
      out.skipped[side.id] = errText(err);
      log(`  ${side.label}: SKIPPED for the rest of the session: ${out.skipped[side.id]}`);
      return undefined;
    }
  };
}

/** Per-round ratios of `value` between sides `a` and `b`, where both have the round, and their median. */
function pairedRatios(rounds, a, b, value) {
  const ra = rounds.get(a) ?? [];
  const rb = rounds.get(b) ?? [];
  const ratios = [];
  for (let i = 0; i < Math.min(ra.length, rb.length); i++) {
    if (ra[i] !== undefined && rb[i] !== undefined && value(rb[i]) > 0) ratios.push(value(ra[i]) / value(rb[i]));
  }
  return ratios.length === 0 ? undefined : { ratios, median: median(ratios) };
}

/** The cpu step: `cfg.rounds` ABBA rounds at the session's reference rate. */
async function cpuStep(sides, session, cfg, log, contention, guard) {
  const rounds = new Map(sides.map((s) => [s.id, []]));
  const value = (m) => m.serverMicrosPerDelivery;
  const perSecond = Math.round(session.rate * session.perPub).toLocaleString('en-US');
  for (let round = 0; round < cfg.rounds; round++) {
    for (const side of round % 2 === 0 ? sides : [...sides].reverse()) {
      if (side.dropped) continue;
      log(`  cpu round ${round + 1}/${cfg.rounds} ${side.label}: ${perSecond} deliveries/s, ${cfg.warmup}s warm-up + ${cfg.cpuDuration}s`);
      const m = await guard(side, () => contention.measure(() => measureOnce(side, { rate: session.rate }, cfg, log)));
      if (m === undefined) continue;
      log(`  ${value(m)?.toFixed(3)} us server CPU per delivery, p50 ${m.latency.p50?.toFixed(2)} / p99 ${m.latency.p99?.toFixed(2)} ms (server ${pct(m.cpu.server)}, load ${pct(m.cpu.load)})`);
      rounds.get(side.id)[round] = m;
    }
  }
  const figures = {};
  for (const side of sides) {
    const all = rounds.get(side.id).filter((m) => m !== undefined && value(m) !== null);
    if (all.length === 0) continue;
    const mid = [...all].sort((a, b) => value(a) - value(b))[Math.floor((all.length - 1) / 2)];
    figures[side.id] = { ...mid, rounds: all.map(value) };
  }
  const ratios = {};
  for (const [a, b] of session.ratios) {
    const r = pairedRatios(rounds, a, b, value);
    if (r !== undefined) ratios[`${a}/${b}`] = r;
  }
  return { figures, ratios };
}

/**
 * Runs a side-by-side session: `session.sides` ({ id, label, kind, transport, publish }), `subs`
 * subscribers on `channels` channels, reference rate `rate` publications/s (`perPub` deliveries
 * each), steps `cpu` and `ladder`, ratio pairs `ratios`.
 */
export async function runCompare(session, cfg, log, contention) {
  const out = { sides: session.sides.map(({ id, label, kind, transport, publish }) => ({ id, label, kind, transport, publish })), skipped: {}, opened: {}, versions: {} };
  const guard = guardFor(out, log);
  const live = [];
  try {
    for (const side of session.sides) {
      const opened = await guard(side, () => openSide({ ...side }, session, cfg, log));
      if (opened === undefined) continue;
      live.push(opened);
      out.opened[side.id] = opened.opened;
      if (opened.server.version !== undefined) out.versions[side.kind] = opened.server.version;
    }
    if (session.steps.includes('cpu')) out.cpu = await cpuStep(live, session, cfg, log, contention, guard);
    if (session.steps.includes('ladder')) {
      const args = (rate) => ({ rate, warmup: cfg.ladderWarmup, duration: stepSeconds(rate, cfg), quiet: true });
      const measure = (side, rate) => contention.measure(() => measureOnce(side, args(rate), cfg, log), undefined, { wait: false });
      out.ladder = await runLadders(live, session, cfg, log, session.ladderRounds, measure, guard);
    }
    return out;
  } finally {
    for (const side of live) await side.close();
  }
}
