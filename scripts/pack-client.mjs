#!/usr/bin/env node
// Makes the @tidings/client tarball self-contained: @tidings/protocol is not published, so `inline`
// (the client's prepack) copies the protocol's built dist into the client's dist/protocol/ and points
// the client's imports (.js and .d.ts) there; `restore` (its postpack) undoes that, so the workspace
// goes on sharing one @tidings/protocol (one TidingsError class) between client and server code.
// Both are idempotent: a pack that failed half-way is repaired by the next one.
import { cpSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const SPECIFIER = '@tidings/protocol';
const root = fileURLToPath(new URL('..', import.meta.url));
const dist = join(root, 'packages/client/dist');
const protocolDist = join(root, 'packages/protocol/dist');
const inlined = join(dist, 'protocol');

/** The client's own .js and .d.ts files (not the inlined protocol). */
function clientFiles(dir = dist) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return path === inlined ? [] : clientFiles(path);
    return /\.(js|d\.ts)$/.test(entry.name) ? [path] : [];
  });
}

/** The specifier of the inlined protocol as seen from `file`, e.g. `../protocol/index.js`. */
function relativeSpecifier(file) {
  const rel = relative(dirname(file), join(inlined, 'index.js')).split(sep).join('/');
  return rel.startsWith('.') ? rel : `./${rel}`;
}

/** Replaces the quoted module specifier `from` with `to` (as in `from '...'` and `import("...")`). */
function rewrite(file, from, to) {
  const text = readFileSync(file, 'utf8');
  const escaped = from.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  const next = text.replace(new RegExp(`(['"])${escaped}\\1`, 'g'), (_, quote) => `${quote}${to}${quote}`);
  if (next !== text) writeFileSync(file, next);
}

function inline() {
  rmSync(inlined, { recursive: true, force: true });
  cpSync(protocolDist, inlined, { recursive: true });
  for (const file of clientFiles()) rewrite(file, SPECIFIER, relativeSpecifier(file));
  const left = clientFiles().filter((file) => readFileSync(file, 'utf8').includes(SPECIFIER));
  if (left.length > 0) throw new Error(`pack-client: ${SPECIFIER} is still named in ${left.map((f) => relative(root, f)).join(', ')}`);
}

function restore() {
  for (const file of clientFiles()) rewrite(file, relativeSpecifier(file), SPECIFIER);
  rmSync(inlined, { recursive: true, force: true });
}

const command = process.argv[2];
if (command === 'inline') inline();
else if (command === 'restore') restore();
else {
  process.stderr.write('usage: node scripts/pack-client.mjs inline|restore\n');
  process.exit(2);
}
