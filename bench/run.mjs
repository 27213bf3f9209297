// `npm run bench`: Tidings against a raw `ws` broadcast baseline, side by side, in one run, then
// Tidings on its memory, Redis and NATS brokers side by side (session `brokers`).
// Servers run pinned to one core and the load generator to another; progress goes to stderr,
// the markdown tables to stdout and every figure to bench/results/<timestamp>.json.
import { availableParallelism } from 'node:os';
import { loadConfig } from './lib/config.mjs';
import { killAll } from './lib/children.mjs';
import { Contention } from './lib/contention.mjs';
import { CLK_TCK } from './lib/procfs.mjs';
import { brokerTable, metricsLine, table, verdicts, writeJson } from './lib/report.mjs';
import { BROKER_STEPS, runBrokers } from './lib/broker-session.mjs';
import { BROKER_KINDS } from './lib/brokers.mjs';
import { SERVER_KINDS, serverLabel } from './lib/servers.mjs';
import { runPaired, runSession } from './lib/session.mjs';

const cfg = loadConfig();
const log = (line) => process.stderr.write(`${line}\n`);

// A `paired` session runs both servers at once and alternates their windows; others run one server
// at a time; `brokers` runs Tidings on each broker (lib/broker-session.mjs).
const ALL_SESSIONS = [
  { id: 'ws-small', transport: 'ws', subs: cfg.smallSubs, steps: ['cpu', 'max'], paired: true },
  { id: 'ws-large', transport: 'ws', subs: cfg.largeSubs, steps: ['memory', 'max'] },
  { id: 'sse-small', transport: 'sse', subs: cfg.smallSubs, steps: ['cpu', 'max'], paired: true },
  { id: 'sse-large', transport: 'sse', subs: cfg.largeSubs, steps: ['memory'] },
  // What metrics cost: the same gateway with and without them, side by side (ratio with / without).
  { id: 'metrics', transport: 'ws', subs: cfg.smallSubs, steps: ['cpu'], paired: true, kinds: ['tidings', 'tidings-no-metrics'], ratio: ['tidings', 'tidings-no-metrics'] },
  { id: 'brokers', brokers: BROKER_KINDS.filter((b) => cfg.brokers === undefined || cfg.brokers.includes(b)), steps: BROKER_STEPS },
];
for (const [name, given, known] of [
  ['BENCH_ONLY', cfg.only, ALL_SESSIONS.map((s) => s.id)],
  ['BENCH_STEPS', cfg.steps, [...new Set(ALL_SESSIONS.flatMap((s) => s.steps))]],
  ['BENCH_SERVERS', cfg.servers, SERVER_KINDS],
  ['BENCH_BROKERS', cfg.brokers, BROKER_KINDS],
]) {
  const unknown = (given ?? []).filter((x) => !known.includes(x));
  if (unknown.length > 0) {
    log(`bench: ${name} names ${unknown.join(', ')}; known: ${known.join(', ')}`);
    process.exit(2);
  }
}
for (const name of ['pubConnections', 'pubDepth']) {
  if (!Number.isInteger(cfg[name]) || cfg[name] < 1) {
    log(`bench: ${name} must be a whole number of at least 1`);
    process.exit(2);
  }
}
const SESSIONS = ALL_SESSIONS.filter((s) => cfg.only === undefined || cfg.only.includes(s.id))
  .map((s) => ({ ...s, steps: s.steps.filter((step) => cfg.steps === undefined || cfg.steps.includes(step)) }))
  .filter((s) => s.steps.length > 0);
const KINDS = SERVER_KINDS.filter((k) => cfg.servers === undefined || cfg.servers.includes(k));

async function main() {
  const deadline = setTimeout(() => {
    log(`bench: deadline of ${cfg.deadline} s reached; stopping`);
    killAll();
    process.exit(1);
  }, cfg.deadline * 1000);
  deadline.unref();
  if (availableParallelism() < 2) log('bench: WARNING fewer than 2 cores; server and load generator will share one');
  log(`bench: ${cfg.quick ? 'QUICK' : 'full'} run, server on core ${cfg.serverCpu}, load generator on core ${cfg.loadCpu}`);
  const started = Date.now();
  const results = {};
  const contention = new Contention(cfg, log);
  const errors = [];
  const attempt = async (session, kind, fn) => {
    try {
      return await fn();
    } catch (err) {
      log(`  FAILED: ${err instanceof Error ? err.message : String(err)}`);
      errors.push({ session: session.id, kind, error: String(err) });
      return {};
    }
  };
  const elapsed = () => `[${Math.round((Date.now() - started) / 1000)}s]`;
  for (const session of SESSIONS) {
    if (session.id === 'brokers') {
      log(`${elapsed()} brokers: Tidings on ${session.brokers.join(', ')} side by side, ${session.steps.join(' + ')}`);
      results.brokers = await attempt(session, 'tidings', () => runBrokers(session, cfg, log, contention));
      continue;
    }
    const what = `${session.subs} ${session.transport} subscribers, ${session.steps.join(' + ')}`;
    if (session.paired) {
      const kinds = session.kinds ?? KINDS;
      log(`${elapsed()} ${session.id}: ${kinds.map(serverLabel).join(' and ')} side by side, ${what}`);
      results[session.id] = await attempt(session, kinds.join('+'), () => runPaired(session, kinds, cfg, log, contention));
      continue;
    }
    results[session.id] = {};
    for (const kind of KINDS) {
      log(`${elapsed()} ${session.id}: ${serverLabel(kind)}, ${what}`);
      const out = await attempt(session, kind, () => runSession({ ...session, kind }, cfg, log, contention));
      if (out.opened !== undefined) results[session.id][kind] = out;
    }
  }
  const checks = verdicts(results);
  const file = writeJson({
    date: new Date().toISOString(),
    node: process.version,
    clockTicks: CLK_TCK,
    config: cfg,
    seconds: (Date.now() - started) / 1000,
    contentionBudgetLeft: contention.budget,
    results,
    targets: checks,
    errors,
  });
  const brokers = SESSIONS.find((s) => s.id === 'brokers');
  const metrics = SESSIONS.find((s) => s.id === 'metrics');
  const rest = SESSIONS.filter((s) => s !== brokers && s !== metrics);
  if (rest.length > 0) process.stdout.write(`${table(rest, results, cfg)}\n\n`);
  if (brokers !== undefined) process.stdout.write(`${brokerTable(brokers, results.brokers, cfg)}\n\n`);
  if (metrics !== undefined) process.stdout.write(`${metricsLine(results.metrics)}\n\n`);
  for (const c of rest.length > 0 ? checks : []) {
    process.stdout.write(`${c.pass === null ? 'NOT MEASURED' : c.pass ? 'PASS' : 'FAIL'}: ${c.label}: Tidings / baseline = ${c.ratio === null ? 'n/a' : c.ratio.toFixed(2)} (target <= ${c.max})\n`);
  }
  process.stdout.write(`\nResults: ${file} (${Math.round((Date.now() - started) / 1000)} s)\n`);
  if (errors.length > 0) process.exitCode = 1;
}

main()
  .catch((err) => {
    log(`bench: ${err instanceof Error ? err.stack : String(err)}`);
    process.exitCode = 1;
  })
  .finally(killAll);
