// `npm run bench`: Tidings against a raw `ws` broadcast baseline, side by side, in one run.
// Servers run pinned to one core and the load generator to another; progress goes to stderr,
// the markdown table to stdout and every figure to bench/results/<timestamp>.json.
import { availableParallelism } from 'node:os';
import { loadConfig } from './lib/config.mjs';
import { killAll } from './lib/children.mjs';
import { Contention } from './lib/contention.mjs';
import { CLK_TCK } from './lib/procfs.mjs';
import { table, verdicts, writeJson } from './lib/report.mjs';
import { SERVER_KINDS, serverLabel } from './lib/servers.mjs';
import { runPaired, runSession } from './lib/session.mjs';

const cfg = loadConfig();
const log = (line) => process.stderr.write(`${line}\n`);

// A `paired` session runs both servers at once and alternates their windows; others run one server at a time.
const SESSIONS = [
  { id: 'ws-small', transport: 'ws', subs: cfg.smallSubs, steps: ['cpu', 'max'], paired: true },
  { id: 'ws-large', transport: 'ws', subs: cfg.largeSubs, steps: ['memory', 'max'] },
  { id: 'sse-small', transport: 'sse', subs: cfg.smallSubs, steps: ['cpu', 'max'], paired: true },
  { id: 'sse-large', transport: 'sse', subs: cfg.largeSubs, steps: ['memory'] },
]
  .filter((s) => cfg.only === undefined || cfg.only.includes(s.id))
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
    const what = `${session.subs} ${session.transport} subscribers, ${session.steps.join(' + ')}`;
    if (session.paired) {
      log(`${elapsed()} ${session.id}: ${KINDS.map(serverLabel).join(' and ')} side by side, ${what}`);
      results[session.id] = await attempt(session, KINDS.join('+'), () => runPaired(session, KINDS, cfg, log, contention));
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
  process.stdout.write(`${table(SESSIONS, results, cfg)}\n\n`);
  for (const c of checks) {
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
