/**
 * Running README code: shell commands with bash, JavaScript as an ES module in Node and as a module
 * script in a Chromium page. JavaScript runs after a prelude that defines what the README leaves to
 * the reader (`render`, `refetch`, `fetchToken`) and records every call of those and of
 * `console.log`, so a check can assert what a block printed or rendered.
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser, BrowserContext, Page } from 'playwright-core';

/** The repository root: README code runs from inside it, so `npx tidings` and `@tidings/*` resolve. */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** A process a README block started. */
export interface Proc {
  readonly command: string;
  out: string;
  err: string;
  /** The exit code once it exited (null when killed by a signal). */
  code: number | null | undefined;
  readonly exited: Promise<number | null>;
  /** SIGTERM to its process group (npx and bash start children), SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<number | null>;
}

/** Starts `file args` in its own process group, collecting its output. */
export function startProcess(file: string, args: readonly string[], options: { cwd: string; env: NodeJS.ProcessEnv; command?: string }): Proc {
  const child: ChildProcess = spawn(file, args, { cwd: options.cwd, env: options.env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const signal = (name: NodeJS.Signals): void => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, name);
    } catch {
      // The group is gone already.
    }
  };
  const proc: Proc = {
    command: options.command ?? [file, ...args].join(' '),
    out: '',
    err: '',
    code: undefined,
    exited: new Promise((resolve) =>
      child.on('exit', (code) => {
        proc.code = code;
        resolve(code);
      }),
    ),
    async stop(graceMs = 3000) {
      if (proc.code !== undefined) return proc.code;
      signal('SIGTERM');
      const timer = setTimeout(() => signal('SIGKILL'), graceMs);
      const code = await proc.exited;
      clearTimeout(timer);
      // Whatever the group leader left behind goes too.
      signal('SIGKILL');
      return code;
    },
  };
  child.stdout?.on('data', (d: Buffer) => (proc.out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (proc.err += d.toString()));
  return proc;
}

/** Runs one shell command with bash. */
export function startShell(command: string, cwd: string, env: NodeJS.ProcessEnv): Proc {
  return startProcess('bash', ['-c', command], { cwd, env, command });
}

/** Resolves when `check` holds; throws naming `what` after `ms`, or at once when `dead()` says why it never will. */
export async function waitFor(check: () => boolean | Promise<boolean>, ms: number, what: () => string, dead: () => string | undefined = () => undefined): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    const why = dead();
    if (why !== undefined) throw new Error(`${what()}: ${why}`);
    if (Date.now() > deadline) throw new Error(`${what()} (waited ${ms} ms)`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Why a long-running process will never produce what is awaited: it exited. */
export function exitedEarly(proc: Proc): string | undefined {
  return proc.code === undefined ? undefined : `'${proc.command}' exited with ${proc.code}\nstdout: ${proc.out}\nstderr: ${proc.err}`;
}

/** One call the prelude recorded: `console.log`, `render`, `refetch` or `fetchToken`, with its arguments (as JSON). */
export interface Call {
  readonly fn: string;
  readonly args: unknown[];
}

/** A JavaScript block running in Node or in a page. */
export interface JsRun {
  readonly where: 'node' | 'chromium';
  calls(): Promise<Call[]>;
  /** Why the run failed (an uncaught error, the process exited), or undefined. */
  failure(): string | undefined;
  stop(): Promise<void>;
}

/** The reader's own functions the README calls, recording into `record(fn, args)`. */
const HARNESS = `
globalThis.render = (...args) => __record('render', args);
globalThis.refetch = (...args) => __record('refetch', args);
globalThis.fetchToken = async () => { __record('fetchToken', []); return 'token-from-your-backend'; };
const __log = console.log.bind(console);
console.log = (...args) => { __record('console.log', args); __log(...args); };
`;

const MARK = '\u001eREADME-CALL ';

/**
 * The Node prelude. With `browserOrigin`, the block is browser code: `EventSource` (the `eventsource`
 * package) resolves relative URLs against that origin as a page would, and `WebSocket` is `ws` when
 * Node has none.
 */
function nodePrelude(browserOrigin: string | undefined): string {
  const record = `const __record = (fn, args) => process.stdout.write(${JSON.stringify(MARK)} + JSON.stringify({ fn, args }) + '\\n');`;
  const browser =
    browserOrigin === undefined
      ? ''
      : `import { EventSource as __EventSource } from 'eventsource';
import __WebSocket from 'ws';
globalThis.EventSource = class extends __EventSource { constructor(url, init) { super(new URL(url, ${JSON.stringify(browserOrigin)}), init); } };
globalThis.WebSocket ??= __WebSocket;
`;
  return `${browser}${record}${HARNESS}// --- README block ---\n`;
}

/** Runs `code` as an ES module file in `dir` (inside the repository, so `@tidings/*` resolve). */
export function runInNode(code: string, options: { dir: string; name: string; env: NodeJS.ProcessEnv; browserOrigin?: string }): JsRun & { readonly proc: Proc } {
  const file = join(options.dir, `${options.name}.mjs`);
  writeFileSync(file, nodePrelude(options.browserOrigin) + code);
  const proc = startProcess(process.execPath, [file], { cwd: options.dir, env: options.env, command: `node ${options.name}.mjs` });
  const calls = (): Call[] =>
    proc.out
      .split('\n')
      .filter((l) => l.startsWith(MARK))
      .map((l) => JSON.parse(l.slice(MARK.length)) as Call);
  return {
    where: 'node',
    proc,
    calls: () => Promise.resolve(calls()),
    failure: () => (proc.code === undefined || proc.code === 0 ? undefined : exitedEarly(proc)),
    stop: async () => {
      await proc.stop();
    },
  };
}

/** Runs `code` as a module script in a fresh context's page at `pageUrl`. */
export async function runInPage(browser: Browser, pageUrl: string, code: string): Promise<JsRun & { readonly page: Page }> {
  const context: BrowserContext = await browser.newContext();
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (err) => errors.push(err.message));
  page.on('console', (msg) => {
    if (msg.type() === 'error' && /module|import|Uncaught/i.test(msg.text())) errors.push(msg.text());
  });
  await page.goto(pageUrl);
  const record = `const __calls = (window.__readme = []);
const __record = (fn, args) => __calls.push({ fn, args: JSON.parse(JSON.stringify(args)) });`;
  await page.addScriptTag({ type: 'module', content: `${record}${HARNESS}// --- README block ---\n${code}` });
  return {
    where: 'chromium',
    page,
    calls: () => page.evaluate(() => (window as unknown as { __readme?: Call[] }).__readme ?? []),
    failure: () => (errors.length === 0 ? undefined : `page error: ${errors.join('; ')}`),
    stop: () => context.close(),
  };
}

/** Every string a run's calls printed, each call's arguments joined by spaces as `console.log` would. */
export function printed(calls: readonly Call[], fn = 'console.log'): string[] {
  return calls.filter((c) => c.fn === fn).map((c) => c.args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a))).join(' '));
}
