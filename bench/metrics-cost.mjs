// What metrics add to one delivery, in-process and without a network: the gateway's hot-path call
// (`metrics.delivered`) with counting on (CounterMetrics: a counter, the latency histogram with its
// shared clock readings) and off (NO_METRICS), for fan-outs of `FANOUT` subscribers per publication.
// Pinned to one core; prints ns per delivery, medians of rounds. `npm run bench` measures the same
// cost end to end (session `metrics`), where it is within the noise of the machine.
import { execFileSync } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

const FANOUT = Number(process.env.FANOUT ?? 1000);
const ROUNDS = 7;
const PUBLICATIONS = 20_000;

if (process.argv[2] !== 'child') {
  execFileSync('taskset', ['-c', process.env.BENCH_SERVER_CPU ?? '0', process.execPath, fileURLToPath(import.meta.url), 'child'], { stdio: 'inherit' });
  process.exit(0);
}

const { CounterMetrics, NO_METRICS } = await import('../packages/server/dist/index.js');

function nsPerDelivery(metrics) {
  const start = process.cpuUsage();
  for (let p = 0; p < PUBLICATIONS; p++) {
    const arrivedAt = performance.now();
    for (let s = 0; s < FANOUT; s++) metrics.delivered(arrivedAt);
  }
  const used = process.cpuUsage(start);
  return ((used.user + used.system) * 1000) / (PUBLICATIONS * FANOUT);
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const on = [];
const off = [];
for (let r = 0; r < ROUNDS; r++) {
  on.push(nsPerDelivery(new CounterMetrics()));
  off.push(nsPerDelivery(NO_METRICS));
}
const extra = median(on) - median(off);
console.log(`metrics per delivery (fan-out ${FANOUT}): on ${median(on).toFixed(1)} ns, off ${median(off).toFixed(1)} ns, extra ${extra.toFixed(1)} ns`);
console.log(`at 11 us of server CPU per WebSocket delivery that is ${((extra / 11_000) * 100).toFixed(2)}%`);
