/**
 * The packages as a user gets them: `npm pack` the protocol, client and server into a temporary
 * directory, `npm install` the tarballs into empty projects, run the installed `tidings` bin, and
 * connect to it with the installed client from a plain ESM script. The client's tarball stands alone:
 * no dependencies, the protocol inlined (it is not published on its own).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SseEvent } from '@tidings/protocol';
import { freePort, postOnce, RawSseClient, TEST_API_KEY } from '@tidings/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const TSC = join(ROOT, 'node_modules/typescript/bin/tsc');

/** The environment for child npm commands, without what an outer `npm run` exported (its project, workspace, script). */
function npmEnv(): NodeJS.ProcessEnv {
  const keep = new Set(['npm_config_cache', 'npm_config_registry', 'npm_config_userconfig', 'npm_config_globalconfig', 'npm_config_cafile']);
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.toLowerCase().startsWith('npm_') || keep.has(k.toLowerCase())));
}

interface Done {
  readonly code: number | null;
  readonly out: string;
  readonly err: string;
}

/** Runs a command to its end; rejects with its output when it fails or outlasts `timeoutMs`. */
function exec(command: string, args: readonly string[], cwd: string, timeoutMs: number, env: NodeJS.ProcessEnv = npmEnv()): Promise<Done> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve({ code, out, err });
      else reject(new Error(`${command} ${args.join(' ')} exited with ${code}:\n${out}\n${err}`));
    });
  });
}

/** A long-running child with its output collected; stopped by PID. */
interface Proc {
  readonly child: ChildProcess;
  out: string;
  readonly exited: Promise<number | null>;
}

const procs: Proc[] = [];

function start(command: string, args: readonly string[], cwd: string, env: NodeJS.ProcessEnv): Proc {
  const child = spawn(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const p: Proc = { child, out: '', exited: new Promise((resolve) => child.once('exit', (code) => resolve(code))) };
  child.stdout?.on('data', (d: Buffer) => (p.out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (p.out += d.toString()));
  procs.push(p);
  return p;
}

function running(p: Proc): boolean {
  return p.child.exitCode === null && p.child.signalCode === null;
}

/** Stops a child by its PID (SIGTERM, the graceful drain) and resolves with its exit code. */
async function stop(p: Proc): Promise<number | null> {
  if (p.child.pid !== undefined && running(p)) process.kill(p.child.pid, 'SIGTERM');
  return p.exited;
}

async function waitFor(check: () => Promise<boolean> | boolean, timeoutMs: number, what: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what()} (waited ${timeoutMs} ms)`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function get(url: string): Promise<{ status: number; type: string; body: string }> {
  const res = await fetch(url);
  return { status: res.status, type: res.headers.get('content-type') ?? '', body: await res.text() };
}

/** Starts the installed bin on a free port and waits for `/healthz`. */
async function serve(project: string, flags: readonly string[] = []): Promise<{ proc: Proc; url: string }> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const env = { ...process.env, TIDINGS_API_KEY: TEST_API_KEY, PORT: '', HOST: '' };
  const proc = start(join(project, 'node_modules/.bin/tidings'), ['serve', '--port', String(port), '--host', '127.0.0.1', '--log-level', 'warn', ...flags], project, env);
  const healthy = async (): Promise<boolean> => {
    if (!running(proc)) throw new Error(`tidings exited (${proc.child.exitCode ?? proc.child.signalCode}):\n${proc.out}`);
    return get(`${url}/healthz`).then(
      (r) => r.status === 200,
      () => false,
    );
  };
  await waitFor(healthy, 15_000, () => `no /healthz from the installed tidings:\n${proc.out}`);
  return { proc, url };
}

async function publish(url: string, channel: string, data: unknown): Promise<void> {
  const { status, body } = await postOnce(`${url}/api/publish`, JSON.stringify({ channel, data, type: 'install.check' }));
  expect(status, body).toBe(200);
}

/** Every file under `dir`, relative to it. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)));
}

/** The consumer script: subscribes with the installed client (SSE or long polling over Node's fetch: no extra packages), prints the first message. */
const CLIENT_SCRIPT = `import { createClient } from '@tidings/client';
const [url, channel] = process.argv.slice(2);
const client = createClient(url, { transports: ['sse', 'poll'], storage: null });
client.on('state', ({ to }) => {
  if (to.status === 'connected') console.log(JSON.stringify({ connected: to.transport }));
});
client.subscribe(channel).on('message', (message) => {
  console.log(JSON.stringify({ message }));
  client.close();
  process.exit(0);
});
`;

/** A TypeScript consumer: the declarations, the protocol's types among them, resolve from the tarball. */
const CLIENT_TS = `import { createClient, TidingsError, type Message, type Position } from '@tidings/client';
const client = createClient('http://127.0.0.1:8080', { transports: ['sse'] });
client.subscribe('news').on('message', (m: Message) => {
  const at: Position = m.position;
  const seq: number = at.seq;
  console.log(seq, m.data);
});
export const isTidingsError = (err: unknown): boolean => err instanceof TidingsError;
`;

let work = '';
/** A project with all three tarballs installed, and one with the client's alone. */
let serverProject = '';
let clientProject = '';
let packed: Array<{ name: string; filename: string; files: Array<{ path: string }> }> = [];

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'tidings-install-'));
  const packs = join(work, 'packs');
  mkdirSync(packs);
  // One npm command, the workspaces in order: each prepack builds what its tarball needs.
  const workspaces = ['packages/protocol', 'packages/client', 'packages/server'].flatMap((w) => ['--workspace', w]);
  const { out } = await exec('npm', ['pack', ...workspaces, '--pack-destination', packs, '--json'], ROOT, 120_000);
  packed = JSON.parse(out) as typeof packed;
  const tarball = (name: string): string => join(packs, packed.find((p) => p.name === name)?.filename ?? `missing ${name}`);

  serverProject = join(work, 'server-app');
  clientProject = join(work, 'client-app');
  const install = ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel', 'error'];
  for (const [dir, name] of [
    [serverProject, 'tidings-install-server'],
    [clientProject, 'tidings-install-client'],
  ] as const) {
    mkdirSync(dir);
    writeFileSync(join(dir, 'package.json'), `${JSON.stringify({ name, version: '1.0.0', private: true, type: 'module' }, null, 2)}\n`);
  }
  // The protocol is not on a registry: its tarball, installed alongside, satisfies the server's dependency.
  await Promise.all([
    exec('npm', [...install, tarball('@tidings/protocol'), tarball('@tidings/server'), tarball('@tidings/client')], serverProject, 120_000),
    exec('npm', [...install, tarball('@tidings/client')], clientProject, 60_000),
  ]);
}, 240_000);

afterAll(async () => {
  for (const p of procs) {
    if (!running(p) || p.child.pid === undefined) continue;
    process.kill(p.child.pid, 'SIGKILL');
    await p.exited;
  }
  if (work !== '') rmSync(work, { recursive: true, force: true });
});

describe('the packed packages', () => {
  it('the server tarball ships the bin, the built code, the demo page and the browser bundle', () => {
    const files = packed.find((p) => p.name === '@tidings/server')?.files.map((f) => f.path) ?? [];
    expect(files).toEqual(expect.arrayContaining(['bin/tidings.js', 'dist/cli.js', 'dist/index.js', 'dist/index.d.ts', 'public/index.html', 'public/tidings-client.js']));
    expect(files.some((f) => f.startsWith('src/'))).toBe(false);
  });

  it('the client tarball has no dependencies and the protocol inlined', () => {
    const installed = join(clientProject, 'node_modules/@tidings/client');
    const manifest = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8')) as Record<string, unknown>;
    expect(manifest).not.toHaveProperty('dependencies');
    expect(manifest).not.toHaveProperty('peerDependencies');
    expect(manifest).not.toHaveProperty('optionalDependencies');
    // The installed package is the tarball's content: check every file of it.
    const files = filesUnder(installed);
    expect(files).toEqual(expect.arrayContaining(['dist/index.js', 'dist/index.d.ts', 'dist/protocol/index.js', 'dist/protocol/index.d.ts']));
    const naming = files.filter((f) => /\.(js|d\.ts)$/.test(f) && readFileSync(join(installed, f), 'utf8').includes('@tidings/protocol'));
    expect(naming).toEqual([]);
    // Nothing else came with it.
    expect(readdirSync(join(clientProject, 'node_modules')).filter((n) => !n.startsWith('.'))).toEqual(['@tidings']);
    expect(readdirSync(join(clientProject, 'node_modules/@tidings'))).toEqual(['client']);
    // The workspace is left as it was: the client's build imports the shared protocol package again.
    expect(readFileSync(join(ROOT, 'packages/client/dist/index.js'), 'utf8')).toContain("from '@tidings/protocol'");
  });

  it('the installed bin serves; the demo page and the browser bundle only with --demo', async () => {
    const { proc, url } = await serve(serverProject);
    expect((await get(`${url}/`)).status).toBe(404);
    expect((await get(`${url}/tidings-client.js`)).status).toBe(404);
    expect(await stop(proc)).toBe(0);

    const demo = await serve(serverProject, ['--demo']);
    const page = await get(`${demo.url}/`);
    expect(page.status).toBe(200);
    expect(page.type).toContain('text/html');
    const bundle = await get(`${demo.url}/tidings-client.js`);
    expect(bundle.status).toBe(200);
    expect(bundle.type).toContain('text/javascript');
    expect(bundle.body.length).toBeGreaterThan(1000);
    expect(await stop(demo.proc)).toBe(0);
  }, 60_000);

  it('a publish with the API key reaches an SSE subscriber and the installed client in a plain ESM script', async () => {
    const { proc, url } = await serve(serverProject, ['--demo']);
    // Raw SSE: the stream is subscribed once it has its welcome, so one publish is enough.
    const sse = await RawSseClient.open(`${url}/sse?channel=demo:install-sse`);
    expect(sse.status).toBe(200);
    await sse.until((c) => c.named(SseEvent.welcome).length > 0, 10_000);
    await publish(url, 'demo:install-sse', { over: 'sse' });
    await sse.until((c) => c.events.some((e) => e.data.includes('"over":"sse"')), 10_000);
    const event = sse.events.find((e) => e.data.includes('"over":"sse"'));
    expect(JSON.parse(event?.data ?? '{}')).toMatchObject({ channel: 'demo:install-sse', data: { over: 'sse' } });
    sse.close();

    // The client-only project (no protocol package, no ws): Node's fetch carries SSE and long polling.
    writeFileSync(join(clientProject, 'check.mjs'), CLIENT_SCRIPT);
    const script = start(process.execPath, ['check.mjs', url, 'demo:install-client'], clientProject, process.env);
    await waitFor(() => script.out.includes('"connected"'), 15_000, () => `the client script did not connect:\n${script.out}`);
    // Publish until the script has one (it subscribes from now: a publish racing its subscribe may go unseen).
    let n = 0;
    await waitFor(
      async () => {
        if (!running(script)) return true;
        await publish(url, 'demo:install-client', { n: ++n });
        return false;
      },
      15_000,
      () => `the client script received nothing:\n${script.out}`,
    );
    expect(await script.exited, script.out).toBe(0);
    expect(script.out).toContain('{"connected":"sse"}');
    const line = script.out.split('\n').find((l) => l.startsWith('{"message"')) ?? '{}';
    expect(JSON.parse(line)).toMatchObject({ message: { channel: 'demo:install-client', type: 'install.check', data: { n: expect.any(Number) as number } } });
    expect(await stop(proc)).toBe(0);
  }, 60_000);

  it('types resolve for a TypeScript consumer of the client tarball', async () => {
    writeFileSync(join(clientProject, 'check.ts'), CLIENT_TS);
    const compilerOptions = { strict: true, target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', lib: ['ES2023', 'DOM'], types: [], noEmit: true, skipLibCheck: false };
    writeFileSync(join(clientProject, 'tsconfig.json'), JSON.stringify({ compilerOptions, files: ['check.ts'] }));
    await exec(process.execPath, [TSC, '-p', clientProject], clientProject, 60_000, process.env);
  }, 60_000);
});
