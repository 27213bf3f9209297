/**
 * The deploy docs stay true: every JSON config block of docs/deploy/*.md and the Kubernetes ConfigMap
 * pass the loader `tidings check-config` uses, with the environment of the shipped env file; the
 * systemd unit and the Kubernetes manifest give a node longer to stop than its drain may take, and
 * more descriptors than connections; the unit passes `systemd-analyze verify` where systemd is
 * installed; and the whole nginx configs (with the certificate paths, ports and temp paths of the
 * test) load with `nginx -t`.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { DEFAULTS, loadConfig, type GatewayOptions } from '@tidings/server';
import { DEPLOY_NGINX_DIR, freePort, NGINX_BIN, throwawayCertificate } from '@tidings/testing';

const DEPLOY = fileURLToPath(new URL('../../docs/deploy/', import.meta.url));
const read = (file: string): string => readFileSync(join(DEPLOY, file), 'utf8');

const temp = mkdtempSync(join(tmpdir(), 'tidings-deploy-'));
afterAll(() => rmSync(temp, { recursive: true, force: true }));

/** The variables set (not commented out) in an env file, as systemd's EnvironmentFile reads them. */
function envFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line.trim());
    if (m?.[1] !== undefined && m[2] !== undefined) env[m[1]] = m[2];
  }
  return env;
}

/** Validates a config file's text as `tidings check-config` does: the file, then the environment. */
function check(text: string, name: string, env: Record<string, string>): GatewayOptions {
  const file = join(temp, `${name}.json`);
  writeFileSync(file, text);
  return loadConfig({ file, env });
}

const SYSTEMD_ENV = envFile(read('systemd/tidings.env'));
const pages = readdirSync(DEPLOY).filter((f) => f.endsWith('.md'));
const jsonBlocks = pages.flatMap((page) => [...read(page).matchAll(/```json\n([\s\S]*?)```/g)].map((m, i) => ({ name: `${page} #${i + 1}`, text: m[1] ?? '' })));

/** The drain a config asks for: `drainDelay` (when set) plus `shutdownTimeout`, in ms. */
function drainBudget(text: string, options: GatewayOptions): number {
  const raw = JSON.parse(text) as { drainDelay?: unknown };
  return (typeof raw.drainDelay === 'number' ? raw.drainDelay : 0) + options.shutdownTimeout;
}

/** The JSON of the Kubernetes ConfigMap's `config.json: |` block. */
function configMapJson(yaml: string): string {
  const m = /^ {2}config\.json: \|\n((?: {4}.*\n|\n)+)/m.exec(yaml);
  return (m?.[1] ?? '').replace(/^ {4}/gm, '');
}

/** Backticked camelCase names on the deploy pages that are not gateway options: fields and Kubernetes keys. */
const NOT_OPTIONS = new Set(['durationMs', 'eventLoopDelayMs', 'heapUsed', 'idempotencyKey', 'failureThreshold', 'periodSeconds', 'preStop', 'terminationGracePeriodSeconds']);

describe('config files on the deploy pages', () => {
  it('names only real options', () => {
    const options = new Set([...Object.keys(DEFAULTS), ...Object.keys(DEFAULTS.namespaces[''] ?? {}), 'secret', 'publicKey', 'jwksUrl', 'jwksCooldown', 'audience', 'issuer']);
    const named = new Set(pages.flatMap((page) => [...read(page).matchAll(/`([a-z][a-zA-Z]*[A-Z][a-zA-Z]*)`/g)].map((m) => m[1] ?? '')));
    expect([...named].filter((name) => !options.has(name) && !NOT_OPTIONS.has(name))).toEqual([]);
    expect(named.has('drainDelay')).toBe(true);
  });

  it('has the production example, and the env file sets a valid API key', () => {
    expect(jsonBlocks.map((b) => b.name)).toContain('production.md #1');
    expect(SYSTEMD_ENV.TIDINGS_API_KEY?.length).toBeGreaterThanOrEqual(16);
  });

  it.each(jsonBlocks)('$name passes check-config with the env file', ({ name, text }) => {
    const options = check(text, name.replace(/\W+/g, '-'), SYSTEMD_ENV);
    expect(options.apiKey).toBe(SYSTEMD_ENV.TIDINGS_API_KEY);
  });
});

describe('the systemd unit', () => {
  const unit = read('systemd/tidings.service');
  const setting = (key: string): string | undefined => new RegExp(`^${key}=(.*)$`, 'm').exec(unit)?.[1];

  it('stops with SIGTERM and waits longer than the production config drains; has descriptors for every connection', () => {
    const text = jsonBlocks.find((b) => b.name === 'production.md #1')?.text ?? '';
    const options = check(text, 'production-systemd', SYSTEMD_ENV);
    expect(setting('KillSignal')).toBe('SIGTERM');
    expect(Number(setting('TimeoutStopSec')) * 1000).toBeGreaterThan(drainBudget(text, options) + 5000);
    expect(Number(setting('LimitNOFILE'))).toBeGreaterThan(options.maxConnections * 2);
    expect(setting('ExecStart')).toMatch(/ serve --config \/etc\/tidings\/config\.json$/);
    expect(setting('EnvironmentFile')).toBe('/etc/tidings/tidings.env');
    // V8's JIT writes executable memory.
    expect(setting('MemoryDenyWriteExecute')).toBeUndefined();
  });

  const analyze = spawnSync('systemd-analyze', ['--version']).status === 0;
  it.skipIf(!analyze)('passes systemd-analyze verify without a warning', () => {
    // verify wants the executable to exist: this machine's node stands in for the documented path.
    const file = join(temp, 'tidings.service');
    writeFileSync(file, unit.replace('/usr/bin/node ', `${process.execPath} `));
    const res = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' });
    expect({ status: res.status, stderr: res.stderr.trim() }).toEqual({ status: 0, stderr: '' });
  });
});

describe('the Kubernetes manifest', () => {
  const yaml = read('kubernetes.yaml');
  const num = (key: string, after = ''): number => Number(new RegExp(`${after}[\\s\\S]*?${key}: (\\d+)`).exec(yaml)?.[1]);
  const text = configMapJson(yaml);

  it('has a ConfigMap config that passes check-config with the Secret given', () => {
    expect(text).toMatch(/^\{/);
    check(text, 'kubernetes', { TIDINGS_API_KEY: SYSTEMD_ENV.TIDINGS_API_KEY ?? '', TIDINGS_BROKER: 'redis://:password@redis.example.internal:6379' });
  });

  it('probes /readyz for readiness and /healthz for liveness, drains past the readiness probe, and gives the drain time', () => {
    const options = check(text, 'kubernetes-budget', { TIDINGS_API_KEY: SYSTEMD_ENV.TIDINGS_API_KEY ?? '' });
    const raw = JSON.parse(text) as { drainDelay?: number };
    expect(/readinessProbe:\n\s+httpGet: \{ path: \/readyz, port: http \}/.test(yaml)).toBe(true);
    expect(/livenessProbe:\n\s+httpGet: \{ path: \/healthz, port: http \}/.test(yaml)).toBe(true);
    expect(raw.drainDelay).toBeGreaterThan(num('periodSeconds', 'readinessProbe') * num('failureThreshold', 'readinessProbe') * 1000);
    expect(num('terminationGracePeriodSeconds') * 1000).toBeGreaterThan(drainBudget(text, options) + 5000);
    expect(num('containerPort')).toBe(options.port);
    expect(yaml).toMatch(/maxUnavailable: 0\n\s+maxSurge: 1/);
  });
});

describe('the whole nginx configs', () => {
  /**
   * Loads one shipped whole config with `nginx -t` next to copies of its included files: the
   * certificate paths point at a throwaway certificate, each listen at a free loopback port (IPv6
   * listens dropped), and logs, pid and temp paths into a temp dir; nothing else is changed.
   */
  async function nginxTest(name: string): Promise<{ status: number | null; stderr: string }> {
    const dir = mkdtempSync(join(temp, 'nginx-'));
    for (const f of readdirSync(DEPLOY_NGINX_DIR)) copyFileSync(join(DEPLOY_NGINX_DIR, f), join(dir, f));
    const cert = throwawayCertificate(dir);
    let conf = readFileSync(join(dir, name), 'utf8')
      .replace('/etc/ssl/tidings/fullchain.pem', cert.certificate)
      .replace('/etc/ssl/tidings/privkey.pem', cert.key)
      .replace(/^\s*listen \[::\]:\d+[^;]*;\n/gm, '')
      .replace(
        /^http \{$/m,
        `http {\n    access_log off;\n${['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `    ${t}_temp_path ${dir}/${t};`).join('\n')}`,
      );
    for (const m of [...conf.matchAll(/listen (\d+)([ ;])/g)]) conf = conf.replace(m[0], `listen 127.0.0.1:${await freePort()}${m[2]}`);
    writeFileSync(join(dir, name), conf);
    const res = spawnSync(NGINX_BIN, ['-t', '-p', dir, '-c', join(dir, name), '-e', join(dir, 'error.log'), '-g', `pid ${dir}/nginx.pid;`], { encoding: 'utf8' });
    return { status: res.status, stderr: res.stderr };
  }

  it.skipIf(!existsSync(NGINX_BIN)).each(['nginx.conf', 'nginx-tls.conf'])('%s loads with nginx -t', async (name) => {
    const { status, stderr } = await nginxTest(name);
    expect(stderr).toContain('test is successful');
    expect(stderr).not.toMatch(/\[(warn|emerg|alert)\]/);
    expect(status).toBe(0);
  });
});
