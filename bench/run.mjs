// `npm run bench`: Tidings side by side with its peers (raw ws / SSE / poll, Nchan, Socket.IO 4) in
// one run: idle memory, connect rate, fan-out at a reference rate and up an open-loop rate ladder,
// many channels, long polling; then Tidings on its memory, Redis and NATS brokers (session
// `brokers`). Servers run pinned to one core and the load generators to another; progress goes to
// stderr, the markdown tables and the PASS/FAIL lines to stdout, every figure to
// bench/results/<timestamp>.json.
import { availableParallelism } from 'node:os';
import { loadConfig } from './lib/config.mjs';
import { descriptorLimit, killAll } from './lib/children.mjs';
import { Contention } from './lib/contention.mjs';
import { CLK_TCK } from './lib/procfs.mjs';
import { compareTable, connectTable, idleTable, metricsLine, writeJson } from './lib/report.mjs';
import { brokerTable } from './lib/broker-report.mjs';
import { verdictLines, verdicts } from './lib/targets.mjs';
import { runBrokers } from './lib/broker-session.mjs';
import { BROKER_KINDS } from './lib/brokers.mjs';
import { SERVER_KINDS } from './lib/servers.mjs';
import { sessions } from './lib/sessions.mjs';
import { runCompare } from './lib/session.mjs';
import { runConnect, runIdle } from './lib/capacity.mjs';

const log = (line) => process.stderr.write(`${line}\n`);
let cfg = loadConfig();
const int = (x) => Math.round(x).toLocaleString('en-US');

// Descriptors: every connection is one in the server and one in the load generator.
const SPARE = 200;
const limit = descriptorLimit();
const limitNotes = [];
const cap = (n, what) => {
  if (n + SPARE <= limit) return n;
  limitNotes.push(`${what}: ${int(n)} lowered to ${int(limit - SPARE)} (descriptor hard limit ulimit -Hn = ${limit})`);
  return limit - SPARE;
};
cfg = Object.freeze({
  ...cfg,
  idleSizes: [...new Set(cfg.idleSizes.map((n) => cap(n, 'idle connections')))],
  connectSubs: cap(cfg.connectSubs, 'connect session'),
  largeSubs: cap(cfg.largeSubs, 'large fan-out'),
  channels: cap(cfg.channels, 'channels sessions'),
});

const ALL_SESSIONS = sessions(cfg);

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
  .filter((s) => s.steps.length > 0 && (s.kind === 'brokers' || s.sides.length > 0));

const RUNNERS = {
  compare: (s, contention) => runCompare(s, cfg, log, contention),
  idle: (s) => runIdle(s, cfg, log),
  connect: (s, contention) => runConnect(s, cfg, log, contention),
  brokers: (s, contention) => runBrokers(s, cfg, log, contention),
};

async function main() {
  const deadline = setTimeout(() => {
    log(`bench: deadline of ${cfg.deadline} s reached; stopping`);
    killAll();
    process.exit(1);
  }, cfg.deadline * 1000);
  deadline.unref();
  if (availableParallelism() < 2) log('bench: WARNING fewer than 2 cores; server and load generator will share one');
  for (const note of limitNotes) log(`bench: WARNING ${note}`);
  log(`bench: ${cfg.quick ? 'QUICK' : 'full'} run, servers on core ${cfg.serverCpu}, load generators on core ${cfg.loadCpu}; sessions ${SESSIONS.map((s) => s.id).join(', ')}`);
  const started = Date.now();
  const results = {};
  const contention = new Contention(cfg, log);
  const errors = [];
  const elapsed = () => `[${Math.round((Date.now() - started) / 1000)}s]`;
  for (const session of SESSIONS) {
    const who = session.kind === 'brokers' ? `Tidings on ${session.brokers.join(', ')}` : session.sides.map((s) => s.label).join(', ');
    log(`${elapsed()} ${session.id}: ${who}; ${session.steps.join(' + ')}`);
    try {
      results[session.id] = await RUNNERS[session.kind](session, contention);
    } catch (err) {
      log(`  FAILED: ${err instanceof Error ? err.message : String(err)}`);
      errors.push({ session: session.id, error: String(err) });
    }
  }
  const checks = verdicts(results, Object.keys(results), cfg);
  const file = writeJson({
    date: new Date().toISOString(),
    node: process.version,
    clockTicks: CLK_TCK,
    descriptorLimit: limit,
    config: cfg,
    seconds: (Date.now() - started) / 1000,
    contentionBudgetLeft: contention.budget,
    notes: limitNotes,
    results,
    targets: checks,
    errors,
  });
  const out = [];
  for (const session of SESSIONS) {
    const res = results[session.id];
    if (res === undefined) continue;
    if (session.id === 'metrics') out.push(metricsLine(res));
    else if (session.kind === 'compare') out.push(compareTable(session, res, cfg));
    else if (session.kind === 'idle') out.push(idleTable(session, res));
    else if (session.kind === 'connect') out.push(connectTable(session, res));
    else out.push(`### Brokers\n\n${brokerTable(session, res, cfg)}`);
  }
  const nchan = Object.values(results).find((r) => r?.versions?.nchan !== undefined);
  if (nchan !== undefined) out.push(`Nchan peer: ${nchan.versions.nchan}`);
  if (limitNotes.length > 0) out.push(limitNotes.map((n) => `- ${n}`).join('\n'));
  if (checks.length > 0) out.push(`### Targets\n\n${verdictLines(checks)}`);
  process.stdout.write(`${out.join('\n\n')}\n\nResults: ${file} (${Math.round((Date.now() - started) / 1000)} s)\n`);
  if (errors.length > 0) process.exitCode = 1;
}

main()
  .catch((err) => {
    log(`bench: ${err instanceof Error ? err.stack : String(err)}`);
    process.exitCode = 1;
  })
  .finally(killAll);

