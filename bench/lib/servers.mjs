// The servers compared, and how to start each on a free loopback port, pinned to the server core.
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { rssBytes } from './procfs.mjs';
import { spawnPinned, stop, waitForOutput } from './children.mjs';
import { startNchan } from './nchan.mjs';

const root = (path) => fileURLToPath(new URL(`../../${path}`, import.meta.url));
const PRELOAD = new URL('../servers/preload.mjs', import.meta.url).href;

export const API_KEY = 'bench-api-key-0123456789abcdef';

// The bench measures capacity: admission control and per-address caps (which a load generator on
// one address would hit at once) are off; their own tests exercise them.
const TIDINGS_ARGS = ['serve', '--port', '0', '--host', '127.0.0.1', '--log-level', 'silent', '--max-connect-rate', '10000000', '--max-connections-per-ip', '0', '--max-connect-rate-per-ip', '0'];
/** What the load generator needs of a server speaking the Tidings wire (Tidings, and the raw baseline). */
const TIDINGS_WIRE = {
  transports: ['ws', 'sse', 'poll'],
  dialect: 'tidings',
  publish: ['http', 'batch', 'connection'],
  format: 'api',
  // Publishing over a server connection: the WebSocket path that takes `publish` frames
  // authenticated with the API key. Sides using it are checked with one publication first and
  // skipped ("not supported by this server") unless the server answers it with a reply.
  connectionPath: '/ws',
};
// Tidings' WebSocket subscribers subscribe in the connect request (`/ws?channel=`), as its SDK does;
// the raw baseline has only the `subscribe` frame.
const TIDINGS = { ...TIDINGS_WIRE, label: 'Tidings', script: root('packages/server/dist/cli.js'), args: TIDINGS_ARGS, connectSubscribe: true };

/**
 * `BENCH_REF=<checkout>`: another build of Tidings (a checkout of an earlier commit, with
 * `npm ci` and `npx tsc -b packages/server` run in it) as a side of its own, "Tidings ref", beside
 * this one: two builds compared in the same run, round by round (`tidings / tidings-ref`).
 */
const REF = process.env.BENCH_REF;
/** Node flags from an environment variable, separated by spaces. */
const flagsOf = (name) => (process.env[name] ?? '').split(' ').filter(Boolean);

/**
 * Every kind: its label, the transports it serves, the load generator's `dialect` for it, how it
 * is published to (`publish` modes, request `format`, `connectionPath`), and how it starts: a Node
 * `script` with `args` (run with the memory preload), or `start` for anything else.
 */
const KINDS = {
  // Raw ws, raw SSE and raw poll: one process (servers/raw-ws.mjs) serves all three.
  baseline: { ...TIDINGS_WIRE, label: 'raw', script: root('bench/servers/raw-ws.mjs'), args: ['0', '127.0.0.1'] },
  tidings: TIDINGS,
  ...(REF === undefined || REF === '' ? {} : { 'tidings-ref': { ...TIDINGS, label: 'Tidings ref', script: resolve(REF, 'packages/server/dist/cli.js'), nodeFlags: flagsOf('BENCH_REF_NODE_FLAGS') } }),
  // The same gateway counting nothing (`--metrics false`): what metrics cost (session `metrics`).
  'tidings-no-metrics': { ...TIDINGS, label: 'Tidings without metrics', args: [...TIDINGS_ARGS, '--metrics', 'false'] },
  // The Node floor (servers/floor.mjs): `net` and hand-cut requests, for the HTTP-shaped rows. Run
  // only when named in BENCH_SERVERS.
  floor: { ...TIDINGS_WIRE, label: 'Node floor', transports: ['ws', 'poll'], script: root('bench/servers/floor.mjs'), args: ['0', '127.0.0.1'] },
  nchan: { label: 'Nchan', transports: ['ws', 'sse', 'poll'], dialect: 'nchan', publish: ['http'], format: 'nchan', start: startNchan },
  socketio: {
    label: 'Socket.IO 4',
    transports: ['ws'],
    dialect: 'socketio',
    publish: ['http'],
    format: 'api',
    script: root('bench/servers/socketio.mjs'),
    args: ['0', '127.0.0.1'],
  },
};

/** The servers of the side-by-side sessions (`BENCH_SERVERS` picks among them). */
export const SERVER_KINDS = ['baseline', 'tidings', ...(KINDS['tidings-ref'] === undefined ? [] : ['tidings-ref']), 'floor', 'nchan', 'socketio'];
/** Kinds a run leaves out unless `BENCH_SERVERS` names them. */
export const OPT_IN_KINDS = new Set(['floor']);
export const serverInfo = (kind) => KINDS[kind];

const RAW = { ws: 'raw ws', sse: 'raw SSE', poll: 'raw poll' };
/** "raw ws" / "raw SSE" / "raw poll" for the baseline, the kind's label otherwise. */
export const serverLabel = (kind, transport = 'ws') => (kind === 'baseline' ? RAW[transport] : KINDS[kind].label);

/** Where BENCH_PROFILE=1 writes server CPU profiles. */
export const PROFILE_DIR = root('bench/results/profiles');

/**
 * Starts `kind` on `core`; resolves once it listens with { kind, pid, cpuPids, port, memory(),
 * check(), stop() }. `pid` is the process serving connections, `cpuPids` every process whose CPU
 * counts as the server's. `memory()` resolves with { vmRss, heapUsed, external, ... }, read right
 * after a full GC for Node servers (heap figures only there). `check()` throws when the server is
 * no longer whole. With `profileName`, a Node server writes a CPU profile of its whole life to
 * PROFILE_DIR when stopped. `extraArgs` go after the kind's own (e.g. `--broker redis://...` for
 * Tidings). `watchCore` runs the watchdog of a server that is not a Node process.
 */
export async function startServer(kind, core, profileName, extraArgs = [], watchCore = core) {
  const info = KINDS[kind];
  if (info.start !== undefined) {
    const s = await info.start(core, watchCore);
    return { kind, ...s, memory: async () => ({ vmRss: rssBytes(s.pid) }) };
  }
  const args = [...info.args, ...extraArgs];
  const nodeFlags = ['--expose-gc', '--import', PRELOAD, ...flagsOf('BENCH_NODE_FLAGS'), ...(info.nodeFlags ?? [])];
  if (profileName !== undefined) nodeFlags.push('--cpu-prof', '--cpu-prof-dir', PROFILE_DIR, '--cpu-prof-name', profileName);
  const child = spawnPinned(core, info.script, args, { env: { TIDINGS_API_KEY: API_KEY }, nodeFlags });
  try {
    const match = await waitForOutput(child, /listening on http:\/\/127\.0\.0\.1:(\d+)/, 15_000);
    const memory = async () => {
      const reply = waitForOutput(child, /bench-memory (\{.*\})\n/, 15_000);
      child.kill('SIGUSR2');
      const usage = JSON.parse((await reply)[1]);
      return { ...usage, vmRss: rssBytes(child.pid) };
    };
    const check = () => {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${info.label} exited (${child.exitCode ?? child.signalCode})`);
    };
    return { kind, pid: child.pid, cpuPids: [child.pid], port: Number(match[1]), memory, check, stop: () => stop(child, 5000) };
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
}
