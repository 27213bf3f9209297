// Summarises a V8 .cpuprofile (from BENCH_PROFILE=1 or `node --cpu-prof`): the top functions by
// self time, and the gateway's own functions (packages/*/dist) by inclusive time.
// Usage: node bench/profile.mjs <file.cpuprofile> [top=25]
import { readFileSync } from 'node:fs';

const [file, topText = '25'] = process.argv.slice(2);
if (file === undefined) {
  process.stderr.write('usage: node bench/profile.mjs <file.cpuprofile> [top]\n');
  process.exit(2);
}
const top = Number(topText);
const profile = JSON.parse(readFileSync(file, 'utf8'));

/** A readable place: dist paths of the workspace become their src .ts file. */
function where({ url, lineNumber }) {
  if (url === '') return '';
  const pkg = /packages\/([^/]+)\/dist\/(.*)\.js$/.exec(url);
  if (pkg !== null) return `${pkg[1]}/src/${pkg[2]}.ts`;
  const mod = /node_modules\/(.*)$/.exec(url);
  if (mod !== null) return `${mod[1]}:${lineNumber + 1}`;
  return url.replace(/^file:\/\/.*\/bench\//, 'bench/');
}
const keyOf = (cf) => `${cf.functionName || '(anonymous)'}  ${where(cf)}`;

const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const selfMicros = new Map();
for (let i = 0; i < profile.samples.length; i++) {
  const id = profile.samples[i];
  selfMicros.set(id, (selfMicros.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
}
const total = [...selfMicros.values()].reduce((a, b) => a + b, 0);

const self = new Map();
for (const [id, us] of selfMicros) {
  const key = keyOf(byId.get(id).callFrame);
  self.set(key, (self.get(key) ?? 0) + us);
}

// Inclusive time of workspace functions, counting each function once per stack.
const inclusive = new Map();
function walk(node, onStack) {
  const key = keyOf(node.callFrame);
  const own = /packages\/[^/]+\/dist\//.test(node.callFrame.url) && !onStack.has(key);
  let sum = selfMicros.get(node.id) ?? 0;
  const next = own ? new Set(onStack).add(key) : onStack;
  for (const child of node.children ?? []) sum += walk(byId.get(child), next);
  if (own) inclusive.set(key, (inclusive.get(key) ?? 0) + sum);
  return sum;
}
walk(profile.nodes[0], new Set());

const busy = total - (self.get('(idle)  ') ?? 0);
const line = (name, us) => `${((100 * us) / busy).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(0).padStart(7)} ms  ${name}`;
const print = (heading, map) => {
  process.stdout.write(`\n${heading}\n`);
  for (const [name, us] of [...map].sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(`${line(name, us)}\n`);
};
process.stdout.write(`${file}\n${(total / 1e6).toFixed(1)} s sampled, ${(busy / 1e6).toFixed(1)} s not idle (percentages are of that)\n`);
self.delete('(idle)  ');
print('Top functions by self time:', self);
print('Workspace functions by inclusive time:', inclusive);
