// The performance targets Tidings is measured against, each checked from the results of one
// session: { id, label, pass (null when not measured), detail }.
import { roundRatioOf } from './broker-report.mjs';
import { fmt, int, kibText, ratio } from './format.mjs';

const result = (pass, detail) => ({ pass, detail });
const notMeasured = (why) => result(null, why);

/** Server CPU per delivery, `a` against `b`: the median of the paired rounds' ratios, at most `max`. */
const cpuAtMost = (session, a, b, max) => (results) => {
  const r = results[session]?.cpu?.ratios?.[`${a}/${b}`];
  if (r === undefined) return notMeasured(whyMissing(results[session], [a, b], 'cpu'));
  return result(r.median <= max, `ratio ${fmt(r.median)} (paired rounds ${r.ratios.map((x) => fmt(x)).join(', ')}; target <= ${max})`);
};

/** Max sustained deliveries/s, `a` against `b` (ratio of the ladders' medians), at least `min`. */
const maxAtLeast = (session, a, b, min = 1) => (results) => {
  const l = results[session]?.ladder;
  const [x, y] = [l?.[a], l?.[b]];
  if (x === undefined || y === undefined) return notMeasured(whyMissing(results[session], [a, b], 'ladder'));
  if (x.limit === null && y.limit === null) return notMeasured(`neither ladder found its limit (${int(x.max)} vs ${int(y.max)} deliveries/s sustained)`);
  // A reference that held no step down to the ladder's bottom broke (or shared its core with a storm): nothing to compare with.
  if (y.max === 0) return notMeasured(`${b} sustained no rate of the ladder (${a}: ${int(x.max)} deliveries/s)`);
  const r = x.max / y.max;
  const bound = [x, y].some((s) => s.loadBound) ? '; a load generator was the bottleneck, so a maximum is a lower bound' : '';
  return result(r >= min, `${int(x.max)} vs ${int(y.max)} deliveries/s, ratio ${fmt(r)} (target >= ${min}${bound})`);
};

/** Why a comparison has no figure: a side skipped (with the reason), not run, or failed. */
function whyMissing(res, ids, step) {
  if (res === undefined) return 'session not run';
  for (const id of ids) if (res.skipped?.[id] !== undefined) return `${id} skipped: ${res.skipped[id]}`;
  if (step === 'cpu' && res.cpu === undefined) return 'step cpu not run';
  if (step === 'ladder' && res.ladder === undefined) return 'step ladder not run';
  return `no figure for ${ids.join(' or ')}`;
}

/** Idle RSS per connection at the largest size measured: `check(tidings, peer)` in bytes. */
const memory = (session, peer, check, text) => (results) => {
  const res = results[session];
  const last = (id) => res?.memory?.[id]?.at(-1);
  const [t, p] = [last('tidings'), last(peer)];
  if (t === undefined || p === undefined) return notMeasured(whyMissing(res, ['tidings', peer], 'memory'));
  return result(check(t.bytesPerConnection, p.bytesPerConnection), `${int(t.connections)} connections: ${kibText(t.bytesPerConnection)} vs ${kibText(p.bytesPerConnection)} KiB (${text})`);
};

/** At 1k subscribers the saturation rate reached: Tidings sustains Nchan's maximum, with p50 <= 15 ms there. */
function saturation(results) {
  const l = results['ws-small']?.ladder;
  const [t, n] = [l?.tidings, l?.nchan];
  if (t === undefined || n === undefined) return notMeasured(whyMissing(results['ws-small'], ['tidings', 'nchan'], 'ladder'));
  if (n.bestK === null) return notMeasured('Nchan sustained no rate of the ladder');
  // Tidings' sustained steps at Nchan's level (same grid), else the lowest one above it.
  const steps = t.ladders.flatMap((x) => x.steps).filter((s) => s.sustained && s.k >= n.bestK);
  const k = Math.min(...steps.map((s) => s.k));
  const at = steps.filter((s) => s.k === k).map((s) => s.latency.p50);
  if (t.bestK === null || t.bestK < n.bestK || at.length === 0) return result(false, `Tidings sustained ${int(t.max)} deliveries/s, Nchan ${int(n.max)}`);
  const p50 = at.sort((a, b) => a - b)[Math.floor((at.length - 1) / 2)];
  return result(p50 <= 15, `Tidings sustained ${int(t.max)} deliveries/s, Nchan ${int(n.max)}; Tidings p50 at Nchan's rate ${fmt(p50)} ms (target <= 15)`);
}

/** Server CPU per delivery of the broker fan-out, `broker` against memory, at most 1.2. */
const broker = (kind) => (results) => {
  const b = results.brokers?.brokers;
  const [x, m] = [b?.[kind]?.fanout, b?.memory?.fanout];
  if (x === undefined || m === undefined) return notMeasured(results.brokers?.skipped?.[kind] ?? 'session brokers (step fanout) not run');
  const r = roundRatioOf(x, m) ?? ratio(x.serverMicrosPerDelivery, m.serverMicrosPerDelivery);
  return result(r <= 1.2, `${fmt(x.serverMicrosPerDelivery, 3)} vs ${fmt(m.serverMicrosPerDelivery, 3)} µs, ratio ${fmt(r)} (target <= 1.2)`);
};

const connects = (results) => {
  const c = results.connect?.connect;
  if (c?.tidings === undefined || c?.baseline === undefined) return notMeasured(whyMissing(results.connect, ['tidings', 'baseline'], 'connect'));
  const r = c.tidings.median / c.baseline.median;
  const bound = c.tidings.loadBound || c.baseline.loadBound ? '; a load generator was the bottleneck' : '';
  return result(r >= 1, `${int(c.tidings.median)} vs ${int(c.baseline.median)} per second, ratio ${fmt(r)} (target >= 1${bound})`);
};

/** Each target: the session it is read from, and its check. */
export const TARGETS = [
  { id: 'channels-cpu', session: 'channels-ws', label: '{channels} channels x 1 WS subscriber, HTTP-published: server µs per publish+delivery, Tidings <= Nchan', check: cpuAtMost('channels-ws', 'tidings', 'nchan', 1) },
  { id: 'channels-max', session: 'channels-ws', label: '{channels} channels x 1 WS subscriber, HTTP-published: sustained deliveries/s, Tidings >= Nchan WebSocket', check: maxAtLeast('channels-ws', 'tidings', 'nchan') },
  { id: 'channels-connection-max', session: 'channels-ws', label: '{channels} channels x 1 WS subscriber, published over a server connection: sustained, Tidings >= raw ws', check: maxAtLeast('channels-ws', 'tidings-connection', 'baseline') },
  { id: 'poll-max', session: 'poll-large', label: 'Long polling, {large} subscribers of one channel: sustained, Tidings >= Nchan long-poll', check: maxAtLeast('poll-large', 'tidings', 'nchan') },
  { id: 'poll-cpu', session: 'poll-large', label: 'Long polling, {large} subscribers of one channel: µs per delivery, Tidings <= Nchan', check: cpuAtMost('poll-large', 'tidings', 'nchan', 1) },
  { id: 'sse-cpu-small', session: 'sse-small', label: 'SSE fan-out, {small} subscribers: µs per delivery, Tidings <= 1.1 x raw SSE', check: cpuAtMost('sse-small', 'tidings', 'baseline', 1.1) },
  { id: 'sse-cpu-large', session: 'sse-large', label: 'SSE fan-out, {large} subscribers: µs per delivery, Tidings <= 1.1 x raw SSE', check: cpuAtMost('sse-large', 'tidings', 'baseline', 1.1) },
  { id: 'sse-max-small', session: 'sse-small', label: 'SSE fan-out, {small} subscribers: sustained, Tidings >= Nchan SSE', check: maxAtLeast('sse-small', 'tidings', 'nchan') },
  { id: 'sse-max-large', session: 'sse-large', label: 'SSE fan-out, {large} subscribers: sustained, Tidings >= Nchan SSE', check: maxAtLeast('sse-large', 'tidings', 'nchan') },
  { id: 'ws-cpu-small', session: 'ws-small', label: 'WebSocket fan-out, {small} subscribers: µs per delivery, Tidings <= 1.05 x raw ws', check: cpuAtMost('ws-small', 'tidings', 'baseline', 1.05) },
  { id: 'ws-cpu-large', session: 'ws-large', label: 'WebSocket fan-out, {large} subscribers: µs per delivery, Tidings <= 1.05 x raw ws', check: cpuAtMost('ws-large', 'tidings', 'baseline', 1.05) },
  { id: 'ws-saturation', session: 'ws-small', label: "WebSocket fan-out, {small} subscribers, saturation: Tidings delivers Nchan's maximum rate with p50 <= 15 ms", check: saturation },
  { id: 'memory-ws', session: 'idle-ws', label: 'Idle memory per WebSocket connection ({idle}): Tidings <= raw ws + 0.5 KiB', check: memory('idle-ws', 'baseline', (t, p) => t <= p + 512, 'target: difference <= 0.50 KiB') },
  { id: 'memory-sse', session: 'idle-sse', label: 'Idle memory per SSE connection ({idle}): Tidings <= Nchan', check: memory('idle-sse', 'nchan', (t, p) => t <= p, 'target: Tidings <= Nchan') },
  { id: 'memory-poll', session: 'idle-poll', label: 'Idle memory per held long poll ({idle}): Tidings <= Nchan', check: memory('idle-poll', 'nchan', (t, p) => t <= p, 'target: Tidings <= Nchan') },
  { id: 'connect', session: 'connect', label: 'Connect-to-subscribed rate, {connect} WebSocket connections: Tidings >= raw ws', check: connects },
  { id: 'broker-redis', session: 'brokers', label: 'Redis broker: server µs per delivery in the fan-out <= 1.2 x the memory broker', check: broker('redis') },
  { id: 'broker-nats', session: 'brokers', label: 'NATS broker: server µs per delivery in the fan-out <= 1.2 x the memory broker', check: broker('nats') },
];

/** The verdicts of the targets whose session ran (`ran`: session ids), labels with this run's numbers. */
export function verdicts(results, ran, cfg) {
  const numbers = { channels: cfg.channels, small: cfg.smallSubs, large: cfg.largeSubs, idle: cfg.idleSizes.at(-1), connect: cfg.connectSubs };
  const label = (text) => text.replace(/\{(\w+)\}/g, (_, name) => int(numbers[name]));
  return TARGETS.filter((t) => ran.includes(t.session)).map((t) => ({ id: t.id, session: t.session, label: label(t.label), ...t.check(results) }));
}

/** One PASS / FAIL / NOT MEASURED line per verdict. */
export function verdictLines(checks) {
  return checks.map((c) => `${c.pass === null ? 'NOT MEASURED' : c.pass ? 'PASS' : 'FAIL'}: ${c.label}: ${c.detail}`).join('\n');
}

