/**
 * Configuration: defaults, layering (file < environment < flags), and start-up validation that
 * names every problem.
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createGateway, DEFAULTS, loadConfig, resolveOptions } from '@tidings/server';
import { configProblems } from '@tidings/testing';

const dir = mkdtempSync(join(tmpdir(), 'tidings-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const file = (name: string, text: string): string => {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
};
const problemsOf = configProblems;

describe('options', () => {
  it('defaults to port 8080, an in-memory default namespace and sensible intervals', () => {
    const o = resolveOptions();
    expect(o.port).toBe(8080);
    expect(o.namespaces['']).toEqual({ historySize: 100, historyTtl: 300, clientPublish: false, ephemeral: false, presence: false, anonymous: false, backpressure: 'disconnect' });
    expect(o.pingInterval).toBe(25_000);
    expect(o.pollTimeout).toBe(25_000);
    expect(Object.isFrozen(o)).toBe(true);
    expect(Object.isFrozen(DEFAULTS)).toBe(true);
  });

  it('merges namespace options over the defaults and zeroes history for ephemeral ones', () => {
    const o = resolveOptions({ namespaces: { chat: { clientPublish: true }, cursors: { ephemeral: true, historySize: 50 } } });
    expect(o.namespaces.chat).toEqual({ historySize: 100, historyTtl: 300, clientPublish: true, ephemeral: false, presence: false, anonymous: false, backpressure: 'disconnect' });
    expect(o.namespaces.cursors).toMatchObject({ ephemeral: true, historySize: 0, backpressure: 'drop' });
    expect(o.namespaces.demo).toBeUndefined();
    expect(resolveOptions({ demo: true }).namespaces.demo?.clientPublish).toBe(true);
  });

  it('names every problem at once', () => {
    const problems = problemsOf(() =>
      resolveOptions({
        port: 70000,
        pingInterval: -1,
        logLevel: 'loud',
        apiKey: 'short',
        namespaces: { 'bad name': {}, chat: { historySize: -5, clientPublish: 'yes' as unknown as boolean, colour: 1 } as never },
        nope: 1,
      } as never),
    );
    expect(problems).toEqual(
      expect.arrayContaining([
        'nope is not an option',
        'port must be an integer from 0 to 65535 (got 70000)',
        'pingInterval must be an integer from 100 to 3600000 (got -1)',
        'apiKey must be a string of at least 16 visible ASCII characters, with no spaces (it is sent as Authorization: Bearer <secret>)',
        'logLevel must be one of fatal, error, warn, info, debug, trace, silent',
        "namespace name 'bad name' must be up to 32 letters, digits, _ or - (not starting with _)",
        'namespaces.chat.colour is not an option',
        'namespaces.chat.historySize must be an integer from 0 to 1000000 (got -5)',
        'namespaces.chat.clientPublish must be true or false',
      ]),
    );
    expect(problems).toHaveLength(9);
  });

  it('refuses a secret that cannot be sent as a bearer token, and options named after what every object has', () => {
    const spaced = 'a key with spaces in it';
    expect(problemsOf(() => resolveOptions({ apiKey: spaced, adminToken: `${spaced}!` }))).toEqual([
      'apiKey must be a string of at least 16 visible ASCII characters, with no spaces (it is sent as Authorization: Bearer <secret>)',
      'adminToken must be a string of at least 16 visible ASCII characters, with no spaces (it is sent as Authorization: Bearer <secret>)',
    ]);
    const inherited = JSON.parse('{"toString":1,"__proto__":{},"namespaces":{"chat":{"valueOf":1}}}') as never;
    expect(problemsOf(() => resolveOptions(inherited))).toEqual(['toString is not an option', '__proto__ is not an option', 'namespaces.chat.valueOf is not an option']);
    expect(problemsOf(() => loadConfig({ flags: { hasOwnProperty: 'x' } }))).toEqual(['--hasOwnProperty is not an option']);
  });

  it('checks a JWT public key at start, and runs every broker URL it accepts', async () => {
    const dsa = generateKeyPairSync('dsa', { modulusLength: 2048, divisorLength: 256 }).publicKey.export({ type: 'spki', format: 'pem' }) as string;
    expect(problemsOf(() => resolveOptions({ auth: { jwt: { publicKey: 'not a key' } } }))).toEqual([
      'auth.jwt.publicKey is not a PEM public key (BEGIN PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE)',
    ]);
    expect(problemsOf(() => resolveOptions({ auth: { jwt: { publicKey: dsa } } }))).toEqual(['auth.jwt.publicKey: unsupported public key type dsa']);
    const ed = generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }) as string;
    expect(() => resolveOptions({ auth: { jwt: { publicKey: ed } } })).not.toThrow();
    // A tls:// URL (NATS over TLS) passes the check, so it must make a broker: refused at connect
    // (nothing listens there), not as unsupported.
    const gw = createGateway(resolveOptions({ broker: 'tls://127.0.0.1:1', apiKey: 'a-key-of-twenty-chars' }));
    await expect(gw.listen()).rejects.not.toThrow(/not supported/);
  });

  it('layers file, then environment, then flags', () => {
    const path = file('layers.json', JSON.stringify({ port: 1000, pollTimeout: 5000, namespaces: { chat: { clientPublish: true } } }));
    const o = loadConfig({ file: path, env: { PORT: '2000', TIDINGS_API_KEY: 'k'.repeat(20) }, flags: { port: '3000', sseRetry: '500' } });
    expect(o.port).toBe(3000);
    expect(o.pollTimeout).toBe(5000);
    expect(o.sseRetry).toBe(500);
    expect(o.apiKey).toBe('k'.repeat(20));
    expect(o.namespaces.chat?.clientPublish).toBe(true);
  });

  it('explains a missing file, invalid JSON, unknown flags and non-numeric values', () => {
    expect(problemsOf(() => loadConfig({ file: join(dir, 'missing.json') }))[0]).toMatch(/^cannot read config file .*missing\.json/);
    expect(problemsOf(() => loadConfig({ file: file('bad.json', '{ port: 1') }))[0]).toMatch(/is not valid JSON/);
    expect(problemsOf(() => loadConfig({ file: file('arr.json', '[]') }))[0]).toMatch(/top level must be an object/);
    expect(problemsOf(() => loadConfig({ flags: { colour: 'red' } }))).toEqual(['--colour is not an option']);
    expect(problemsOf(() => loadConfig({ env: { PORT: 'eighty' } }))).toEqual(['port must be an integer from 0 to 65535 (got "eighty")']);
  });

  it('takes the connect rate per address as a flag, 0 turning it off, and refuses what is no such rate', () => {
    expect(DEFAULTS.maxConnectRatePerIp).toBe(200);
    expect(loadConfig({ flags: { maxConnectRatePerIp: '0' } }).maxConnectRatePerIp).toBe(0);
    for (const bad of [-1, 1.5, 10_000_001, '50' as unknown as number]) {
      expect(problemsOf(() => resolveOptions({ maxConnectRatePerIp: bad }))).toEqual([`maxConnectRatePerIp must be an integer from 0 to 10000000 (got ${JSON.stringify(bad)})`]);
    }
    expect(problemsOf(() => loadConfig({ flags: { maxConnectRatePerIp: 'many' } }))).toEqual(['maxConnectRatePerIp must be an integer from 0 to 10000000 (got "many")']);
  });

  it('takes the bytes poll groups may hold as a flag, 0 keeping none, and refuses what is no such size', () => {
    expect(DEFAULTS.maxPollGroupBytes).toBe(64 * 1024 * 1024);
    expect(loadConfig({ flags: { maxPollGroupBytes: '0' } }).maxPollGroupBytes).toBe(0);
    for (const bad of [-1, 0.5, 2 ** 40 + 1]) {
      expect(problemsOf(() => resolveOptions({ maxPollGroupBytes: bad }))).toEqual([`maxPollGroupBytes must be an integer from 0 to ${2 ** 40} (got ${JSON.stringify(bad)})`]);
    }
  });
});
