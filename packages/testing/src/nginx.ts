/**
 * Starts a real nginx (the Debian package's binary) on a free loopback port as a reverse proxy in
 * front of a gateway, with throwaway config and temp dirs, in one of two hostile shapes:
 * - `strip-upgrade`: a plain proxy that does not pass WebSocket upgrade headers (nginx's default),
 *   so WebSocket cannot open but SSE streams (it honours `X-Accel-Buffering: no`);
 * - `buffer`: also ignores `X-Accel-Buffering` and compresses responses, which holds a stream's
 *   small writes in the compressor, so SSE events never reach the client while long polls
 *   (complete responses) do. A compressing or buffering middlebox does exactly this in the wild.
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from './ports.js';

export type NginxMode = 'strip-upgrade' | 'buffer';

export interface Nginx {
  readonly port: number;
  readonly url: string;
  close(): Promise<void>;
}

/** The nginx binary: `TIDINGS_NGINX` or the Debian path. */
export const NGINX_BIN = process.env.TIDINGS_NGINX ?? '/usr/sbin/nginx';


function config(dir: string, port: number, upstream: number, mode: NginxMode): string {
  const buffering =
    mode === 'buffer'
      ? 'proxy_buffering on; proxy_ignore_headers X-Accel-Buffering; gzip on; gzip_proxied any; gzip_min_length 1; gzip_types text/event-stream application/json; gzip_buffers 16 64k;'
      : 'proxy_buffering on;';
  return `
daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://127.0.0.1:${upstream};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_read_timeout 60s;
      ${buffering}
    }
  }
}
`;
}

/** The shipped cluster config (docs/deploy/nginx), included as it is by {@link startClusterNginx}. */
export const DEPLOY_NGINX_DIR = fileURLToPath(new URL('../../../docs/deploy/nginx/', import.meta.url));

/**
 * The outer config of a cluster: temp paths, the listen address and the upstream list are the test's;
 * everything else is the shipped `tidings-http.conf` and `tidings-locations.conf`, included unchanged.
 */
function clusterConfig(dir: string, port: number, upstreams: readonly number[]): string {
  return `
daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  include ${join(DEPLOY_NGINX_DIR, 'tidings-http.conf')};
  upstream tidings {
    least_conn;
${upstreams.map((p) => `    server 127.0.0.1:${p} max_fails=1 fail_timeout=2s;`).join('\n')}
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${port};
    include ${join(DEPLOY_NGINX_DIR, 'tidings-locations.conf')};
  }
}
`;
}

/** Starts nginx with the shipped cluster config in front of gateway nodes on `upstreamPorts`. */
export function startClusterNginx(upstreamPorts: readonly number[]): Promise<Nginx> {
  return launch((dir, port) => clusterConfig(dir, port, upstreamPorts));
}

/** Starts nginx proxying to `upstreamPort`; resolves once it accepts connections. */
export function startNginx(upstreamPort: number, mode: NginxMode): Promise<Nginx> {
  return launch((dir, port) => config(dir, port, upstreamPort, mode));
}

async function launch(configFor: (dir: string, port: number) => string): Promise<Nginx> {
  const dir = mkdtempSync(join(tmpdir(), 'tidings-nginx-'));
  for (const sub of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(dir, sub));
  const port = await freePort();
  writeFileSync(join(dir, 'nginx.conf'), configFor(dir, port));
  const child: ChildProcess = spawn(NGINX_BIN, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const deadline = Date.now() + 5000;
  for (;;) {
    const up = await fetch(`http://127.0.0.1:${port}/healthz`).then(
      (r) => r.ok,
      () => false,
    );
    if (up) break;
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`nginx did not start: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    async close() {
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 2000))]);
      if (child.exitCode === null) child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
