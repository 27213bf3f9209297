/**
 * A subclass of `String` anywhere in the process (ioredis has one) turns `String.prototype` into a
 * dictionary, and loads on strings never make it fast again: every string method call in the
 * request path becomes a generic lookup. A listening gateway has it fast. V8 tells it only to a
 * process started with `--allow-natives-syntax`, so the check runs in one.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const SERVER = new URL('../../packages/server/dist/index.js', import.meta.url).href;

/** Runs `body` (an ES module) in a Node started with `--allow-natives-syntax`; resolves with what it printed as JSON. */
async function natives(body: string): Promise<Record<string, boolean>> {
  const { stdout } = await run(process.execPath, ['--allow-natives-syntax', '--input-type=module', '-e', body], {
    cwd: fileURLToPath(new URL('../..', import.meta.url)),
    timeout: 30_000,
  });
  return JSON.parse(stdout) as Record<string, boolean>;
}

describe('String.prototype stays fast', () => {
  it('is a dictionary after a subclass of String, and fast again once the gateway listens', async () => {
    const seen = await natives(`
      const fast = () => %HasFastProperties(String.prototype);
      const { createGateway } = await import(${JSON.stringify(SERVER)});
      class Verbatim extends String {}
      const afterSubclass = fast();
      const gateway = createGateway({ port: 0, host: '127.0.0.1', logLevel: 'silent' });
      await gateway.listen();
      const listening = fast();
      await gateway.close();
      console.log(JSON.stringify({ afterSubclass, listening, subclassWorks: new Verbatim('x') instanceof String }));
    `);
    // The first checks that the second can fail: the subclass made the prototype a dictionary.
    expect(seen).toEqual({ afterSubclass: false, listening: true, subclassWorks: true });
  });

  it('restoreFastStrings makes it fast, and strings and their subclasses behave as before', async () => {
    const seen = await natives(`
      const { restoreFastStrings } = await import(${JSON.stringify(new URL('../../packages/server/dist/fast-strings.js', import.meta.url).href)});
      class Verbatim extends String { constructor(format, value) { super(value); this.format = format; } }
      const before = %HasFastProperties(String.prototype);
      restoreFastStrings();
      const after = %HasFastProperties(String.prototype);
      const v = new Verbatim('txt', 'hello');
      console.log(JSON.stringify({ before, after, sliced: 'abcdef'.slice(1, 3) === 'bc', subclass: v.toUpperCase() === 'HELLO' && v.format === 'txt' }));
    `);
    expect(seen).toEqual({ before: false, after: true, sliced: true, subclass: true });
  });
});
