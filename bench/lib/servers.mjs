// Starts the two servers under comparison on a free loopback port, pinned to the server core.
import { fileURLToPath } from 'node:url';
import { rssBytes } from './procfs.mjs';
import { spawnPinned, stop, waitForOutput } from './children.mjs';

const root = (path) => fileURLToPath(new URL(`../../${path}`, import.meta.url));
const PRELOAD = new URL('../servers/preload.mjs', import.meta.url).href;

export const API_KEY = 'bench-api-key-0123456789abcdef';

const TIDINGS_ARGS = ['serve', '--port', '0', '--host', '127.0.0.1', '--log-level', 'silent', '--max-connect-rate', '10000000', '--max-connections-per-ip', '0'];

const KINDS = {
  baseline: { label: 'raw ws baseline', script: root('bench/servers/raw-ws.mjs'), args: ['0', '127.0.0.1'] },
  tidings: {
    label: 'Tidings',
    script: root('packages/server/dist/cli.js'),
    // The bench measures capacity: admission control and per-address caps (which a load generator on
    // one address would hit at once) are off; their own tests exercise them.
    args: TIDINGS_ARGS,
  },
  // The same gateway counting nothing (`--metrics false`): what metrics cost (session `metrics`).
  'tidings-no-metrics': { label: 'Tidings without metrics', script: root('packages/server/dist/cli.js'), args: [...TIDINGS_ARGS, '--metrics', 'false'] },
};

/** The servers of the side-by-side sessions (`BENCH_SERVERS` picks among them). */
export const SERVER_KINDS = ['baseline', 'tidings'];
export const serverLabel = (kind) => KINDS[kind].label;

/** Where BENCH_PROFILE=1 writes server CPU profiles. */
export const PROFILE_DIR = root('bench/results/profiles');

/**
 * Starts `kind` on `core`; resolves once it listens with { kind, pid, port, memory(), stop() }.
 * `memory()` resolves with { rss, heapUsed, external, ... } read right after a full GC. With
 * `profileName`, the server writes a CPU profile of its whole life to PROFILE_DIR when stopped.
 * `extraArgs` go after the kind's own (e.g. `--broker redis://... --node-id n1` for Tidings).
 */
export async function startServer(kind, core, profileName, extraArgs = []) {
  const { script } = KINDS[kind];
  const args = [...KINDS[kind].args, ...extraArgs];
  const nodeFlags = ['--expose-gc', '--import', PRELOAD];
  if (profileName !== undefined) nodeFlags.push('--cpu-prof', '--cpu-prof-dir', PROFILE_DIR, '--cpu-prof-name', profileName);
  const child = spawnPinned(core, script, args, { env: { TIDINGS_API_KEY: API_KEY }, nodeFlags });
  try {
    const match = await waitForOutput(child, /listening on http:\/\/127\.0\.0\.1:(\d+)/, 15_000);
    const memory = async () => {
      const reply = waitForOutput(child, /bench-memory (\{.*\})\n/, 15_000);
      child.kill('SIGUSR2');
      const usage = JSON.parse((await reply)[1]);
      return { ...usage, vmRss: rssBytes(child.pid) };
    };
    return { kind, pid: child.pid, port: Number(match[1]), memory, stop: () => stop(child, 5000) };
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
}
