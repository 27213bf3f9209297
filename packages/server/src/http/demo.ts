/**
 * The demo page at `/`: one channel, a form, and the transport in use.
 * @module
 */
import { readFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';

let page: Buffer | undefined;

/** Serves the demo page (read once from the package's `public/`). */
export function demoPage(res: ServerResponse): void {
  page ??= readFileSync(new URL('../../public/index.html', import.meta.url));
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': page.length, 'cache-control': 'no-cache' });
  res.end(page);
}
