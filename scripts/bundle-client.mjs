#!/usr/bin/env node
// Bundles @tidings/client (with @tidings/protocol inlined) into one ES module for browsers, served by
// the gateway at /tidings-client.js for the demo page and the admin dashboard. Skips the work when
// the bundle is newer than every source file, so a second `npm start` does nothing here.
import { readdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('..', import.meta.url));
const out = join(root, 'packages/server/public/tidings-client.js');
const sources = ['packages/client/src', 'packages/protocol/src'].map((dir) => join(root, dir));

const newest = (dir) =>
  Math.max(
    0,
    ...readdirSync(dir, { withFileTypes: true }).map((entry) =>
      entry.isDirectory() ? newest(join(dir, entry.name)) : statSync(join(dir, entry.name)).mtimeMs,
    ),
  );
const mtime = (file) => {
  try {
    return statSync(file).mtimeMs;
  } catch {
    return -1;
  }
};

if (process.argv.includes('--force') || mtime(out) < Math.max(...sources.map(newest))) {
  await build({
    entryPoints: [join(root, 'packages/client/src/index.ts')],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    legalComments: 'none',
    outfile: out,
    logLevel: 'warning',
  });
}
