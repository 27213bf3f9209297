// Turns session results into markdown tables (one per session, every side in a column, then the
// ratios against the reference peers) and writes the JSON file.
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { fmt, int, kibText, ok, pct, ratio } from './format.mjs';

const line = (cells) => `| ${cells.join(' | ')} |`;
const sideLabel = (res, id) => res.sides.find((s) => s.id === id)?.label ?? id;
const ratioHeader = (res, [a, b]) => `${sideLabel(res, a)} / ${sideLabel(res, b)}`;
const saturatedText = (s) => (s === undefined || s === 'neither' ? '' : ` (${s} saturated)`);
const cpuText = (m) => `${pct(m.cpu.server)} / ${pct(m.cpu.load)}${saturatedText(m.saturated)}`;
const otherText = (m) => `${pct(m.otherLoad.serverCore)} / ${pct(m.otherLoad.loadCore)}`;
const latencyText = (l) => `${fmt(l?.p50)} / ${fmt(l?.p99)}`;

/**
 * Rows of a side-by-side table. `value` rows get a ratio per ratio pair (`paired`: the median of
 * per-round ratios when the step has them); `text` rows show the figure only; `roundRatios` rows
 * list the per-round ratios.
 */
const CPU_ROWS = [
  { name: (n) => `server CPU per delivery (µs), median of ${n} rounds`, value: (m) => m.serverMicrosPerDelivery, show: (x) => fmt(x, 3), paired: true },
  { name: () => 'every round', text: (m) => m.rounds.map((x) => fmt(x)).join(', '), roundRatios: true },
  { name: () => 'latency p50 / p99 (ms)', text: (m) => latencyText(m.latency) },
  { name: () => 'deliveries / expected', text: (m) => fmt(m.completeness, 4) },
  { name: () => 'CPU server / load gen', text: cpuText },
  { name: () => 'other processes on server / load core', text: otherText },
];
const END = { top: 'none failed (the ladder stops at 64 x the reference rate)' };
const limitText = ({ limit: l, end }) => (l === null ? END[end] : `${int(l.offered)}/s: ${l.why}${saturatedText(l.saturated)}`);
const LADDER_ROWS = [
  { name: (n) => `max sustained deliveries/s, median of ${n} ladder${n === 1 ? '' : 's'}`, value: (l) => l.max, show: int, mark: (l) => (l.loadBound ? ' (load gen bound)' : '') },
  { name: () => 'every ladder', text: (l) => l.rounds.map(int).join(', ') },
  { name: () => 'latency p50 / p99 at max (ms)', text: (l) => (l.at === null ? 'n/a' : latencyText(l.at.latency)) },
  { name: () => 'CPU server / load gen at max', text: (l) => (l.at === null ? 'n/a' : cpuText(l.at)) },
  { name: () => 'next step up (offered): why not sustained', text: limitText },
];

function notes(res, extra = []) {
  const out = [...extra];
  for (const [id, why] of Object.entries(res.skipped ?? {})) out.push(`${sideLabel(res, id)}: SKIPPED: ${why}`);
  return out.length === 0 ? '' : `\n\n${out.map((n) => `- ${n}`).join('\n')}`;
}

/** The table of a side-by-side session (`runCompare`'s result). */
export function compareTable(session, res, cfg) {
  const sides = res.sides;
  const pairs = session.ratios.filter(([a, b]) => sides.some((s) => s.id === a) && sides.some((s) => s.id === b));
  const header = ['Figure', ...sides.map((s) => s.label), ...pairs.map((p) => ratioHeader(res, p))];
  const lines = [line(header), line(header.map(() => '---'))];
  const missing = (id) => (res.skipped?.[id] !== undefined ? 'skipped' : 'failed');
  const add = (rows, step, n) => {
    const figures = step === 'cpu' ? res.cpu?.figures : res.ladder;
    if (figures === undefined) return;
    for (const row of rows) {
      const cell = (id) => {
        const m = figures[id];
        if (m === undefined) return missing(id);
        return row.text !== undefined ? row.text(m) : `${row.show(row.value(m))}${row.mark?.(m) ?? ''}`;
      };
      const ratioCell = ([a, b]) => {
        const paired = res.cpu?.ratios?.[`${a}/${b}`];
        if (row.roundRatios) return step === 'cpu' && paired !== undefined ? paired.ratios.map((x) => fmt(x)).join(', ') : '';
        if (row.value === undefined) return '';
        if (row.paired && paired !== undefined) return fmt(paired.median);
        const r = ratio(figures[a] && row.value(figures[a]), figures[b] && row.value(figures[b]));
        return r === null ? '' : fmt(r);
      };
      lines.push(line([row.name(n), ...sides.map((s) => cell(s.id)), ...pairs.map(ratioCell)]));
    }
  };
  add(CPU_ROWS, 'cpu', cfg.rounds);
  add(LADDER_ROWS, 'ladder', session.ladderRounds);
  return `### ${session.title}\n\n${session.about}\n\n${lines.join('\n')}${notes(res, session.notes)}`;
}

/** The table of an idle-memory session: per size, RSS and JS heap per connection. */
export function idleTable(session, res) {
  const sides = res.sides;
  const raw = sides.find((s) => s.kind === 'baseline');
  const nchan = sides.find((s) => s.kind === 'nchan');
  const tidings = sides.find((s) => s.kind === 'tidings');
  const extra = [];
  if (tidings && raw) extra.push({ name: `${tidings.label} − ${raw.label} (KiB)`, of: (a) => (ok(a[tidings.id]) && ok(a[raw.id]) ? kibText(a[tidings.id] - a[raw.id]) : '') });
  if (tidings && nchan) extra.push({ name: `${tidings.label} / ${nchan.label}`, of: (a) => (ok(ratio(a[tidings.id], a[nchan.id])) ? fmt(ratio(a[tidings.id], a[nchan.id])) : '') });
  const header = ['Connections', 'Figure', ...sides.map((s) => s.label), ...extra.map((e) => e.name)];
  const lines = [line(header), line(header.map(() => '---'))];
  const rows = [
    { name: 'RSS per idle connection (KiB)', value: (r) => r.bytesPerConnection, show: kibText, compare: true },
    { name: 'JS heap per idle connection (KiB)', value: (r) => r.heapBytesPerConnection, show: (x) => (x === null ? 'n/a' : kibText(x)) },
    { name: 'server RSS (MiB)', value: (r) => r.rssAfter, show: (x) => fmt(x / 2 ** 20, 0) },
    { name: 'server open fds', value: (r) => r.fdsAfter, show: int },
  ];
  res.sizes.forEach((size, i) => {
    for (const row of rows) {
      const values = Object.fromEntries(sides.map((s) => [s.id, res.memory[s.id]?.[i] === undefined ? undefined : row.value(res.memory[s.id][i])]));
      const cell = (s) => (res.memory[s.id]?.[i] === undefined ? (res.skipped[s.id] !== undefined ? 'skipped' : 'n/a') : row.show(values[s.id]));
      lines.push(line([int(size), row.name, ...sides.map(cell), ...extra.map((e) => (row.compare ? e.of(values) : ''))]));
    }
  });
  return `### ${session.title}\n\n${session.about}\n\n${lines.join('\n')}${notes(res)}`;
}

/** The table of the connect session. */
export function connectTable(session, res) {
  const sides = res.sides;
  const raw = sides.find((s) => s.kind === 'baseline');
  const tidings = sides.find((s) => s.kind === 'tidings');
  const nchan = sides.find((s) => s.kind === 'nchan');
  const ref = sides.find((s) => s.kind === 'tidings-ref');
  const pairs = [tidings && raw && [tidings, raw], tidings && nchan && [tidings, nchan], tidings && ref && [tidings, ref]].filter(Boolean);
  const header = ['Figure', ...sides.map((s) => s.label), ...pairs.map(([a, b]) => `${a.label} / ${b.label}`)];
  const lines = [line(header), line(header.map(() => '---'))];
  const get = (s) => res.connect[s.id];
  const cell = (s, f) => (get(s) === undefined ? (res.skipped[s.id] !== undefined ? 'skipped' : 'failed') : f(get(s)));
  const n = res.connect[sides[0]?.id]?.rounds.length ?? 0;
  lines.push(line([`connect-to-subscribed per second, median of ${n}`, ...sides.map((s) => cell(s, (m) => `${int(m.median)}${m.loadBound ? ' (load gen bound)' : ''}`)), ...pairs.map(([a, b]) => fmt(ratio(get(a)?.median, get(b)?.median)))]));
  // Round by round (`key`: rounds or microsRounds): the sides of one round ran back to back.
  const perRound = (a, b, key) => {
    const x = get(a)?.[key];
    const y = get(b)?.[key];
    return x === undefined || y === undefined ? '' : x.map((r, i) => fmt(ratio(r, y[i]))).join(', ');
  };
  const rounds = (key) => line(['every round', ...sides.map((s) => cell(s, (m) => (m[key] ?? []).map(int).join(', '))), ...pairs.map(([a, b]) => perRound(a, b, key))]);
  lines.push(rounds('rounds'));
  lines.push(line([`server CPU µs per connection, median of ${n}`, ...sides.map((s) => cell(s, (m) => (m.medianMicros === undefined ? 'n/a' : int(m.medianMicros)))), ...pairs.map(([a, b]) => fmt(ratio(get(a)?.medianMicros, get(b)?.medianMicros)))]));
  lines.push(rounds('microsRounds'));
  lines.push(line(['CPU server / load gen (median round)', ...sides.map((s) => cell(s, (m) => `${pct(m.cpu.server)} / ${pct(m.cpu.load)}`)), ...pairs.map(() => '')]));
  lines.push(line(['other processes on server / load core', ...sides.map((s) => cell(s, otherText)), ...pairs.map(() => '')]));
  return `### ${session.title}\n\n${session.about}\n\n${lines.join('\n')}${notes(res)}`;
}

/** What metrics cost: server CPU per delivery with / without them, paired rounds (target <= 1.03). */
export function metricsLine(res) {
  const paired = res?.cpu?.ratios?.['tidings/tidings-no-metrics'];
  const on = res?.cpu?.figures?.tidings?.serverMicrosPerDelivery;
  const off = res?.cpu?.figures?.['tidings-no-metrics']?.serverMicrosPerDelivery;
  if (paired === undefined) return 'Metrics cost: not measured';
  const verdict = paired.median <= 1.03 ? 'PASS' : 'FAIL';
  return [
    `Metrics cost (WebSocket fan-out, server CPU per delivery): with ${fmt(on, 3)} µs, without ${fmt(off, 3)} µs (median rounds)`,
    `${verdict}: with / without = ${fmt(paired.median, 3)} (paired rounds: ${paired.ratios.map((x) => fmt(x, 3)).join(', ')}; target <= 1.03)`,
  ].join('\n');
}

/** Writes bench/results/<timestamp>.json; returns its path relative to the repository. */
export function writeJson(body) {
  const dir = fileURLToPath(new URL('../results/', import.meta.url));
  mkdirSync(dir, { recursive: true });
  const name = `${new Date().toISOString().replace(/[:.]/g, '-')}.json`;
  writeFileSync(`${dir}${name}`, `${JSON.stringify(body, null, 2)}\n`);
  return `bench/results/${name}`;
}
