/**
 * Starts a real nginx (the Debian package's binary) on a free loopback port as a reverse proxy in
 * front of a gateway, with throwaway config and temp dirs, in one of two hostile shapes:
 * - `strip-upgrade`: a plain proxy that does not pass WebSocket upgrade headers (nginx's default),
 *   so WebSocket cannot open but SSE streams (it honours `X-Accel-Buffering: no`);
 * - `buffer`: also ignores `X-Accel-Buffering` and compresses responses, which holds a stream's
 *   small writes in the compressor, so SSE events never reach the client while long polls
 *   (complete responses) do. A compressing or buffering middlebox does exactly this in the wild.
 *
 * {@link startClusterNginx} runs the shipped cluster config (docs/deploy/nginx) instead, and
 * {@link startTlsNginx} the same behind TLS with a throwaway self-signed certificate.
 * @module
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { get as httpsGet } from 'node:https';
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
 * `listen` is the server block's head (the listen directive, and the certificate with TLS).
 */
function clusterConfig(dir: string, port: number, upstreams: readonly number[], listen = `listen 127.0.0.1:${port};`): string {
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
    ${listen}
    include ${join(DEPLOY_NGINX_DIR, 'tidings-locations.conf')};
  }
}
`;
}

/** Starts nginx with the shipped cluster config in front of gateway nodes on `upstreamPorts`. */
export function startClusterNginx(upstreamPorts: readonly number[]): Promise<Nginx> {
  return launch((dir, port) => clusterConfig(dir, port, upstreamPorts));
}

/** The openssl binary: `TIDINGS_OPENSSL` or the one on PATH. */
export const OPENSSL_BIN = process.env.TIDINGS_OPENSSL ?? 'openssl';

/** A self-signed certificate for `127.0.0.1` and `localhost`, valid for a day, written to a directory. */
export interface ThrowawayCertificate {
  /** Path of the certificate (PEM). */
  readonly certificate: string;
  /** Path of its private key (PEM, unencrypted). */
  readonly key: string;
  /** The certificate's PEM text: pass it as `ca` to trust exactly this certificate. */
  readonly pem: string;
}

/** Writes a fresh P-256 key and a self-signed certificate for it into `dir` (the openssl command line). */
export function throwawayCertificate(dir: string): ThrowawayCertificate {
  const certificate = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  execFileSync(
    OPENSSL_BIN,
    [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
      '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
      '-keyout', key, '-out', certificate,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  return { certificate, key, pem: readFileSync(certificate, 'utf8') };
}

/** nginx in front of a cluster over TLS: `url` is `https://127.0.0.1:<port>`. */
export interface TlsNginx extends Nginx {
  /** `wss://127.0.0.1:<port>/ws` */
  readonly wsUrl: string;
  /** The throwaway certificate nginx presents (PEM): pass it as `ca`. */
  readonly ca: string;
}

/**
 * The cluster config of {@link clusterConfig} behind TLS (HTTP/2 offered, as in the shipped
 * nginx-tls.conf): the shipped `tidings-tls.conf` and `tidings-locations.conf`, included unchanged.
 */
function tlsConfig(dir: string, port: number, upstreams: readonly number[], cert: ThrowawayCertificate): string {
  const listen = `listen 127.0.0.1:${port} ssl http2;
    ssl_certificate ${cert.certificate};
    ssl_certificate_key ${cert.key};
    include ${join(DEPLOY_NGINX_DIR, 'tidings-tls.conf')};`;
  return clusterConfig(dir, port, upstreams, listen);
}

/** Whether `/healthz` answers 200 over TLS, trusting only `ca`. */
function tlsUp(port: number, ca: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = httpsGet({ host: '127.0.0.1', port, path: '/healthz', ca, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
    req.setTimeout(1000, () => req.destroy());
  });
}

/**
 * Starts nginx with the shipped TLS setup in front of gateway nodes on `upstreamPorts`, presenting a
 * throwaway self-signed certificate for 127.0.0.1 made for this run; `close()` removes it too.
 */
export async function startTlsNginx(upstreamPorts: readonly number[]): Promise<TlsNginx> {
  const certDir = mkdtempSync(join(tmpdir(), 'tidings-tls-'));
  let nginx: Nginx;
  let cert: ThrowawayCertificate;
  try {
    cert = throwawayCertificate(certDir);
    const { pem } = cert;
    nginx = await launch((dir, port) => tlsConfig(dir, port, upstreamPorts, cert), (port) => tlsUp(port, pem));
  } catch (err) {
    rmSync(certDir, { recursive: true, force: true });
    throw err;
  }
  return {
    port: nginx.port,
    url: `https://127.0.0.1:${nginx.port}`,
    wsUrl: `wss://127.0.0.1:${nginx.port}/ws`,
    ca: cert.pem,
    async close() {
      await nginx.close();
      rmSync(certDir, { recursive: true, force: true });
    },
  };
}

/** Whether `/healthz` answers 200 over plain HTTP. */
function httpUp(port: number): Promise<boolean> {
  return fetch(`http://127.0.0.1:${port}/healthz`).then(
    (r) => r.ok,
    () => false,
  );
}

/** Starts nginx proxying to `upstreamPort`; resolves once it accepts connections. */
export function startNginx(upstreamPort: number, mode: NginxMode): Promise<Nginx> {
  return launch((dir, port) => config(dir, port, upstreamPort, mode));
}

async function launch(configFor: (dir: string, port: number) => string, up: (port: number) => Promise<boolean> = httpUp): Promise<Nginx> {
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
    if (await up(port)) break;
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
