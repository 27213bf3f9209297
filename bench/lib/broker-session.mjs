// The `brokers` session: Tidings on the memory broker, on Redis and on NATS JetStream, side by
// side in one run. Every broker server is started fresh (lib/brokers.mjs) with its gateway node(s),
// then each step runs in rounds that visit the brokers in turn, the order reversed every other
// round, so drift on the machine hits all alike:
//   publish    acknowledged publishes/s through one node (pipelined `POST /api/publish`), one
//              publication per request and in batches
//   fanout     server CPU per delivery and publish-to-receive latency, 1,000 WebSocket subscribers
//              of one channel at a fixed publish rate, one node
//   publish-2  the same as `publish` with a second node started and both publishing at once
//              (memory: n/a, a process-local broker cannot be shared)
//   fanout-2   the fan-out, published through node 2 while the subscribers are on node 1
// The second nodes start only after the one-node steps, so those see a single node.
import { request } from 'node:http';
import { LoadGen } from './loadgen.mjs';
import { sampleCpu, usage } from './procfs.mjs';
import { API_KEY, startServer } from './servers.mjs';
import { BROKERS, startBroker } from './brokers.mjs';
import { measureOnce, openSubscribers } from './session.mjs';

export const BROKER_STEPS = ['publish', 'fanout', 'publish-2', 'fanout-2'];
export const NOT_SHARED = 'the memory broker lives inside one gateway process: two nodes cannot share it';

const SATURATED = 0.9;
const pct = (x) => `${Math.round(x * 100)}%`;
const label = (kind) => BROKERS[kind].label;
const errText = (err) => (err instanceof Error ? err.message : String(err));

/** POSTs a JSON body with the API key; resolves with { status, text }, rejects on error or after `ms`. */
function post(port, path, body, ms) {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path, method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${API_KEY}` }, timeout: ms },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode, text }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${ms} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** A gateway node of `side`'s broker on `core`, checked with one acknowledged publish. */
async function startNode(side, nodeId, core, cfg) {
  const profile = cfg.profile ? `brokers-${side.kind}-${nodeId}-${Date.now()}.cpuprofile` : undefined;
  const args = ['--broker', side.broker.url, ...(side.broker.url === 'memory' ? [] : ['--node-id', nodeId])];
  const node = await startServer('tidings', core, profile, args);
  try {
    const { status, text } = await post(node.port, '/api/publish', JSON.stringify({ channel: `${cfg.channel}-check`, data: { check: nodeId } }), 5000);
    if (status !== 200) throw new Error(`a test publish was answered ${status}: ${text.slice(0, 200)}`);
  } catch (err) {
    await node.stop();
    throw new Error(`node ${nodeId}: ${errText(err)}`, { cause: err });
  }
  return node;
}

/** Which cores ran out of CPU: 'server core', 'load generator', `core N`, joined, or 'neither'. */
function saturation(procs, window, cfg) {
  const byCore = new Map();
  for (const [name, { core }] of Object.entries(procs)) byCore.set(core, (byCore.get(core) ?? 0) + window[name].util);
  const full = [...byCore].filter(([, util]) => util >= SATURATED).map(([core]) => (core === cfg.serverCpu ? 'server core' : core === cfg.loadCpu ? 'load generator' : `core ${core}`));
  return full.length === 0 ? 'neither' : full.join(' + ');
}

/** The server-side processes of `side` to sample: gateway node(s) and the broker server. */
function serverProcs(side, nodes, cfg) {
  const procs = { gateway: { pid: side.node1.pid, core: cfg.serverCpu } };
  if (nodes === 2) procs.node2 = { pid: side.node2.pid, core: cfg.node2Cpu };
  if (side.broker.pid !== undefined) procs.broker = { pid: side.broker.pid, core: cfg.brokerCpu };
  return procs;
}

/** Cores to wait on for quiet before a window: every core a sampled process is pinned to. */
const coresOf = (procs) => [...new Set(Object.values(procs).map((p) => p.core))];

/** One window of pipelined publishing to `side`'s node(s), with every process's CPU at its edges. */
async function measurePublish(pubLg, side, nodes, batch, cfg, log) {
  const server = serverProcs(side, nodes, cfg);
  const procs = { ...server, load: { pid: pubLg.pid, core: cfg.loadCpu } };
  const ports = nodes === 2 ? [side.node1.port, side.node2.port] : [side.node1.port];
  let started;
  let stopped;
  const drainMs = 5000;
  const r = await pubLg.request(
    'blast',
    {
      host: '127.0.0.1',
      ports,
      apiKey: API_KEY,
      channel: `${cfg.channel}-pub`,
      channels: cfg.pubChannels,
      payload: cfg.payload,
      batch,
      connections: cfg.pubConnections,
      depth: cfg.pubDepth,
      warmup: cfg.warmup,
      duration: cfg.pubDuration,
      drainMs,
    },
    {
      timeoutMs: (cfg.warmup + cfg.pubDuration) * 1000 + drainMs + 30_000,
      onEvent: (ev) => {
        if (ev.ev === 'started') started = sampleCpu(procs);
        else if (ev.ev === 'stopped') stopped = sampleCpu(procs);
      },
    },
  );
  if (r.publications === 0) throw new Error(`no publication acknowledged (answers by status: ${JSON.stringify(r.statuses)}, ${r.dropped} requests lost to closed connections)`);
  if (r.refused > 0 || r.dropped > 0 || !r.drained) {
    log(`  WARNING: ${r.refused} requests refused, ${r.dropped} lost to closed connections, ${r.drained ? 'drained' : 'NOT drained'} (statuses ${JSON.stringify(r.statuses)})`);
  }
  const window = usage(started, stopped);
  const seconds = (names) => names.reduce((sum, n) => sum + (window[n]?.seconds ?? 0), 0);
  const perPublication = (names) => (seconds(names) / r.publications) * 1e6;
  const gateways = nodes === 2 ? ['gateway', 'node2'] : ['gateway'];
  const otherLoad = { serverCore: window.gateway.other, loadCore: window.load.other };
  for (const name of Object.keys(server)) {
    const core = procs[name].core;
    if (core !== cfg.serverCpu && core !== cfg.loadCpu) otherLoad[`${name}Core`] = window[name].other;
  }
  return {
    ...r,
    nodes,
    batch,
    publicationsPerSecond: r.publications / r.seconds,
    requestsPerSecond: r.requests / r.seconds,
    perNodePerSecond: r.perPort.map((x) => x / r.seconds),
    cpu: Object.fromEntries(Object.keys(procs).map((n) => [n, window[n].util])),
    otherLoad,
    saturated: saturation(procs, window, cfg),
    gatewayMicrosPerPublication: perPublication(gateways),
    brokerMicrosPerPublication: server.broker === undefined ? null : perPublication(['broker']),
    serverSideMicrosPerPublication: perPublication(Object.keys(server)),
  };
}

/** The load generator's `run` arguments of a fan-out window: fixed rate, published on node 1 or node 2. */
function fanoutArgs(side, nodes, duration, cfg) {
  return { rate: cfg.rate, duration, ...(nodes === 2 ? { publishPort: side.node2.port } : {}) };
}

/** Progress lines for one window. */
function showPublish(m) {
  const split = m.nodes === 2 ? ` (${m.perNodePerSecond.map(Math.round).join(' + ')})` : '';
  return `${Math.round(m.publicationsPerSecond)} acked publications/s${split}, ${m.serverSideMicrosPerPublication.toFixed(1)} us server-side CPU each, ack p99 ${m.ackLatency.p99?.toFixed(1)} ms, saturated: ${m.saturated}`;
}

function showFanout(m) {
  const all = m.serverSideMicrosPerDelivery ?? m.serverMicrosPerDelivery;
  return `${m.serverMicrosPerDelivery?.toFixed(3)} us gateway CPU per delivery, ${all?.toFixed(3)} us server-side, latency p50 ${m.latency.p50?.toFixed(2)} / p99 ${m.latency.p99?.toFixed(2)} ms (gateway ${pct(m.cpu.server)}, load ${pct(m.cpu.load)})`;
}

/** Each broker's figure for a step: the median round (the lower middle one for an even count), with every round's value and every window. */
function pickMedian(all, value) {
  const sorted = [...all].sort((a, b) => value(a) - value(b));
  return { ...sorted[Math.floor((all.length - 1) / 2)], rounds: all.map(value), windows: all };
}

/**
 * Runs the broker comparison for `session.brokers` ('memory', 'redis', 'nats') and the steps in
 * `session.steps`. A broker that cannot start, or whose step fails outright, is skipped for the
 * rest of the session with a line saying why; the others carry on.
 */
export async function runBrokers(session, cfg, log, contention) {
  const out = { placement: { gateway: cfg.serverCpu, node2: cfg.node2Cpu, broker: cfg.brokerCpu, load: cfg.loadCpu }, brokers: {}, skipped: {} };
  const sides = [];
  let pubLg;
  const live = () => sides.filter((s) => out.skipped[s.kind] === undefined);
  const skip = async (side, why) => {
    out.skipped[side.kind] = why;
    log(`  ${label(side.kind)}: SKIPPED for the rest of the session: ${why}`);
    await closeSide(side);
  };
  /** Runs `fn` for a side; a failure skips that broker from then on. */
  const guarded = async (side, what, fn) => {
    try {
      return await fn();
    } catch (err) {
      await skip(side, `${what} failed: ${errText(err)}`);
      return undefined;
    }
  };
  /**
   * Rounds of `measure(side)` over every live side, the order reversed every other round; `name`
   * names the step in a skip. First `prime(side)` runs the same load, unmeasured, on every side,
   * so that no side's first measured window is also its first traffic of the kind (a cold JIT).
   */
  const rounds = async (sidesOf, n, name, what, measure, show, prime) => {
    const all = new Map();
    log(`  ${what}: priming each broker for ${cfg.warmup}s (not measured)`);
    for (const side of sidesOf()) await guarded(side, name, () => prime(side));
    for (let round = 0; round < n; round++) {
      const order = round % 2 === 0 ? sidesOf() : [...sidesOf()].reverse();
      for (const side of order) {
        if (out.skipped[side.kind] !== undefined) continue;
        log(`  ${what} round ${round + 1}/${n} ${label(side.kind)}`);
        const m = await guarded(side, name, () => measure(side));
        if (m === undefined) continue;
        log(`  ${show(m)}`);
        if (!all.has(side.kind)) all.set(side.kind, []);
        all.get(side.kind).push(m);
      }
    }
    return all;
  };
  const record = (step, all, value) => {
    for (const [kind, ms] of all) out.brokers[kind][step] = pickMedian(ms, value);
  };

  try {
    // Broker servers and first nodes.
    for (const kind of session.brokers) {
      const side = { kind };
      sides.push(side);
      out.brokers[kind] = {};
      await guarded(side, 'start', async () => {
        side.broker = await startBroker(kind, cfg.brokerCpu);
        out.brokers[kind].version = side.broker.version;
        side.node1 = await startNode(side, 'n1', cfg.serverCpu, cfg);
        const where = side.broker.pid === undefined ? 'in the gateway' : `${side.broker.version.split(' ').slice(0, 3).join(' ')} pid ${side.broker.pid} on core ${cfg.brokerCpu}`;
        log(`  ${label(kind)}: broker ${where}; node 1 pid ${side.node1.pid} on core ${cfg.serverCpu}, port ${side.node1.port}`);
      });
    }
    pubLg = new LoadGen(cfg.loadCpu);
    const variants = cfg.pubBatch > 1 ? [1, cfg.pubBatch] : [1];
    const variantKey = (batch) => (batch === 1 ? 'single' : 'batch');
    const inFlight = (nodes) => `${cfg.pubConnections} x ${cfg.pubDepth} in flight${nodes === 2 ? ' per node' : ''}`;
    const publishStep = async (step, nodes, sidesOf) => {
      for (const batch of variants) {
        const what = `${step}: ${nodes} node${nodes === 2 ? 's' : ''}, ${batch === 1 ? '1 publication' : `batches of ${batch}`} per request, ${inFlight(nodes)}, ${cfg.warmup}s warm-up + ${cfg.pubDuration}s`;
        const name = `${step} (${batch === 1 ? 'one publication' : `batches of ${batch}`} per request)`;
        const measure = (side) => {
          const cores = coresOf(serverProcs(side, nodes, cfg)).concat(cfg.loadCpu);
          return contention.measure(() => measurePublish(pubLg, side, nodes, batch, cfg, log), cores);
        };
        const prime = (side) => measurePublish(pubLg, side, nodes, batch, { ...cfg, warmup: 0, pubDuration: cfg.warmup }, () => undefined);
        const all = await rounds(sidesOf, cfg.brokerRounds, name, what, measure, showPublish, prime);
        for (const [kind, ms] of all) (out.brokers[kind][step] ??= {})[variantKey(batch)] = pickMedian(ms, (m) => m.publicationsPerSecond);
      }
    };
    const fanoutStep = async (step, nodes, sidesOf) => {
      const through = nodes === 2 ? ', published through node 2' : '';
      const what = `${step}: ${cfg.rate}/s x ${cfg.brokerSubs} WebSocket subscribers on node 1${through}, ${cfg.warmup}s warm-up + ${cfg.cpuDuration}s`;
      const measure = (side) => {
        const procs = serverProcs(side, nodes, cfg);
        // The gateway is measureOnce's `server`; the broker and node 2 are sampled beside it.
        const extra = Object.fromEntries(Object.entries(procs).filter(([name]) => name !== 'gateway'));
        const args = fanoutArgs(side, nodes, cfg.cpuDuration, cfg);
        return contention.measure(async () => {
          const m = await measureOnce({ lg: side.fan.lg, server: side.node1 }, args, cfg, log, extra);
          if (m.delivered === 0) throw new Error(`nothing delivered (${m.published} published, ${m.httpErrors} publish errors)`);
          return m;
        }, coresOf(procs).concat(cfg.loadCpu));
      };
      const prime = (side) => {
        const args = { ...fanoutArgs(side, nodes, cfg.warmup, cfg), warmup: 0, drainMs: 2000 };
        return side.fan.lg.request('run', args, { timeoutMs: cfg.warmup * 1000 + 30_000 });
      };
      const all = await rounds(sidesOf, cfg.brokerRounds, step, what, measure, showFanout, prime);
      record(step, all, (m) => m.serverMicrosPerDelivery);
    };
    const openFan = async () => {
      for (const side of live()) {
        if (side.fan !== undefined) continue;
        await guarded(side, 'opening subscribers', async () => {
          side.fan = await openSubscribers(side.node1, { kind: 'tidings', label: label(side.kind), transport: 'ws', subs: cfg.brokerSubs }, cfg, log);
          out.brokers[side.kind].opened = side.fan.opened;
        });
      }
    };
    const shared = () => live().filter((s) => BROKERS[s.kind].shared);
    const startSecondNodes = async () => {
      for (const side of shared()) {
        if (side.node2 !== undefined) continue;
        await guarded(side, 'starting node 2', async () => {
          side.node2 = await startNode(side, 'n2', cfg.node2Cpu, cfg);
          log(`  ${label(side.kind)}: node 2 pid ${side.node2.pid} on core ${cfg.node2Cpu}, port ${side.node2.port}`);
        });
      }
      for (const kind of session.brokers) if (!BROKERS[kind].shared) out.brokers[kind].twoNodes = NOT_SHARED;
    };

    if (session.steps.includes('publish')) await publishStep('publish', 1, live);
    if (session.steps.includes('fanout')) {
      await openFan();
      await fanoutStep('fanout', 1, () => live().filter((s) => s.fan !== undefined));
    }
    if (session.steps.includes('publish-2')) {
      await startSecondNodes();
      await publishStep('publish-2', 2, () => shared().filter((s) => s.node2 !== undefined));
    }
    if (session.steps.includes('fanout-2')) {
      await startSecondNodes();
      await openFan();
      await fanoutStep('fanout-2', 2, () => shared().filter((s) => s.node2 !== undefined && s.fan !== undefined));
    }
    return out;
  } finally {
    await pubLg?.close();
    for (const side of sides) await closeSide(side);
  }
}

/** Stops a side's load generator, nodes and broker server (each once). */
async function closeSide(side) {
  const fan = side.fan;
  side.fan = undefined;
  await fan?.lg.close();
  for (const key of ['node2', 'node1']) {
    const node = side[key];
    side[key] = undefined;
    await node?.stop();
  }
  const broker = side.broker;
  side.broker = undefined;
  await broker?.stop();
}
