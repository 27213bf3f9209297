/**
 * The `tidings` command from the built package: serve prints where it listens and where it wrote a generated key,
 * publish prints the position, subscribe prints messages as they arrive, bad configuration exits
 * with a clear message.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const CLI = fileURLToPath(new URL('../../packages/server/dist/cli.js', import.meta.url));
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
});

interface Run {
  readonly child: ChildProcess;
  out: string;
  err: string;
  readonly exited: Promise<number | null>;
}

function run(args: string[], env: Record<string, string> = {}): Run {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const r: Run = {
    child,
    out: '',
    err: '',
    exited: new Promise((resolve) => child.on('exit', (code) => resolve(code))),
  };
  child.stdout?.on('data', (d: Buffer) => (r.out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (r.err += d.toString()));
  return r;
}

async function until(r: Run, pattern: RegExp, ms = 10_000): Promise<RegExpMatchArray> {
  const deadline = Date.now() + ms;
  for (;;) {
    const m = pattern.exec(r.out);
    if (m !== null) return m;
    if (Date.now() > deadline) throw new Error(`no ${pattern} in output: ${r.out} ${r.err}`);
    await new Promise((res) => setTimeout(res, 25));
  }
}

describe('tidings CLI', () => {
  it('serves, publishes and subscribes', async () => {
    const server = run(['serve', '--port', '0', '--host', '127.0.0.1', '--log-level', 'warn'], { TIDINGS_API_KEY: '', PORT: '' });
    const [, url] = await until(server, /listening on (http:\/\/127\.0\.0\.1:\d+)/);
    const [, file] = await until(server, /generated one for this run and wrote it to (\S+) \(mode 0600\)/);
    // The key itself is never printed when stdout is not a terminal; the file is readable by its owner only.
    expect((statSync(file as string).mode & 0o777).toString(8)).toBe('600');
    const key = readFileSync(file as string, 'utf8').trim();
    expect(server.out).not.toContain(key);
    const sub = run(['subscribe', 'cli-news', '--url', url as string]);
    // Wait until the subscription is in place, then publish until a message shows up.
    let published = 0;
    const pub = async (): Promise<string> => {
      const p = run(['publish', 'cli-news', `{"n":${++published}}`, '--url', url as string, '--type', 'cli.test'], { TIDINGS_API_KEY: key });
      expect(await p.exited).toBe(0);
      return p.out;
    };
    expect(JSON.parse(await pub())).toMatchObject({ channel: 'cli-news', position: { seq: 1 }, duplicate: false });
    const deadline = Date.now() + 10_000;
    while (!sub.out.includes('"cli.test"') && Date.now() < deadline) {
      await pub();
      await new Promise((r) => setTimeout(r, 100));
    }
    const lines = sub.out.trim().split('\n').map((l) => JSON.parse(l) as { channel: string; type: string; position: { seq: number }; data: { n: number } });
    expect(lines[0]).toMatchObject({ channel: 'cli-news', type: 'cli.test' });
    // Whatever it caught, it caught in order with data matching the position.
    const first = lines[0]?.position.seq ?? 0;
    expect(lines.map((l) => [l.position.seq, l.data.n])).toEqual(lines.map((_, i) => [first + i, first + i]));
    server.child.kill('SIGTERM');
    expect(await server.exited).toBe(0);
    // Not on a terminal, stdout is JSON log lines, what the operator is told included.
    const out = server.out.trim().split('\n');
    for (const line of out) expect(() => JSON.parse(line) as unknown, line).not.toThrow();
    expect(out.map((l) => (JSON.parse(l) as { msg: string }).msg)).toEqual(expect.arrayContaining([expect.stringMatching(/^SIGTERM: draining/)]));
  });

  it('publish fails with the server error and a non-zero exit', async () => {
    const server = run(['serve', '--port', '0', '--host', '127.0.0.1', '--log-level', 'warn'], { TIDINGS_API_KEY: 'a-key-of-twenty-chars' });
    const [, url] = await until(server, /listening on (http:\/\/\S+?) /);
    const p = run(['publish', 'bad channel', '{}', '--url', url as string], { TIDINGS_API_KEY: 'a-key-of-twenty-chars' });
    expect(await p.exited).toBe(1);
    expect(JSON.parse(p.out)).toMatchObject({ error: { code: 'bad_channel' } });
    server.child.kill('SIGTERM');
    await server.exited;
  });

  it('exits with every configuration problem named', async () => {
    const r = run(['serve', '--port', '99999', '--ping-interval', '1']);
    expect(await r.exited).toBe(2);
    expect(r.err).toContain('port must be an integer from 0 to 65535 (got 99999)');
    expect(r.err).toContain('pingInterval must be an integer from 100 to 3600000 (got 1)');
  });

  it.each(['redis://127.0.0.1:1', 'nats://127.0.0.1:1'])('refuses to join a shared broker (%s) without a configured API key', async (broker) => {
    const r = run(['serve', '--port', '0', '--broker', broker], { TIDINGS_API_KEY: '' });
    expect(await r.exited).not.toBe(0);
    expect(r.err).toContain('a shared broker needs a configured API key');
  });

  it('names the broker it cannot reach, and exits', async () => {
    const r = run(['serve', '--port', '0', '--host', '127.0.0.1', '--broker', 'redis://127.0.0.1:1'], { TIDINGS_API_KEY: 'a-key-of-at-least-16-chars' });
    expect(await r.exited).not.toBe(0);
    expect(r.err).toMatch(/unavailable|ECONNREFUSED|connect/i);
  });

  it('prints usage for unknown commands', async () => {
    const r = run(['frobnicate']);
    expect(await r.exited).toBe(2);
    expect(r.err).toContain("unknown command 'frobnicate'");
    expect(r.err).toContain('tidings serve');
  });
});

describe('the published package', () => {
  it('ships the CLI as its bin, with the built code and the demo page', async () => {
    const pack = spawn('npm', ['pack', '--dry-run', '--json', '--workspace', '@tidings/server'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    pack.stdout.on('data', (d: Buffer) => (out += d.toString()));
    await new Promise((resolve) => pack.on('exit', resolve));
    const [info] = JSON.parse(out) as Array<{ files: Array<{ path: string }> }>;
    const files = (info?.files ?? []).map((f) => f.path);
    expect(files).toEqual(expect.arrayContaining(['bin/tidings.js', 'dist/cli.js', 'dist/index.js', 'dist/gateway.js', 'public/index.html', 'package.json']));
    expect(files.some((f) => f.startsWith('src/'))).toBe(false);
  });

  it('links its bin at install on a fresh clone: a committed file, with the build in the install step', async () => {
    const root = fileURLToPath(new URL('../../', import.meta.url));
    const pkg = JSON.parse(readFileSync(join(root, 'packages/server/package.json'), 'utf8')) as { bin: Record<string, string> };
    const bin = pkg.bin.tidings as string;
    // npm links a bin only when its file exists at install time: it must be in the repository, not built.
    const tracked = await new Promise<string>((resolve) => {
      const git = spawn('git', ['ls-files', join('packages/server', bin)], { cwd: root, stdio: ['ignore', 'pipe', 'ignore'] });
      let out = '';
      git.stdout.on('data', (d: Buffer) => (out += d.toString()));
      git.on('exit', () => resolve(out.trim()));
    });
    expect(tracked).toBe('packages/server/bin/tidings.js');
    // npm ci links bins as the lockfile records them: it must name the same file.
    const lock = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8')) as { packages: Record<string, { bin?: Record<string, string> }> };
    expect(lock.packages['packages/server']?.bin).toEqual({ tidings: bin.replace(/^\.\//, '') });
    // `npm ci` runs the root's prepare, which builds what the bin runs (the server and the client
    // bundle it serves); `npm start` builds only those too.
    const scripts = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
    expect(scripts.prepare).toBe('tsc -b packages/server && node scripts/bundle-client.mjs');
    expect(scripts.start).toMatch(/^tsc -b packages\/server && /);
    const help = run([], {});
    expect(await help.exited).toBe(0);
    const shim = spawn(process.execPath, [join(root, 'packages/server', bin), '--help'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    shim.stdout.on('data', (d: Buffer) => (out += d.toString()));
    expect(await new Promise((resolve) => shim.on('exit', resolve))).toBe(0);
    expect(out).toContain('tidings serve');
  });
});
