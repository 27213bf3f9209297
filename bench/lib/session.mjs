// Sessions: fresh servers, each with its own load generator and N subscribers, then measured steps:
// idle memory, saturation ('max'), and the fixed-rate CPU step, which runs both servers side by
// side and alternates their windows (ABBA) so that drift on the machine hits both alike.
import { setTimeout as sleep } from 'node:timers/promises';
import { LoadGen } from './loadgen.mjs';
import { fdCount, sampleCpu, usage } from './procfs.mjs';
import { API_KEY, PROFILE_DIR, startServer } from './servers.mjs';

const SATURATED = 0.9;
const pct = (x) => `${Math.round(x * 100)}%`;
const kib = (x) => `${(x / 1024).toFixed(2)} KiB`;

/** Which side ran out of CPU over a window: 'server', 'load generator', 'both' or 'neither'. */
function saturation(window) {
  const s = window.server.util >= SATURATED;
  const l = window.load.util >= SATURATED;
  return s && l ? 'both' : s ? 'server' : l ? 'load generator' : 'neither';
}

/**
 * A load generator process on the load core with `subs` subscribers of `transport` on `server`'s
 * `cfg.channel` (its publisher posts to the same server); resolves with { lg, opened } once at
 * least 99% are subscribed, and closes the load generator and throws otherwise.
 */
export async function openSubscribers(server, { kind, transport, subs }, cfg, log, profile) {
  const lg = new LoadGen(cfg.loadCpu, profile && { dir: PROFILE_DIR, name: `${profile}-loadgen.cpuprofile` });
  try {
    log(`  ${kind}: opening ${subs} ${transport} subscribers`);
    const opened = await lg.request(
      'open',
      {
        transport,
        host: '127.0.0.1',
        port: server.port,
        channel: cfg.channel,
        count: subs,
        probes: cfg.probes,
        concurrency: cfg.connectConcurrency,
        timeoutMs: 120_000,
        apiKey: API_KEY,
        payload: cfg.payload,
        window: cfg.window,
      },
      { timeoutMs: 150_000 },
    );
    log(`  ${kind}: ${opened.ready} ready, ${opened.failed} failed in ${opened.seconds.toFixed(1)} s`);
    if (opened.ready < subs * 0.99) throw new Error(`only ${opened.ready} of ${subs} subscribers connected`);
    return { lg, opened };
  } catch (err) {
    await lg.close();
    throw err;
  }
}

/** A server with its load generator and subscribers; `idle` is its memory before they connected. */
async function openSide({ id, kind, transport, subs }, cfg, log) {
  const profile = cfg.profile ? `${id}-${kind}-${Date.now()}` : undefined;
  const server = await startServer(kind, cfg.serverCpu, profile && `${profile}.cpuprofile`);
  if (profile !== undefined) log(`  profiling to bench/results/profiles/${profile}{,-loadgen}.cpuprofile`);
  try {
    await sleep(cfg.settle * 1000);
    const idle = { ...(await server.memory()), fds: fdCount(server.pid) };
    const { lg, opened } = await openSubscribers(server, { kind, transport, subs }, cfg, log, profile);
    const close = async () => {
      await lg.close();
      await server.stop();
    };
    return { kind, server, lg, opened, idle, close };
  } catch (err) {
    await server.stop();
    throw err;
  }
}

/** RSS, JS heap and descriptors the subscribers added, per connection, after a settle and a GC. */
async function measureMemory(side, cfg) {
  await sleep(cfg.settle * 1000);
  const { idle, opened, server } = side;
  const loaded = await server.memory();
  return {
    rssBefore: idle.vmRss,
    rssAfter: loaded.vmRss,
    bytesPerConnection: (loaded.vmRss - idle.vmRss) / opened.ready,
    heapBytesPerConnection: (loaded.heapUsed - idle.heapUsed) / opened.ready,
    externalBytesPerConnection: (loaded.external - idle.external) / opened.ready,
    fdsBefore: idle.fds,
    fdsAfter: fdCount(server.pid),
  };
}

/**
 * One window of the load generator's `run`, with both processes' CPU sampled at its edges. `extra`
 * names more server-side processes ({ name: { pid, core } }: a broker, another gateway node), whose
 * CPU is sampled alike, reported in `cpu`, and counted in `serverSideMicrosPerDelivery`.
 */
export async function measureOnce({ lg, server }, args, cfg, log, extra = {}) {
  const pids = { server: { pid: server.pid, core: cfg.serverCpu }, load: { pid: lg.pid, core: cfg.loadCpu }, ...extra };
  let started;
  let stopped;
  const drainMs = 5000;
  const duration = args.duration ?? cfg.duration;
  const r = await lg.request('run', { ...args, warmup: cfg.warmup, duration, drainMs }, {
    timeoutMs: (cfg.warmup + duration) * 1000 + drainMs + 30_000,
    onEvent: (ev) => {
      if (ev.ev === 'started') started = sampleCpu(pids);
      else if (ev.ev === 'stopped') stopped = sampleCpu(pids);
    },
  });
  const end = sampleCpu(pids);
  if (r.lost > 0 || !r.drained || r.httpErrors > 0) {
    log(`  WARNING: ${r.lost} subscribers lost, ${r.httpErrors} publish errors, ${r.drained ? 'drained' : 'NOT drained'}`);
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
    /** Deliveries over what every subscriber should have got (about 1 when nothing is lost). */
    completeness: r.published > 0 ? r.delivered / (r.published * r.subscribers) : null,
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

/**
 * Runs 'memory' and 'max' steps for one server. `log` gets a progress line per phase;
 * `contention` repeats windows disturbed by other processes.
 */
export async function runSession(session, cfg, log, contention) {
  const side = await openSide(session, cfg, log);
  try {
    const out = { opened: side.opened };
    if (session.steps.includes('memory')) {
      out.memory = await measureMemory(side, cfg);
      log(`  idle memory per connection: ${kib(out.memory.bytesPerConnection)} RSS, ${kib(out.memory.heapBytesPerConnection)} JS heap`);
    }
    if (session.steps.includes('max')) {
      log(`  saturation, ${cfg.window} publications in flight: ${cfg.warmup}s warm-up + ${cfg.duration}s`);
      out.max = await contention.measure(() => measureOnce(side, { mode: 'closed', window: cfg.window }, cfg, log));
      const m = out.max;
      log(`  ${Math.round(m.deliveriesPerSecond)} deliveries/s, saturated: ${m.saturated} (server ${pct(m.cpu.server)}, load ${pct(m.cpu.load)})`);
    }
    return out;
  } finally {
    await side.close();
  }
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** How a paired step runs each window and which round stands for a server. */
const PAIRED_STEPS = {
  cpu: {
    args: (cfg) => ({ mode: 'fixed', rate: cfg.rate, window: cfg.window, duration: cfg.cpuDuration }),
    rounds: (cfg) => cfg.rounds,
    what: (cfg, subs) => `${cfg.rate}/s x ${subs}, ${cfg.warmup}s warm-up + ${cfg.cpuDuration}s`,
    show: (m) => `${m.serverMicrosPerDelivery?.toFixed(3)} us server CPU per delivery`,
    value: (m) => m.serverMicrosPerDelivery,
    // The median round (the lower middle one for an even count).
    pick: (all) => [...all].sort((a, b) => a.serverMicrosPerDelivery - b.serverMicrosPerDelivery)[Math.floor((all.length - 1) / 2)],
  },
  max: {
    args: (cfg) => ({ mode: 'closed', window: cfg.window }),
    rounds: (cfg) => cfg.maxRounds,
    what: (cfg) => `saturation, ${cfg.window} publications in flight, ${cfg.warmup}s warm-up + ${cfg.duration}s`,
    show: (m) => `${Math.round(m.deliveriesPerSecond)} deliveries/s, saturated: ${m.saturated}`,
    value: (m) => m.deliveriesPerSecond,
    // The highest rate sustained over a whole window.
    pick: (all) => [...all].sort((a, b) => b.deliveriesPerSecond - a.deliveriesPerSecond)[0],
  },
};

/**
 * Runs the 'cpu' and 'max' steps for every server in `kinds` side by side: each step in rounds,
 * the servers' order reversed every other round (ABBA), so drift on the machine hits both alike.
 * Every round is kept in `rounds`; the figure is the step's pick (median CPU, best rate).
 */
export async function runPaired(session, kinds, cfg, log, contention) {
  const sides = [];
  try {
    for (const kind of kinds) sides.push(await openSide({ ...session, kind }, cfg, log));
    const out = Object.fromEntries(sides.map((side) => [side.kind, { opened: side.opened }]));
    for (const step of session.steps) {
      const def = PAIRED_STEPS[step];
      const rounds = new Map(kinds.map((k) => [k, []]));
      const n = def.rounds(cfg);
      for (let round = 0; round < n; round++) {
        for (const side of round % 2 === 0 ? sides : [...sides].reverse()) {
          log(`  ${step} round ${round + 1}/${n} ${side.kind}: ${def.what(cfg, session.subs)}`);
          const m = await contention.measure(() => measureOnce(side, def.args(cfg), cfg, log));
          log(`  ${def.show(m)} (server ${pct(m.cpu.server)}, load ${pct(m.cpu.load)})`);
          rounds.get(side.kind).push(m);
        }
      }
      for (const side of sides) {
        const all = rounds.get(side.kind);
        out[side.kind][step] = { ...def.pick(all), rounds: all.map(def.value) };
      }
      // Ratios of windows run back to back cancel slow drift better than a ratio of medians.
      const [num, den] = session.ratio ?? ['tidings', 'baseline'];
      if (rounds.has(num) && rounds.has(den)) {
        const ratios = rounds.get(num).map((m, i) => def.value(m) / def.value(rounds.get(den)[i]));
        (out.paired ??= {})[step] = { ratios, median: median(ratios) };
      }
    }
    return out;
  } finally {
    for (const side of sides) await side.close();
  }
}
