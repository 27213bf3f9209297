/**
 * Starts a real Prometheus server (the Debian package's `prometheus`) on a free loopback port with a
 * throwaway TSDB directory, scraping the given targets every `interval`, and queries it back. It is
 * stopped by its PID; `stop()` removes its directory.
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports.js';
import { accepts, halt, track } from './services.js';

/** The prometheus binary: `TIDINGS_PROMETHEUS` or the Debian path. */
export const PROMETHEUS_BIN = process.env.TIDINGS_PROMETHEUS ?? '/usr/bin/prometheus';
/** promtool, for `promtool check metrics`: `TIDINGS_PROMTOOL` or the Debian path. */
export const PROMTOOL_BIN = process.env.TIDINGS_PROMTOOL ?? '/usr/bin/promtool';

export interface PrometheusServer {
  readonly url: string;
  /** An instant query's result vector (`/api/v1/query`). */
  query(expr: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>>;
  /** The scrape targets' health as Prometheus sees them (`/api/v1/targets`). */
  targets(): Promise<Array<{ scrapeUrl: string; health: string; lastError: string }>>;
  stop(): Promise<void>;
}

export interface PrometheusOptions {
  /** `host:port` targets, scraped at `/metrics`. */
  readonly targets: readonly string[];
  /** Scrape interval, in ms (default 500). */
  readonly interval?: number;
}

/** Starts Prometheus; resolves once it answers `/-/ready`. */
export async function startPrometheus(opts: PrometheusOptions): Promise<PrometheusServer> {
  const dir = mkdtempSync(join(tmpdir(), 'tidings-prometheus-'));
  const port = await freePort();
  const interval = `${opts.interval ?? 500}ms`;
  const config = [
    'global:',
    `  scrape_interval: ${interval}`,
    `  scrape_timeout: ${interval}`,
    'scrape_configs:',
    '  - job_name: tidings',
    '    static_configs:',
    `      - targets: [${opts.targets.map((t) => JSON.stringify(t)).join(', ')}]`,
    '',
  ].join('\n');
  writeFileSync(join(dir, 'prometheus.yml'), config);
  const args = [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'];
  const child: ChildProcess = spawn(PROMETHEUS_BIN, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  track(child);
  let log = '';
  child.stderr?.on('data', (d: Buffer) => {
    if (log.length < 20_000) log += d.toString();
  });
  const url = `http://127.0.0.1:${port}`;
  const stop = async (): Promise<void> => {
    await halt(child, 'SIGTERM', 5000);
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`prometheus did not start on port ${port}: ${log.slice(-2000)}`);
    }
    if (await accepts(port)) {
      const ready = await fetch(`${url}/-/ready`).then(
        (r) => r.ok,
        () => false,
      );
      if (ready) break;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const api = async <T>(path: string): Promise<T> => {
    const res = await fetch(`${url}${path}`);
    const body = (await res.json()) as { status: string; data: T; error?: string };
    if (body.status !== 'success') throw new Error(`prometheus ${path}: ${body.error ?? res.status}`);
    return body.data;
  };
  return {
    url,
    query: async (expr) => (await api<{ result: Array<{ metric: Record<string, string>; value: [number, string] }> }>(`/api/v1/query?query=${encodeURIComponent(expr)}`)).result,
    targets: async () => (await api<{ activeTargets: Array<{ scrapeUrl: string; health: string; lastError: string }> }>('/api/v1/targets')).activeTargets,
    stop,
  };
}
