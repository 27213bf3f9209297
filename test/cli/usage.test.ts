/**
 * The command line's manners: `--help` for every command (each option with its description, default
 * and kebab-case name), unknown flags, stray arguments and mistyped commands refused with a "did you
 * mean", `subscribe` reporting its connection state on stderr with the URL, `publish` naming the URL it
 * cannot reach, and `check-config` validating a file without starting.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { OPTION_HELP } from '../../packages/server/src/cli-args.js';
import { ENV_VARS } from '../../packages/server/src/options.js';

const CLI = fileURLToPath(new URL('../../packages/server/dist/cli.js', import.meta.url));

/** Runs the CLI to its end (or until stderr matches `until`, or `killAfter` ms), with its exit code and output. */
function cli(args: string[], killAfter?: number, until?: RegExp): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, TIDINGS_API_KEY: '', TIDINGS_URL: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      if (until?.test(err) === true) child.kill('SIGKILL');
    });
    const timer = killAfter === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), killAfter);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
}
const kebab = (name: string): string => name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

describe('tidings --help', () => {
  it('lists every serve option with its description and default', async () => {
    const { code, out } = await cli(['serve', '--help']);
    expect(code).toBe(0);
    for (const [name, description] of Object.entries(OPTION_HELP)) {
      expect(out).toContain(`--${kebab(name)}`);
      expect(out).toContain(description);
    }
    expect(out).toMatch(/--port <value>\s+port to listen on .*\(default: 8080\)/);
    expect(out).toMatch(/--demo\s+serve the demo page/);
  });

  it.each(['publish', 'subscribe', 'check-config'])('%s --help says how to use it', async (command) => {
    const { code, out } = await cli([command, '-h']);
    expect(code).toBe(0);
    expect(out).toContain(`Usage: tidings ${command}`);
  });

  it('prints every command without one', async () => {
    const { code, out } = await cli([]);
    expect(code).toBe(0);
    for (const command of ['serve', 'publish', 'subscribe', 'check-config']) expect(out).toContain(`tidings ${command}`);
    // Every variable the configuration reads is named.
    const environment = /^Environment: (.*)\.$/m.exec(out)?.[1]?.split(', ') ?? [];
    expect(environment).toEqual(expect.arrayContaining(Object.keys(ENV_VARS)));
  });
});

describe('mistakes', () => {
  it('refuses an unknown flag, suggesting the close one', async () => {
    const { code, err } = await cli(['serve', '--prot', '3000']);
    expect(code).toBe(2);
    expect(err).toContain('unknown option --prot; did you mean --port?');
    expect((await cli(['publish', 'a', '1', '--idempotency', 'k'])).err).toContain('did you mean --idempotency-key?');
    // Names every object has are no options either.
    for (const flag of ['--to-string', '--constructor', '--__proto__']) {
      const refused = await cli(['serve', flag, 'x']);
      expect(refused.code, flag).toBe(2);
      expect(refused.err).toContain(`unknown option ${flag}`);
    }
  });

  it('refuses a stray argument (a positional port suggests --port)', async () => {
    const { code, err } = await cli(['serve', '3000']);
    expect(code).toBe(2);
    expect(err).toContain("unexpected argument '3000'; did you mean --port 3000?");
  });

  it('refuses a mistyped command, suggesting the close one', async () => {
    const { code, err } = await cli(['subscrib', 'news']);
    expect(code).toBe(2);
    expect(err).toContain("did you mean 'subscribe'?");
  });
});

describe('talking about the network', () => {
  it('subscribe reports connecting and retrying on stderr, naming the URL', { timeout: 30_000 }, async () => {
    // Stopped once it says when it retries (at most 20 s: starting Node on a busy machine takes a while).
    const { err } = await cli(['subscribe', 'news', '--url', 'http://127.0.0.1:1'], 20_000, /retrying in \d+\.\d s/);
    expect(err).toContain('connecting to ws://127.0.0.1:1/ws');
    expect(err).toMatch(/ws:\/\/127\.0\.0\.1:1\/ws: ECONNREFUSED; retrying in \d+\.\d s/);
  });

  it('publish names the URL it cannot reach', async () => {
    const { code, err } = await cli(['publish', 'news', '1', '--url', 'http://127.0.0.1:2', '--api-key', 'k'.repeat(16)]);
    expect(code).toBe(2);
    expect(err).toContain('cannot reach http://127.0.0.1:2/api/publish: ECONNREFUSED');
  });
});

describe('check-config', () => {
  it('says ok for a valid file, names every problem of a bad one, and starts nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tidings-check-'));
    const good = join(dir, 'good.json');
    writeFileSync(good, JSON.stringify({ port: 9000, namespaces: { chat: { clientPublish: true } } }));
    expect(await cli(['check-config', good])).toMatchObject({ code: 0, out: `${good}: ok\n` });
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify({ port: 70000, nope: 1, namespaces: { chat: { historySize: -1 } } }));
    const { code, err } = await cli(['check-config', bad]);
    expect(code).toBe(2);
    expect(err).toContain('port must be an integer');
    expect(err).toContain('nope is not an option');
    expect(err).toContain('namespaces.chat.historySize');
  });
});
