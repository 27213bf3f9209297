/**
 * A README that runs: every code block of README.md a user would run is run here, so the README
 * cannot drift from the code.
 *
 * How a block is covered:
 * - Each entry of `CHECKS` claims exactly one block, by language and a pattern of its text, runs it
 *   and asserts on what it printed or did. A check that claims no block, or a block claimed twice,
 *   fails.
 * - A block the test must not run carries an HTML comment on the line directly above its fence:
 *   `<!-- readme: not run (why) -->`. The reason is required. The set-up commands at the top are the
 *   only such blocks; what they rely on (the `start` script, `serve --demo`) is checked instead.
 * - Any other block fails the first test: a new block needs a check here or the annotation.
 *
 * How blocks run:
 * - `sh`: each command with bash, from a directory inside the repository (so `npx tidings` is the
 *   workspace's bin; npm is kept offline) with `node_modules/.bin` on PATH and `TIDINGS_URL`,
 *   `TIDINGS_API_KEY`, `PORT`, `HOST` set for the gateway at hand. Where a block spells out
 *   `http://localhost:8080`, that string is replaced by the test gateway's URL; each check lists its
 *   replacements and each must apply. Long-running commands (`curl -N`, `tidings serve`,
 *   `tidings subscribe`) run in the background and are stopped by process group once asserted on.
 * - `js`: in Node as an ES module file inside the repository (so `@tidings/*` resolve), and, unless it
 *   is Node code, in headless Chromium as a module script of a page served by the test gateway,
 *   with `@tidings/client` replaced by the bundle the gateway serves at `/tidings-client.js`. A
 *   prelude defines the reader's own functions (`render`, `refetch`, `fetchToken`) and records them
 *   and `console.log`; browser code run in Node gets `EventSource` and `WebSocket` as a page has them.
 * - `json`: the configuration example must pass `tidings check-config`; the test gateway and the
 *   gateways the README starts use it (`tidings.json`), so its namespaces exist.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TidingsError, type Client } from '@tidings/client';
import { cleanupAfterEach, freePort, launchChromium, postOnce, startGateway, testClient, TEST_API_KEY, type TestGateway } from '@tidings/testing';
import { parseBlocks, shapeOf, shellCommands, shownOutputs, substitute, type Block } from './blocks.js';
import { exitedEarly, printed, ROOT, runInNode, runInPage, startProcess, startShell, waitFor, type Call, type JsRun, type Proc } from './runners.js';

const CLI = join(ROOT, 'packages/server/dist/cli.js');
const WAIT = 10_000;
/** Where the README's own default address appears in a block. */
const README_URL = 'http://localhost:8080';

interface Check {
  readonly name: string;
  readonly lang: string;
  readonly match: RegExp;
  readonly run: (block: Block) => Promise<void>;
}

const blocks = parseBlocks(readFileSync(join(ROOT, 'README.md'), 'utf8'));
const release = cleanupAfterEach();
let dir = '';
let gw: TestGateway;
let browser: Browser;
let runs = 0;

/** Environment for README shell commands and Node programs: the repository's bins, npm offline, a known key. */
function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    ...process.env,
    PATH: `${join(ROOT, 'node_modules/.bin')}:${process.env.PATH ?? ''}`,
    npm_config_offline: 'true',
    npm_config_update_notifier: 'false',
    HOST: '127.0.0.1',
    TIDINGS_API_KEY: TEST_API_KEY,
    TIDINGS_LOG_LEVEL: 'warn',
    ...extra,
  };
}

/** Starts a process that is stopped after the test. */
function owned<T extends { stop(): Promise<unknown> }>(x: T): T {
  release.push(() => x.stop());
  return x;
}

/** Runs a shell command to its end; it must exit 0. */
async function foreground(command: string, extra: Record<string, string> = {}): Promise<Proc> {
  const p = owned(startShell(command, dir, env(extra)));
  const timer = setTimeout(() => void p.stop(), WAIT);
  const code = await p.exited;
  clearTimeout(timer);
  expect(code, `'${command}' exited with ${code}\nstdout: ${p.out}\nstderr: ${p.err}`).toBe(0);
  return p;
}

/** Calls `step` every 150 ms (publishing, typically) until `done` holds. */
async function repeatUntil(step: (n: number) => Promise<unknown>, done: () => boolean | Promise<boolean>, what: () => string, dead: () => string | undefined): Promise<void> {
  let n = 0;
  await waitFor(
    async () => {
      if (await done()) return true;
      await step(++n);
      await new Promise((r) => setTimeout(r, 150));
      return done();
    },
    WAIT,
    what,
    dead,
  );
}

/** Waits until a JavaScript run's recorded calls satisfy `check`, calling `step` meanwhile. */
async function callsUntil(run: JsRun, check: (calls: Call[]) => boolean, what: string, step: (n: number) => Promise<unknown> = () => Promise.resolve()): Promise<Call[]> {
  let last: Call[] = [];
  await repeatUntil(
    step,
    async () => check((last = await run.calls())),
    () => `${run.where}: ${what}; ${last.length} calls, the last: ${JSON.stringify(last.slice(-8)).slice(0, 3000)}`,
    () => run.failure(),
  );
  return last;
}

/** Runs browser code in Node and in a Chromium page of the test gateway at once; `check` asserts on each. */
async function inNodeAndChromium(block: Block, replacements: ReadonlyArray<readonly [string, string]>, check: (run: JsRun) => Promise<void>): Promise<void> {
  const code = substitute(block.code, replacements);
  const node = owned(runInNode(code, { dir, name: `block-${block.line}-${++runs}`, env: env(), browserOrigin: gw.url }));
  const page = owned(await runInPage(browser, `${gw.url}/healthz`, code.replaceAll("from '@tidings/client'", "from '/tidings-client.js'")));
  // Side by side: each check waits for what it publishes to reach its own run.
  await Promise.all([check(node).then(() => node.stop()), check(page).then(() => page.stop())]);
}

/** The complete events of an SSE stream as text: name (`message` by default), `id:` and the parsed `data:`. */
function sseEvents(text: string): Array<{ event: string; id: string | undefined; data: unknown }> {
  return text
    .split('\n\n')
    .slice(0, -1)
    .map((chunk) => Object.fromEntries(chunk.split('\n').map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()])) as Record<string, string>)
    .filter((fields) => fields.data !== undefined)
    .map((fields) => ({ event: fields.event ?? 'message', id: fields.id, data: JSON.parse(fields.data as string) as unknown }));
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
/** The first argument of each `console.log` call. */
const logged = (calls: readonly Call[]): unknown[] => calls.filter((c) => c.fn === 'console.log').map((c) => c.args[0]);

function blockOf(name: string): Block {
  const check = CHECKS.find((c) => c.name === name) as Check;
  const block = blocks.find((b) => b.lang === check.lang && check.match.test(b.code));
  if (block === undefined) throw new Error(`README.md has no ${check.lang} block for '${name}' (${check.match})`);
  return block;
}

/** Runs the README's RPC server example (with `tidings.json` and PORT) and returns its URL. */
async function startRpcServer(): Promise<{ run: JsRun; url: string }> {
  const port = await freePort();
  const run = owned(runInNode(blockOf('RPC handlers in your own server').code, { dir, name: `rpc-server-${++runs}`, env: env({ PORT: String(port) }) }));
  const calls = await callsUntil(run, (c) => printed(c).some((l) => l.includes(`127.0.0.1:${port}`)), 'the server says where it listens');
  const url = /(http:\/\/\S+)/.exec(printed(calls).join('\n'))?.[1] as string;
  return { run, url };
}

const CHECKS: readonly Check[] = [
  {
    name: 'publish with curl',
    lang: 'sh',
    match: /\/api\/publish/,
    async run(block) {
      const commands = shellCommands(substitute(block.code, [[README_URL, gw.url]]));
      expect(commands).toHaveLength(1);
      const [shown] = shownOutputs(block.code) as [Record<string, unknown>];
      const first = JSON.parse((await foreground(commands[0] as string)).out) as Record<string, unknown>;
      // The reply looks like the one the README shows, with the README's own values where they are not per run.
      expect(shapeOf(first)).toEqual(shapeOf(shown));
      expect(first).toMatchObject({ channel: shown.channel, duplicate: false });
      // The same idempotency key again: the first position, nothing published.
      const again = JSON.parse((await foreground(commands[0] as string)).out) as Record<string, unknown>;
      expect(again).toEqual({ ...first, duplicate: true });
    },
  },
  {
    name: 'subscribe with curl',
    lang: 'sh',
    match: /\/sse\?/,
    async run(block) {
      const [sse, poll] = shellCommands(substitute(block.code, [[README_URL, gw.url]])).map((c) => owned(startShell(c, dir, env()))) as [Proc, Proc];
      await waitFor(() => sse.out.includes('event: tidings:welcome'), WAIT, () => `no welcome event: ${sse.out}`, () => exitedEarly(sse));
      await repeatUntil(
        (n) => gw.publish('news', { title: 'Hello', n }, { type: 'news.published' }),
        () => poll.code !== undefined && sse.out.includes('event: news.published'),
        () => `sse: ${sse.out}\npoll: ${poll.out}`,
        () => (poll.code !== undefined && poll.code !== 0 ? exitedEarly(poll) : exitedEarly(sse)),
      );
      const events = sseEvents(sse.out);
      expect(events[0]).toMatchObject({ event: 'tidings:welcome', data: { channels: ['news', 'alerts'] } });
      const published = events.find((e) => e.event === 'news.published');
      expect(published?.id).toMatch(/^news=.+,alerts=.+/);
      expect(published?.data).toMatchObject({ channel: 'news', type: 'news.published', position: { seq: expect.any(Number) as number }, data: { title: 'Hello' } });
      // The long poll answered with what was published after it started, and a cursor to pass back.
      expect(poll.code).toBe(0);
      const answer = JSON.parse(poll.out) as { messages: unknown[]; gaps: unknown[]; cursor: string };
      expect(answer).toMatchObject({ gaps: [], cursor: expect.stringMatching(/^news=/) as string });
      expect(answer.messages[0]).toMatchObject({ channel: 'news', type: 'news.published', data: { title: 'Hello' } });
    },
  },
  {
    name: 'EventSource and WebSocket without the SDK',
    lang: 'js',
    match: /new EventSource\(/,
    async run(block) {
      // What the comments of the two logging lines say their objects hold, e.g. `// { channel, position, type, data }`.
      const commented = (start: string): string[] => {
        const line = block.code.split('\n').find((l) => l.startsWith(start)) ?? '';
        return (/\/\/[^{]*\{ ([\w, ]+) \}/.exec(line)?.[1] ?? '').split(', ').sort();
      };
      const typedKeys = commented("es.addEventListener('news.published'");
      const untypedKeys = commented('es.onmessage');
      expect([typedKeys, untypedKeys]).toEqual([
        ['channel', 'data', 'position', 'type'],
        ['channel', 'data', 'position'],
      ]);
      await inNodeAndChromium(block, [['ws://localhost:8080', gw.url.replace(/^http/, 'ws')]], async (run) => {
        const sseMessages = (calls: Call[]): Array<Record<string, unknown>> => logged(calls).filter(isObject).filter((o) => 'channel' in o);
        const calls = await callsUntil(
          run,
          (c) => {
            const m = sseMessages(c);
            return m.some((o) => o.type === 'news.published') && m.some((o) => !('type' in o)) && logged(c).some((o) => isObject(o) && o.type === 'message');
          },
          'typed and untyped publications reach the EventSource, and one reaches the WebSocket',
          // Alternately a typed publication (an SSE event named by its type) and an untyped one (onmessage).
          (n) => gw.publish('news', { title: 'Hello', n }, n % 2 === 1 ? { type: 'news.published' } : {}),
        );
        for (const m of sseMessages(calls)) {
          expect(Object.keys(m).sort()).toEqual(m.type === undefined ? untypedKeys : typedKeys);
          expect(m).toMatchObject({ channel: 'news', data: { title: 'Hello' } });
        }
        // The WebSocket logs every frame: the welcome, the reply to its subscribe, then messages.
        const wsFrames = logged(calls).filter(isObject).filter((o) => !('channel' in o));
        expect(wsFrames[0]).toMatchObject({ type: 'welcome' });
        expect(wsFrames).toContainEqual(expect.objectContaining({ type: 'reply', id: 1, result: expect.objectContaining({ channel: 'news' }) as unknown }));
        expect(wsFrames).toContainEqual(expect.objectContaining({ type: 'message', message: expect.objectContaining({ channel: 'news' }) as unknown }));
      });
    },
  },
  {
    name: 'the SDK in a browser',
    lang: 'js',
    match: /https:\/\/example\.com/,
    async run(block) {
      await inNodeAndChromium(block, [['https://example.com', gw.url]], async (run) => {
        const calls = await callsUntil(
          run,
          (c) => c.some((x) => x.fn === 'render'),
          'a publication is rendered',
          (n) => gw.publish('news', { title: 'Hello', n }),
        );
        // The token provider is asked when the client connects; render gets the message's data.
        expect(calls.findIndex((c) => c.fn === 'fetchToken')).toBeGreaterThanOrEqual(0);
        expect(calls.find((c) => c.fn === 'render')?.args).toEqual([{ title: 'Hello', n: expect.any(Number) as number }]);
      });
    },
  },
  {
    name: 'the SDK in Node',
    lang: 'js',
    match: /from 'ws'/,
    async run(block) {
      // Node code (it imports `ws`): Node only, with no browser globals.
      const run = owned(runInNode(substitute(block.code, [[README_URL, gw.url]]), { dir, name: `block-${block.line}`, env: env() }));
      const calls = await callsUntil(run, (c) => logged(c).length >= 3, 'three messages are printed', (n) => gw.publish('news', { title: 'Hello', n }));
      // `m.position.seq, m.data`: each in order, once, with the data published at that position.
      const lines = calls.filter((c) => c.fn === 'console.log').map((c) => c.args as [number, { n: number }]);
      const [firstSeq, firstData] = lines[0] as [number, { n: number }];
      expect(lines).toEqual(lines.map((_, i) => [firstSeq + i, { title: 'Hello', n: firstData.n + i }]));
    },
  },
  {
    name: 'the SDK: publish, request, route by type, state',
    lang: 'js',
    match: /client\.request\(/,
    async run(block) {
      // Against the README's own RPC server (the `chat` namespace of tidings.json, an `orders.get` handler).
      const server = await startRpcServer();
      await inNodeAndChromium(block, [[README_URL, server.url]], async (run) => {
        const calls = await callsUntil(
          run,
          (c) => printed(c).some((l) => l.startsWith('chat:room1 chat.message')) && logged(c).some((a) => typeof a === 'number'),
          'the request is answered and a chat message is routed by type',
          (n) => postOnce(`${server.url}/api/publish`, JSON.stringify({ channel: 'chat:room1', type: 'chat.message', data: { text: 'Hello', n } })),
        );
        const lines = printed(calls);
        for (const line of lines) expect(line).not.toContain('[object Object]');
        // States print as their status.
        expect(lines).toContainEqual(expect.stringMatching(/^idle -> connecting \(.+\)$/));
        expect(lines).toContainEqual(expect.stringMatching(/^connecting -> connected \(.+\)$/));
        // The publish is acked with its position; the request answered by the handler.
        const answer = calls.find((c) => c.fn === 'console.log' && typeof c.args[0] === 'number');
        expect(answer?.args).toEqual([expect.any(Number), { id: 7, status: 'shipped', user: '' }]);
        expect(calls.find((c) => c.fn === 'console.log' && c.args[0] === 'chat:room1')?.args).toEqual(['chat:room1', 'chat.message', expect.objectContaining({ text: expect.any(String) as string })]);
      });
      expect(server.run.failure()).toBeUndefined();
    },
  },
  {
    name: 'RPC handlers in your own server',
    lang: 'js',
    match: /createGateway\(/,
    async run() {
      const server = await startRpcServer();
      const clients: Client[] = [];
      release.push(() => clients.forEach((c) => c.close()));
      for (const kind of ['websocket', 'sse'] as const) {
        const client = testClient(server.url, kind);
        clients.push(client);
        expect(await client.request('orders.get', { id: 7 })).toEqual({ id: 7, status: 'shipped', user: '' });
        // What the README says of methods with no handler, and of a handler that throws.
        await expect(client.request('orders.list', {})).rejects.toMatchObject({ code: 'unknown_method' });
        const thrown = await client.request('orders.get').catch((err: unknown) => err);
        expect(thrown).toBeInstanceOf(TidingsError);
        expect(thrown).toMatchObject({ code: 'internal' });
      }
      // It shuts down cleanly on SIGTERM.
      const proc = (server.run as JsRun & { proc: Proc }).proc;
      expect(await proc.stop(5000)).toBe(0);
    },
  },
  {
    name: 'the command line',
    lang: 'sh',
    match: /tidings serve/,
    async run(block) {
      // The block's own gateway: PORT for `serve`, TIDINGS_URL for `publish` and `subscribe`; no substitution.
      const port = await freePort();
      const url = `http://127.0.0.1:${port}`;
      const vars = { PORT: String(port), TIDINGS_URL: url };
      const commands = shellCommands(block.code);
      expect(commands.map((c) => /^npx tidings (\S+)/.exec(c)?.[1])).toEqual(['serve', 'subscribe', 'publish', 'check-config']);
      const [serveCmd, subscribeCmd, publishCmd, checkCmd] = commands as [string, string, string, string];

      // Started together, as in three terminals: subscribe retries until serve listens; check-config needs no gateway.
      const serve = owned(startShell(serveCmd, dir, env(vars)));
      const subscribe = owned(startShell(subscribeCmd, dir, env(vars)));
      const checked = foreground(checkCmd, vars);
      await waitFor(() => serve.out.includes(`listening on ${url}`), WAIT, () => `serve: ${serve.out} ${serve.err}`, () => exitedEarly(serve));
      const channels = subscribeCmd.replace(/#.*/, '').trim().split(/\s+/).slice(3);
      expect(channels).toEqual(['news', 'chat:room1']);
      await waitFor(
        async () => {
          if (!subscribe.err.includes('live:')) return false;
          const health = (await (await fetch(`${url}/healthz`)).json()) as { channels: number };
          return health.channels >= channels.length;
        },
        // Its reconnect backoff may have grown while serve was starting.
        2 * WAIT,
        () => `subscribe is not live: ${subscribe.err}`,
        () => exitedEarly(subscribe),
      );

      const [shown] = shownOutputs(block.code) as [Record<string, unknown>];
      const published = JSON.parse((await foreground(publishCmd, vars)).out) as Record<string, unknown>;
      expect(shapeOf(published)).toEqual(shapeOf(shown));
      expect(published).toMatchObject({ channel: shown.channel, duplicate: false });
      await waitFor(() => subscribe.out.includes('\n'), WAIT, () => `subscribe printed nothing: ${subscribe.out} ${subscribe.err}`, () => exitedEarly(subscribe));
      expect(JSON.parse(subscribe.out.split('\n')[0] as string)).toEqual({ ...published, duplicate: undefined, type: 'chat.message', data: { text: 'Hi' } });

      expect((await checked).out.trim()).toBe('tidings.json: ok');

      await subscribe.stop();
      await serve.stop();
      expect(serve.out).toContain('SIGTERM: draining connections');
    },
  },
  {
    name: 'the configuration example',
    lang: 'json',
    match: /"namespaces"/,
    async run(block) {
      const file = join(dir, 'config-example.json');
      writeFileSync(file, block.code);
      const r = owned(startProcess(process.execPath, [CLI, 'check-config', file], { cwd: dir, env: env() }));
      expect(await r.exited, r.err).toBe(0);
      expect(r.out.trim()).toBe(`${file}: ok`);
    },
  },
];

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error('packages/server/dist/cli.js is missing: build with `npx tsc -b` first');
  const bundle = spawnSync(process.execPath, [join(ROOT, 'scripts/bundle-client.mjs')], { cwd: ROOT, encoding: 'utf8' });
  if (bundle.status !== 0) throw new Error(`bundling the client failed: ${bundle.stderr}`);
  mkdirSync(join(ROOT, '.tmp'), { recursive: true });
  dir = mkdtempSync(join(ROOT, '.tmp', 'readme-'));
  // The configuration example is `tidings.json` for every README command and program.
  const config = blockOf('the configuration example').code;
  writeFileSync(join(dir, 'tidings.json'), config);
  // The test gateway: the README's configuration, on a free port, with the demo routes for the page and the bundle.
  gw = await startGateway({ ...(JSON.parse(config) as object), port: 0, demo: true });
  browser = await launchChromium();
}, 30_000);

afterAll(async () => {
  await browser?.close();
  await gw?.close();
  if (dir !== '') rmSync(dir, { recursive: true, force: true });
});

describe('README.md', () => {
  it('has every code block either run by a check or annotated as not run, with a reason', () => {
    const problems: string[] = [];
    for (const block of blocks) {
      const claimed = CHECKS.filter((c) => c.lang === block.lang && c.match.test(block.code));
      if (block.annotation !== undefined) {
        if (!/^not run \(.+\)$/.test(block.annotation)) problems.push(`README.md:${block.line}: the annotation must read 'not run (why)', not '${block.annotation}'`);
        if (claimed.length > 0) problems.push(`README.md:${block.line}: annotated as not run but claimed by ${claimed.map((c) => c.name).join(', ')}`);
      } else if (claimed.length !== 1) {
        problems.push(
          claimed.length === 0
            ? `README.md:${block.line}: a ${block.lang || 'plain'} block no check runs: add one to test/readme/readme.test.ts, or annotate it <!-- readme: not run (why) -->`
            : `README.md:${block.line}: claimed by several checks: ${claimed.map((c) => c.name).join(', ')}`,
        );
      }
    }
    for (const check of CHECKS) {
      const n = blocks.filter((b) => b.lang === check.lang && check.match.test(b.code)).length;
      if (n !== 1) problems.push(`check '${check.name}' claims ${n} blocks`);
    }
    expect(problems).toEqual([]);
  });

  it('set-up: `npm start` runs the built CLI with --demo, which serves the demo page on PORT', async () => {
    const setup = (command: string): Block | undefined => blocks.find((b) => b.lang === 'sh' && b.code.includes(command));
    expect(setup('npm ci && npm start')?.annotation).toMatch(/^not run/);
    expect(setup('bash scripts/setup.sh && npm test')?.annotation).toMatch(/^not run/);
    const scripts = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
    expect(scripts.start).toMatch(/&& node packages\/server\/dist\/cli\.js serve --demo$/);
    expect(scripts.test).toBeDefined();
    expect(existsSync(join(ROOT, 'scripts/setup.sh'))).toBe(true);
    const port = await freePort();
    const serve = owned(startProcess(process.execPath, [CLI, 'serve', '--demo'], { cwd: ROOT, env: env({ PORT: String(port) }) }));
    await waitFor(() => serve.out.includes(`Demo: open http://127.0.0.1:${port}/ in two tabs`), WAIT, () => `serve --demo: ${serve.out}`, () => exitedEarly(serve));
    const page = await fetch(`http://127.0.0.1:${port}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toContain('text/html');
    expect(await serve.stop()).toBe(0);
  });

  for (const check of CHECKS) {
    it(`runs ${check.name}`, () => check.run(blockOf(check.name)), 30_000);
  }
});
