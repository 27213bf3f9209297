// The broker comparison's table (session `brokers`): one column per broker, ratios against memory.
import { fmt, int, pct, ratio } from './format.mjs';

const fmt1 = (x) => fmt(x, 1);
const fmt3 = (x) => fmt(x, 3);
const CPU_NAMES = { server: 'gateway', gateway: 'gateway', node2: 'node 2', broker: 'broker', load: 'load gen' };
const cpuText = (m) => {
  const names = Object.keys(m.cpu).sort((a, b) => Object.keys(CPU_NAMES).indexOf(a) - Object.keys(CPU_NAMES).indexOf(b));
  return `${names.map((n) => `${CPU_NAMES[n] ?? n} ${pct(m.cpu[n])}`).join(' / ')}${m.saturated === undefined ? '' : ` (${m.saturated})`}`;
};
const otherText = (m) => Object.values(m.otherLoad).map(pct).join(' / ');

/** Rows of each broker step; `headline` rows get per-round ratios against memory, `value` rows a ratio of figures. */
const PUBLISH_ROWS = [
  { name: 'acknowledged publications/s, median round', value: (m) => m.publicationsPerSecond, show: int, headline: true },
  { name: 'acknowledged publications/s, every round', text: (m) => m.rounds.map(int).join(', ') },
  { name: 'per node (publications/s)', text: (m) => m.perNodePerSecond.map(int).join(' + '), nodes: 2 },
  { name: '2 nodes / 1 node', scaling: true, nodes: 2 },
  { name: 'gateway CPU per publication (us)', value: (m) => m.gatewayMicrosPerPublication, show: fmt1, nodes: 1 },
  { name: 'both gateways\' CPU per publication (us)', value: (m) => m.gatewayMicrosPerPublication, show: fmt1, nodes: 2 },
  { name: 'broker server CPU per publication (us)', value: (m) => m.brokerMicrosPerPublication, show: (x) => (x === null ? 'in gateway' : fmt1(x)) },
  { name: 'ack latency p50 / p99 (ms)', text: (m) => `${fmt(m.ackLatency.p50)} / ${fmt(m.ackLatency.p99)}` },
  { name: 'CPU (saturated)', text: cpuText },
  { name: 'other processes on the cores', text: otherText },
];
const FANOUT_ROWS = [
  { name: 'gateway CPU per delivery (us), median round', value: (m) => m.serverMicrosPerDelivery, show: fmt3, headline: true, nodes: 1 },
  { name: 'node 1 CPU per delivery (us), median round', value: (m) => m.serverMicrosPerDelivery, show: fmt3, headline: true, nodes: 2 },
  { name: 'every round', text: (m) => m.rounds.map(fmt3).join(', ') },
  { name: 'gateway + broker CPU per delivery (us)', value: (m) => m.serverSideMicrosPerDelivery ?? m.serverMicrosPerDelivery, show: fmt3, nodes: 1 },
  { name: 'both nodes + broker CPU per delivery (us)', value: (m) => m.serverSideMicrosPerDelivery, show: fmt3, nodes: 2 },
  { name: 'latency p50 (ms)', value: (m) => m.latency.p50, show: fmt },
  { name: 'latency p99 (ms)', value: (m) => m.latency.p99, show: fmt },
  { name: 'deliveries / expected', value: (m) => m.completeness, show: (x) => fmt(x, 4) },
  { name: 'CPU', text: cpuText },
  { name: 'other processes on the cores', text: otherText },
];

/** The markdown table of the broker comparison: one column per broker, ratios against memory. */
export function brokerTable(session, res, cfg) {
  const kinds = session.brokers;
  const labels = { memory: 'memory', redis: 'Redis', nats: 'NATS JetStream' };
  const others = kinds.includes('memory') ? kinds.filter((k) => k !== 'memory') : [];
  const line = (cells) => `| ${cells.join(' | ')} |`;
  const header = ['Scenario', 'Figure', ...kinds.map((k) => labels[k]), ...others.map((k) => `${labels[k]} / memory`)];
  const lines = [line(header), line(header.map(() => '---'))];
  const flight = `${cfg.pubConnections} x ${cfg.pubDepth} in flight`;
  const chans = cfg.pubChannels > 1 ? `, ${cfg.pubChannels} channels` : ', 1 channel';
  const blocks = [];
  for (const [step, nodes] of [['publish', 1], ['publish-2', 2]]) {
    for (const variant of cfg.pubBatch > 1 ? ['single', 'batch'] : ['single']) {
      const per = variant === 'single' ? '1 publication per request' : `batches of ${cfg.pubBatch}`;
      const where = nodes === 1 ? '1 node' : '2 nodes';
      blocks.push({ step, nodes, rows: PUBLISH_ROWS, title: `Publish, ${where}, ${per} (${flight}${nodes === 2 ? ' per node' : ''}${chans})`, get: (r) => r?.[step]?.[variant], single: (r) => r?.publish?.[variant] });
    }
    const fstep = step.replace('publish', 'fanout');
    const title = nodes === 1 ? `Fan-out, 1 node, WS ${int(cfg.brokerSubs)} subs, ${cfg.rate} pub/s` : `Fan-out, WS ${int(cfg.brokerSubs)} subs on node 1, ${cfg.rate} pub/s published on node 2`;
    blocks.push({ step: fstep, nodes, rows: FANOUT_ROWS, title, get: (r) => r?.[fstep] });
  }
  // Steps in run order: publish, fanout, publish-2, fanout-2.
  for (const block of blocks) {
    if (!session.steps.includes(block.step)) continue;
    const results = Object.fromEntries(kinds.map((k) => [k, block.get(res?.brokers?.[k])]));
    if (Object.values(results).every((m) => m === undefined) && block.nodes === 1) continue;
    const missing = (k) => (res?.brokers?.[k]?.twoNodes !== undefined && block.nodes === 2 ? 'n/a' : res?.skipped?.[k] !== undefined ? 'skipped' : 'failed');
    for (const row of block.rows) {
      if (row.nodes !== undefined && row.nodes !== block.nodes) continue;
      const cell = (k) => {
        const m = results[k];
        if (m === undefined) return missing(k);
        if (row.scaling) {
          const one = block.single(res?.brokers?.[k]);
          return one === undefined ? 'n/a' : fmt(m.publicationsPerSecond / one.publicationsPerSecond);
        }
        return row.text !== undefined ? row.text(m) : row.show(row.value(m));
      };
      const ratioCell = (k) => {
        if (block.nodes === 2 || row.value === undefined) return '';
        const figures = ratio(results[k] && row.value(results[k]), results.memory && row.value(results.memory));
        const r = row.headline ? (roundRatioOf(results[k], results.memory) ?? figures) : figures;
        return r === null ? '' : fmt(r);
      };
      lines.push(line([block.title, row.name, ...kinds.map(cell), ...others.map(ratioCell)]));
    }
  }
  const notes = [];
  for (const k of kinds) {
    if (res?.brokers?.[k]?.version !== undefined && k !== 'memory') notes.push(`${labels[k]}: ${res.brokers[k].version}`);
    if (res?.brokers?.[k]?.twoNodes !== undefined) notes.push(`${labels[k]}, 2 nodes: n/a: ${res.brokers[k].twoNodes}`);
    if (res?.skipped?.[k] !== undefined) notes.push(`${labels[k]}: SKIPPED: ${res.skipped[k]}`);
  }
  const p = res?.placement;
  if (p !== undefined) notes.push(`Cores: gateway node 1 on ${p.gateway}, node 2 on ${p.node2}, broker servers on ${p.broker}, load generators on ${p.load}`);
  return `${lines.join('\n')}\n\n${notes.map((n) => `- ${n}`).join('\n')}`;
}

/** Median of per-round ratios when both ran the same rounds (back to back), else the ratio of figures. */
export function roundRatioOf(a, b) {
  if (a === undefined || b === undefined) return null;
  if (Array.isArray(a.rounds) && Array.isArray(b.rounds) && a.rounds.length === b.rounds.length && a.rounds.length > 0) {
    const rs = a.rounds.map((x, i) => x / b.rounds[i]).sort((x, y) => x - y);
    const mid = Math.floor(rs.length / 2);
    return rs.length % 2 === 1 ? rs[mid] : (rs[mid - 1] + rs[mid]) / 2;
  }
  return null;
}
