// Turns session results into the markdown table, the target verdicts and the JSON file.
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const TARGETS = [
  { id: 'cpu', session: 'ws-small', step: 'cpu', max: 1.25, label: 'server CPU per WebSocket delivery' },
  { id: 'memory', session: 'ws-large', step: 'memory', max: 1.5, label: 'RSS per idle WebSocket connection' },
];

const ok = (x) => x !== null && x !== undefined && Number.isFinite(x);
const fmt = (x, digits = 2) => (ok(x) ? x.toFixed(digits) : 'n/a');
const int = (x) => (ok(x) ? Math.round(x).toLocaleString('en-US') : 'n/a');
const pct = (x) => `${Math.round(x * 100)}%`;
const ratio = (t, b) => (ok(t) && ok(b) && b !== 0 ? t / b : null);

/**
 * Table rows per step. A row with `value` gets a ratio column (with `paired`, the median of the
 * ratios of back-to-back rounds when the step ran paired); a row with `text` shows the whole step.
 * `target` names the target the row is checked against.
 */
const ROWS = {
  cpu: [
    { name: 'server CPU per delivery (us), median round', value: (s) => s.serverMicrosPerDelivery, show: (x) => fmt(x, 3), target: 'cpu', paired: true },
    { name: 'server CPU per delivery, every round', text: (s) => (s.rounds ?? []).map((x) => fmt(x, 2)).join(', '), roundRatios: true },
    { name: 'latency p50 (ms)', value: (s) => s.latency.p50, show: fmt },
    { name: 'latency p99 (ms)', value: (s) => s.latency.p99, show: fmt },
    { name: 'CPU server / load gen', text: (s) => `${pct(s.cpu.server)} / ${pct(s.cpu.load)}` },
  ],
  max: [
    { name: 'deliveries/s sustained, best round', value: (s) => s.deliveriesPerSecond, show: int },
    { name: 'deliveries/s, every round', text: (s) => (s.rounds ?? [s.deliveriesPerSecond]).map(int).join(', ') },
    { name: 'latency p50 (ms)', value: (s) => s.latency.p50, show: fmt },
    { name: 'latency p99 (ms)', value: (s) => s.latency.p99, show: fmt },
    { name: 'CPU server / load gen (saturated)', text: (s) => `${pct(s.cpu.server)} / ${pct(s.cpu.load)} (${s.saturated})` },
  ],
  memory: [
    { name: 'RSS per idle connection (KiB)', value: (s) => s.bytesPerConnection / 1024, show: fmt, target: 'memory' },
    { name: 'JS heap per idle connection (KiB)', value: (s) => s.heapBytesPerConnection / 1024, show: fmt },
    { name: 'server RSS idle -> loaded (MiB)', text: (s) => `${fmt(s.rssBefore / 2 ** 20, 0)} -> ${fmt(s.rssAfter / 2 ** 20, 0)}` },
    { name: 'server open fds', text: (s) => `${s.fdsBefore} -> ${s.fdsAfter}` },
  ],
};
const OTHER = { name: 'other processes on server / load core', text: (s) => `${pct(s.otherLoad.serverCore)} / ${pct(s.otherLoad.loadCore)}` };
ROWS.cpu.push(OTHER);
ROWS.max.push(OTHER);

/** The ratio a row reports for a session's step, or null. */
function rowRatio(row, sessionResults, step) {
  const paired = sessionResults?.paired?.[step];
  if (row.paired && paired !== undefined) return paired.median;
  const b = sessionResults?.baseline?.[step];
  const t = sessionResults?.tidings?.[step];
  return row.value === undefined || b === undefined || t === undefined ? null : ratio(row.value(t), row.value(b));
}

function title(session, step, cfg) {
  const who = `${session.transport === 'sse' ? 'SSE' : 'WS'} ${session.subs.toLocaleString('en-US')} subs`;
  if (step === 'cpu') return `${who}, ${cfg.rate} pub/s`;
  if (step === 'max') return `${who}, max (${cfg.window} in flight)`;
  return `${who}, idle`;
}

/** Verdicts for the targets: { id, label, ratio, max, pass } (pass is null when not measured). */
export function verdicts(results) {
  return TARGETS.map((t) => {
    const row = ROWS[t.step].find((r) => r.target === t.id);
    const r = rowRatio(row, results[t.session], t.step);
    return { id: t.id, label: t.label, ratio: r, max: t.max, pass: r === null ? null : r <= t.max };
  });
}

/** The markdown table comparing both servers, one row per figure. */
export function table(sessions, results, cfg) {
  const lines = ['| Scenario | Figure | raw ws baseline | Tidings | Tidings / baseline | Target |', '|---|---|---|---|---|---|'];
  for (const session of sessions) {
    const res = results[session.id];
    for (const step of ['memory', 'cpu', 'max']) {
      const b = res?.baseline?.[step];
      const t = res?.tidings?.[step];
      if (b === undefined && t === undefined) continue;
      for (const row of ROWS[step]) {
        const cell = (s) => (s === undefined ? 'failed' : row.text !== undefined ? row.text(s) : row.show(row.value(s)));
        const r = rowRatio(row, res, step);
        let ratioCell = r === null ? '' : fmt(r);
        if (row.roundRatios && res?.paired?.[step] !== undefined) ratioCell = res.paired[step].ratios.map((x) => fmt(x)).join(', ');
        const target = TARGETS.find((x) => x.id === row.target && x.session === session.id);
        const verdict = target === undefined ? '' : `<= ${target.max} ${r === null ? 'n/a' : r <= target.max ? 'PASS' : 'FAIL'}`;
        lines.push(`| ${title(session, step, cfg)} | ${row.name} | ${cell(b)} | ${cell(t)} | ${ratioCell} | ${verdict} |`);
      }
    }
  }
  return lines.join('\n');
}

/** Writes bench/results/<timestamp>.json; returns its path relative to the repository. */
export function writeJson(body) {
  const dir = fileURLToPath(new URL('../results/', import.meta.url));
  mkdirSync(dir, { recursive: true });
  const name = `${new Date().toISOString().replace(/[:.]/g, '-')}.json`;
  writeFileSync(`${dir}${name}`, `${JSON.stringify(body, null, 2)}\n`);
  return `bench/results/${name}`;
}
