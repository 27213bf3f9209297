/**
 * Files of the package's `public/` directory: the demo page at `/` and the browser bundle of the
 * client SDK (`/tidings-client.js`, built by `scripts/bundle-client.mjs`), which the demo page and
 * the admin dashboard load. Each is read once and kept.
 * @module
 */
import { readFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';

const cache = new Map<string, Buffer>();
const TYPES: Record<string, string> = { html: 'text/html; charset=utf-8', js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8' };

/** Serves `public/<name>` (a fixed name chosen by the gateway, never from the request), or 404 when the package lacks it. */
export function publicFile(res: ServerResponse, name: string): void {
  let body = cache.get(name);
  if (body === undefined) {
    try {
      body = readFileSync(new URL(`../../public/${name}`, import.meta.url));
    } catch {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end(`${name} is not built: run npm run build\n`);
      return;
    }
    cache.set(name, body);
  }
  const type = TYPES[name.slice(name.lastIndexOf('.') + 1)] ?? 'application/octet-stream';
  res.writeHead(200, { 'content-type': type, 'content-length': body.length, 'cache-control': 'no-cache', 'x-content-type-options': 'nosniff' });
  res.end(body);
}

/** Serves the demo page. */
export function demoPage(res: ServerResponse): void {
  publicFile(res, 'index.html');
}
