// The Nchan peer: Debian's nginx (/usr/sbin/nginx) with its Nchan module (libnginx-mod-nchan),
// started fresh per run from a config written into a throwaway directory (pid file, temp paths,
// error log), on a free loopback port, one worker, pinned with taskset like every server, and
// stopped by its pid (SIGTERM, then SIGKILL; the directory is removed). Its locations speak the
// shapes the load generator uses: `POST /pub?channel=` (publisher), `/ws`, `/sse` and `/poll`
// `?channel=` (subscribers: websocket, eventsource, longpoll), each holding a little history.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { adopt, descriptorLimit, release, spawnPinnedBinary, stop } from './children.mjs';
import { ask, freePort } from './net.mjs';

const NGINX = process.env.BENCH_NGINX ?? '/usr/sbin/nginx';
/** Where Debian's package puts the module, and the snippet that names it (relative to nginx's prefix). */
const MODULE = '/usr/lib/nginx/modules/ngx_nchan_module.so';
const SNIPPET = '/usr/share/nginx/modules-available/mod-nchan.conf';
const PREFIX = '/usr/share/nginx/';
/** nginx's temp directories, all kept in the run's directory. */
const TEMP_PATHS = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'];

/** The module's path, or why Nchan cannot run. */
function modulePath() {
  if (existsSync(SNIPPET)) {
    const m = /load_module\s+([^;\s]+)\s*;/.exec(readFileSync(SNIPPET, 'utf8'));
    const path = m === null ? undefined : m[1].startsWith('/') ? m[1] : join(PREFIX, m[1]);
    if (path !== undefined && existsSync(path)) return path;
  }
  if (existsSync(MODULE)) return MODULE;
  throw new Error('the Nchan module is not installed (Debian package libnginx-mod-nchan; scripts/setup.sh installs it)');
}

/**
 * The config. `fds` is the worker's descriptor limit; its connection slots are twice that, as Nchan's
 * WebSocket subscribers take more slots than descriptors (nginx says 'worker_connections are not
 * enough' at about 18,700 subscribers with one slot per descriptor).
 */
function config(dir, port, module, fds) {
  const subscriber = (type) => `nchan_subscriber ${type}; nchan_channel_id $arg_channel; nchan_subscriber_first_message newest;`;
  return `load_module ${module};
worker_processes 1;
worker_rlimit_nofile ${fds};
daemon off;
master_process on;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log error;
events { worker_connections ${2 * fds}; }
http {
  access_log off;
  ${TEMP_PATHS.map((name) => `${name}_temp_path ${dir}/${name};`).join('\n  ')}
  client_body_buffer_size 64k;
  tcp_nodelay on;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  nchan_max_reserved_memory 512M;
  nchan_message_buffer_length 32;
  nchan_message_timeout 60s;
  server {
    listen 127.0.0.1:${port};
    location = /pub { nchan_publisher; nchan_channel_id $arg_channel; }
    location = /ws { ${subscriber('websocket')} }
    location = /sse { ${subscriber('eventsource')} }
    location = /poll { ${subscriber('longpoll')} }
  }
}
`;
}

/** nginx's and the module package's versions, for the report. */
function versions() {
  const out = (file, args) => {
    const r = spawnSync(file, args, { encoding: 'utf8', timeout: 5000 });
    return `${r.stdout ?? ''}${r.stderr ?? ''}`.trim();
  };
  const nginx = (/nginx\/\S+/.exec(out(NGINX, ['-v'])) ?? ['nginx'])[0];
  const nchan = out('dpkg-query', ['-W', '-f=${Version}', 'libnginx-mod-nchan']);
  return `${nginx}, libnginx-mod-nchan ${nchan || 'unknown'}`;
}

/** The pids of `pid`'s children (Linux /proc/<pid>/task/<pid>/children). */
function childrenOf(pid) {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/**
 * Starts nginx + Nchan on `core`; resolves once its worker accepts connections with { pid (the
 * worker's), cpuPids (master and worker), port, version, check(), stop() }. `check()` throws when
 * the worker is no longer the one started (it crashed and the master replaced it). A watchdog on
 * `watchCore` kills both if this process dies without stopping them.
 */
export async function startNchan(core, watchCore) {
  const module = modulePath();
  if (!existsSync(NGINX)) throw new Error(`${NGINX} is not installed (Debian package nginx-light)`);
  const dir = mkdtempSync(join(tmpdir(), 'tidings-bench-nchan-'));
  chmodSync(dir, 0o755);
  const port = await freePort();
  const limit = descriptorLimit();
  const fds = Number.isFinite(limit) ? limit : 65536;
  const conf = join(dir, 'nginx.conf');
  writeFileSync(conf, config(dir, port, module, fds));
  const child = spawnPinnedBinary(core, NGINX, ['-p', `${dir}/`, '-c', conf, '-e', join(dir, 'error.log')], { stderr: 'pipe' });
  let output = '';
  const keep = (d) => (output = (output + d.toString()).slice(-4000));
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const log = () => {
    try {
      return readFileSync(join(dir, 'error.log'), 'utf8').trim().split('\n').slice(-3).join(' | ');
    } catch {
      return output.trim().split('\n').slice(-3).join(' | ');
    }
  };
  let worker;
  let watchdog;
  const halt = async () => {
    watchdog?.kill('SIGKILL');
    await stop(child, 3000);
    for (const pid of [worker, ...childrenOf(child.pid)]) {
      if (pid === undefined) continue;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone with its master
      }
      release(pid);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`nginx exited (${child.exitCode ?? child.signalCode})`);
      if (Date.now() > deadline) throw new Error('nginx did not accept connections within 10 s');
      [worker] = childrenOf(child.pid);
      if (worker !== undefined && (await ask(port, '', 1000)) !== '') break;
      await sleep(50);
    }
  } catch (err) {
    await halt();
    throw new Error(`${err instanceof Error ? err.message : String(err)}: ${log()}`, { cause: err });
  }
  adopt(worker);
  watchdog = spawnPinnedBinary(watchCore, 'bash', ['-c', `while kill -0 ${process.pid} 2>/dev/null; do sleep 1; done; kill -9 ${child.pid} ${worker} 2>/dev/null`]);
  const version = versions();
  return {
    pid: worker,
    cpuPids: [child.pid, worker],
    port,
    version,
    check: () => {
      if (!childrenOf(child.pid).includes(worker)) throw new Error(`the nginx worker (pid ${worker}) is gone: ${log()}`);
    },
    stop: halt,
  };
}
