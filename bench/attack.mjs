#!/usr/bin/env node
// Attack measurement for the closing note (not part of `npm test`):
//
//   node bench/attack.mjs [--seconds 60] [--honest 1000] [--rate 40] [--settle 10] [--seed N]
//
// Needs the built packages (`npx tsc -b`). The gateway runs as a child process pinned to core 0
// (`taskset -c 0`; the test kit's IPC harness, packages/testing/dist/hostile-harness.js, which runs
// the built @tidings/server with the gateway's defaults plus a few namespaces). The honest load
// (bench/attack/honest.mjs: subscribers on WebSocket, SSE and long polling over a few channels, and
// a publisher at a steady rate) and the attackers (bench/attack/attacker.mjs: every hostile class of
// the test kit at once, plus churn, oversized bodies, slow consumers and publish floods) run in their
// own processes on core 1. The gateway's RSS (VmRSS from /proc) is read before the attack (honest
// clients connected), every 250 ms during it (peak and mean), and after the attackers left (after
// --settle seconds, then after a full GC). At the end the honest subscribers' deliveries are checked:
// every publication on their channel once, in order, no hole, no gap, across any reconnects.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { GatewayProcess } from '../packages/testing/dist/index.js';
import { cpuSeconds } from './lib/procfs.mjs';

const args = process.argv.slice(2);
const flag = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i === -1 ? fallback : Number(args[i + 1]);
};
const SECONDS = flag('seconds', 60);
const HONEST = flag('honest', 1000);
const RATE = flag('rate', 40);
const SETTLE = flag('settle', 10);
const SEED = flag('seed', Math.floor(Math.random() * 2 ** 31));
const POLL_DELAY = flag('poll-delay', 500);
const SERVER_CPU = flag('server-cpu', 0);
const LOAD_CPU = flag('load-cpu', 1);

const API_KEY = 'attack-bench-api-key-0123456789';
const CHANNELS = ['honest:0', 'honest:1', 'honest:2', 'honest:3'];
const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const started = Date.now();
const log = (line) => process.stdout.write(`[${String(Math.round((Date.now() - started) / 1000)).padStart(3)}s] ${line}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const mib = (bytes) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

/** The gateway's options: its defaults, plus namespaces for the honest load and for the attackers to aim at. */
const CONFIG = {
  apiKey: API_KEY,
  logLevel: 'error',
  demo: true,
  namespaces: {
    honest: { historySize: 10_000, historyTtl: 600 },
    open: { clientPublish: true },
    locked: {},
    eph: { ephemeral: true, clientPublish: true },
    secret: { clientPublish: true },
    hist: { historySize: 100, historyTtl: 600, clientPublish: true },
  },
};
/** What the gateway runs with where the defaults apply (for the attackers' generators and the report). */
const DEFAULTS = { maxPayload: 64 * 1024, maxBody: 1024 * 1024, maxBatch: 1000, maxSubscriptions: 128, maxBufferedBytes: 4 * 1024 * 1024, headersTimeout: 10_000, requestTimeout: 30_000, pingInterval: 25_000 };

const tasksetOk = (() => {
  try {
    return existsSync('/usr/bin/taskset') || existsSync('/bin/taskset');
  } catch {
    return false;
  }
})();
const pin = (cpu) => (tasksetOk ? ['taskset', '-c', String(cpu)] : []);

const children = new Set();
function spawnNode(script, cpu) {
  const [cmd, ...pre] = [...pin(cpu), process.execPath];
  const child = spawn(cmd, [...pre, script], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}
function killChildren() {
  for (const c of children) c.kill('SIGKILL');
}
process.on('exit', killChildren);
for (const s of ['SIGINT', 'SIGTERM']) process.on(s, () => process.exit(130));

/** Resolves with the first IPC message of `type` from `child`. */
function message(child, type, timeoutMs) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no '${type}' from ${child.spawnargs.at(-1)} within ${timeoutMs} ms`)), timeoutMs);
    const on = (m) => {
      if (m.type !== type) return;
      clearTimeout(timer);
      child.off('message', on);
      resolve(m);
    };
    child.on('message', on);
  });
}

function rss(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m === null ? NaN : Number(m[1]) * 1024;
}

async function main() {
  if (!tasksetOk) log('WARNING: taskset not found; processes are not pinned');
  log(`attack bench: ${SECONDS} s of attacks, ${HONEST} honest subscribers on ${CHANNELS.length} channels, ${RATE} publications/s, seed ${SEED}`);
  const gp = await GatewayProcess.start({ config: CONFIG, deniedToken: 'deny-this-token', secretNamespace: 'secret', wrap: pin(SERVER_CPU) });
  log(`gateway pid ${gp.pid} on core ${SERVER_CPU}, ${gp.url}; honest load and attackers on core ${LOAD_CPU}`);
  // Real positions for the attackers to forge cursors from, and a channel of large publications to replay.
  const known = [];
  for (const channel of ['open:k1', 'open:k2', 'locked:k3', 'k4', 'eph:k5', 'demo:k6']) {
    let position;
    for (let i = 0; i < 5; i++) position = (await gp.publish(channel, { i })).position;
    known.push({ channel, position });
  }
  let bulk;
  for (let i = 0; i < 100; i++) bulk = (await gp.publish('hist:bulk', { i, pad: 'b'.repeat(16 * 1024) })).position;

  const honest = spawnNode(here('./attack/honest.mjs'), LOAD_CPU);
  let honestStats = {};
  honest.on('message', (m) => {
    if (m.type === 'stats') honestStats = m;
  });
  honest.send({ type: 'start', url: gp.url, apiKey: API_KEY, subscribers: HONEST, channels: CHANNELS, rate: RATE, pollDelay: POLL_DELAY });
  const ready = await message(honest, 'ready', 120_000);
  log(`honest clients connected: ${ready.connected}/${HONEST} (${JSON.stringify(ready.by)}); publisher started`);

  // Before: the honest load alone.
  honest.send({ type: 'phase', name: 'before' });
  await sleep(5000);
  const before = rss(gp.pid);
  const beforeProbe = await gp.probe({ gc: true });
  log(`before the attack: RSS ${mib(before)}, connections ${JSON.stringify(beforeProbe.stats.connections)}`);

  // During: every attack at once.
  const attacker = spawnNode(here('./attack/attacker.mjs'), LOAD_CPU);
  let attackStats = { inputs: 0, violations: 0 };
  attacker.on('message', (m) => {
    if (m.type === 'stats') attackStats = m;
  });
  const ctx = {
    apiKey: API_KEY,
    known,
    maxPayload: DEFAULTS.maxPayload,
    maxBody: DEFAULTS.maxBody,
    maxBatch: DEFAULTS.maxBatch,
    maxSubscriptions: DEFAULTS.maxSubscriptions,
    headersTimeout: DEFAULTS.headersTimeout,
    requestTimeout: DEFAULTS.requestTimeout,
    pingInterval: DEFAULTS.pingInterval,
    namespaces: { open: 'open', locked: 'locked', ephemeral: 'eph', secret: 'secret' },
    rpcMethods: ['echo', 'slow'],
    deniedToken: 'deny-this-token',
    forbiddenPrefix: 'honest:',
    bulky: { channel: 'hist:bulk', epoch: bulk.epoch },
    maxBufferedBytes: DEFAULTS.maxBufferedBytes,
    // Under everything else at once, the gateway needs longer to work through a flood before the flooder reads.
    floodPauseMs: 8000,
  };
  const done = message(attacker, 'done', (SECONDS + 120) * 1000);
  honest.send({ type: 'phase', name: 'attack' });
  attacker.send({ type: 'start', port: gp.port, apiKey: API_KEY, seconds: SECONDS, seed: SEED, ctx, maxBufferedBytes: DEFAULTS.maxBufferedBytes });
  const attackStarted = Date.now();
  const cpuAtStart = cpuSeconds(gp.pid);
  let peak = 0;
  let sum = 0;
  let samples = 0;
  const sampler = setInterval(() => {
    if (!gp.alive()) return;
    const r = rss(gp.pid);
    peak = Math.max(peak, r);
    sum += r;
    samples += 1;
  }, 250);
  let lastReceived = honestStats.received ?? 0;
  let lastAt = Date.now();
  const progress = setInterval(() => {
    void gp.probe({ gc: false, timeoutMs: 4000 }).then(
      (p) => {
        const rate = ((honestStats.received ?? 0) - lastReceived) / ((Date.now() - lastAt) / 1000);
        lastReceived = honestStats.received ?? 0;
        lastAt = Date.now();
        const lat = honestStats.latencies?.['attack websocket'];
        log(
          `attack ${Math.round((Date.now() - attackStarted) / 1000)}/${SECONDS}s: RSS ${mib(rss(gp.pid))} (peak ${mib(peak)}), gateway connections ${JSON.stringify(p.stats.connections)}, ` +
            `attack inputs ${attackStats.inputs}, honest ${honestStats.connected}/${HONEST} connected, ${Math.round(rate)} deliveries/s, WebSocket p99 ${lat ? Math.round(lat.p99) : '-'} ms, ` +
            `reconnects ${honestStats.reconnects}, publish errors ${honestStats.publishErrors}, gateway error logs ${gp.errorLogs.length}`,
        );
      },
      (err) => log(`attack ${Math.round((Date.now() - attackStarted) / 1000)}/${SECONDS}s: gateway probe failed (${err.message}); alive ${gp.alive()}`),
    );
  }, 5000);
  const attackResult = await done;
  clearInterval(progress);
  clearInterval(sampler);
  const attackCpu = cpuSeconds(gp.pid) - cpuAtStart;
  const attackWall = (Date.now() - attackStarted) / 1000;
  await new Promise((r) => (attacker.exitCode !== null ? r() : attacker.once('exit', r)));
  log(`attackers done and gone: ${attackResult.inputs} inputs sent; gateway alive ${gp.alive()}`);

  // After: the attackers left; the honest load goes on.
  honest.send({ type: 'phase', name: 'after' });
  await sleep(SETTLE * 1000);
  const afterSettle = rss(gp.pid);
  const afterProbe = await gp.probe({ gc: true });
  const afterGc = rss(gp.pid);
  log(`after ${SETTLE} s: RSS ${mib(afterSettle)}; after GC ${mib(afterGc)} (heap ${mib(afterProbe.memory.heapUsed)}, external ${mib(afterProbe.memory.external)}); connections ${JSON.stringify(afterProbe.stats.connections)}`);

  // Verification: stop publishing, let everyone catch up, then check every honest subscriber.
  honest.send({ type: 'stop-publishing' });
  await message(honest, 'stopped', 10_000);
  const catchUpDeadline = Date.now() + 30_000;
  let lagging = Infinity;
  while (Date.now() < catchUpDeadline) {
    const caught = message(honest, 'caught-up', 10_000);
    honest.send({ type: 'caught-up?' });
    lagging = (await caught).lagging;
    if (lagging === 0) break;
    await sleep(500);
  }
  const reportPromise = message(honest, 'report', 30_000);
  honest.send({ type: 'report' });
  const report = await reportPromise;
  const alive = gp.alive();
  const health = await gp.health();
  const final = await gp.probe({ gc: false });

  // The report.
  const out = [];
  out.push('');
  out.push('=== Tidings under attack ===');
  out.push(`gateway: pid ${gp.pid}, core ${SERVER_CPU}, defaults (maxBufferedBytes ${mib(DEFAULTS.maxBufferedBytes)}, maxPayload 64 KiB, maxBody 1 MiB, headersTimeout 10 s, requestTimeout 30 s, pingInterval 25 s), --demo`);
  out.push(`honest load: ${HONEST} subscribers (${JSON.stringify(ready.by)}) on ${CHANNELS.join(', ')}; ${RATE} publications/s through POST /api/publish; long polls wait ${POLL_DELAY} ms between polls`);
  out.push(`attack: ${attackWall.toFixed(0)} s, ${attackResult.inputs} attack inputs sent (${attackResult.inflight} still in flight when the attackers left); gateway CPU during the attack ${((attackCpu / attackWall) * 100).toFixed(0)}% of its core`);
  out.push('');
  out.push('gateway RSS (VmRSS):');
  out.push(`  before the attack (honest clients connected): ${mib(before)} (V8 heap used after a full GC ${mib(beforeProbe.memory.heapUsed)}; the broker retains ${mib(beforeProbe.broker.historyBytes)} of history)`);
  out.push(`  during the attack: peak ${mib(peak)}, mean ${mib(sum / Math.max(1, samples))} (${samples} samples)`);
  out.push(
    `  after the attackers left: ${mib(afterSettle)} after ${SETTLE} s, ${mib(afterGc)} after a full GC (V8 heap used ${mib(afterProbe.memory.heapUsed)} of ${mib(afterProbe.memory.heapTotal)} reserved, external ${mib(afterProbe.memory.external)}; the broker retains ${mib(afterProbe.broker.historyBytes)} of history in ${afterProbe.broker.streams} streams)`,
  );
  out.push('');
  out.push('attacks:');
  out.push(...attackResult.summary.split('\n').map((l) => `  ${l}`));
  for (const [kind, e] of Object.entries(attackResult.extra)) out.push(`    ${kind}: ${e.inputs} inputs`);
  out.push('  outcomes of the bench-only attacks:');
  for (const [note, n] of Object.entries(attackResult.notes)) out.push(`    ${n}x ${note}`);
  out.push('  slow connections (slowloris), time until the gateway cut them, ms:');
  for (const [k, c] of Object.entries(attackResult.cuts)) out.push(`    ${k}: ${c.n} connections, p50 ${c.p50}, p90 ${c.p90}, max ${c.max}${c.notCut > 0 ? `, ${c.notCut} not cut while watched` : ''}`);
  out.push('');
  out.push(`broken promises seen by attackers (the test kit's judgement, hostile/run.ts): ${attackResult.violations.reduce((n, v) => n + v.count, 0)}`);
  for (const v of attackResult.violations.slice(0, 12)) out.push(`  ${v.count}x ${v.example}`);
  out.push('');
  out.push('honest subscribers:');
  for (const [kind, k] of Object.entries(report.perKind)) {
    out.push(
      `  ${kind}: ${k.complete}/${k.subscribers} got every publication once, in order, no hole, no gap; received ${k.received}, missing ${k.missing}, duplicates ${k.duplicates}, gap events ${k.gapEvents}, epoch changes ${k.epochChanges}, reconnects ${k.reconnects}`,
    );
    for (const e of k.examples) out.push(`    e.g. ${e}`);
  }
  out.push(`  reconnects (for long polls: failed polls retried with the same cursor), by reason: ${JSON.stringify(report.reconnectReasons)}`);
  out.push(`  still lagging at the end: ${lagging}`);
  out.push(`  published: ${report.publishedCount} (last positions ${JSON.stringify(Object.fromEntries(Object.entries(report.published).map(([c, p]) => [c, p.seq])))}); publish errors ${JSON.stringify(report.publishErrors)}; slowest publish ${Math.round(report.publishLatencyMax)} ms`);
  out.push(`  delivery latency, publish to receive, ms (long polls include their ${POLL_DELAY} ms wait between polls):`);
  for (const [phase, l] of Object.entries(report.latencies)) out.push(`    ${phase.padEnd(17)} ${String(l.deliveries).padStart(8)} deliveries  p50 ${l.p50.toFixed(1)}  p99 ${l.p99.toFixed(1)}  max ${l.max.toFixed(0)}`);
  out.push('');
  out.push(`gateway: alive ${alive}, /healthz ${health.status}, connections at the end ${JSON.stringify(final.stats.connections)}, hub ${JSON.stringify(final.stats.hub)}`);
  out.push(`  unexpected errors counted ${final.metrics.errors}, reached the process net ${final.netErrors}, error log lines ${gp.errorLogs.length}; drops ${JSON.stringify(final.metrics.drops)}; broker ${JSON.stringify(final.broker)}`);
  for (const line of gp.errorLogs.slice(0, 5)) out.push(`  log: ${line.slice(0, 300)}`);
  process.stdout.write(`${out.join('\n')}\n`);

  honest.kill('SIGKILL');
  await gp.stop();
  const allComplete = Object.values(report.perKind).every((k) => k.complete === k.subscribers);
  process.exitCode = alive && allComplete ? 0 : 1;
}

main().catch((err) => {
  process.stderr.write(`attack bench failed: ${err.stack ?? err}\n`);
  killChildren();
  process.exit(1);
});
