/**
 * The dashboard's files: the page (`public/admin.html`) and uPlot (the `uplot` package, MIT) served
 * from the installed package, never from a CDN. Each is read once and kept.
 * @module
 */
import { readFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { publicFile } from '../http/demo.js';

/** The page may load only what this gateway serves, and may not be framed. */
const PAGE_POLICY = "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/** The dashboard page (a shell: its data needs a login). */
export function adminPage(res: ServerResponse): void {
  res.setHeader('content-security-policy', PAGE_POLICY);
  res.setHeader('x-frame-options', 'DENY');
  res.setHeader('referrer-policy', 'no-referrer');
  publicFile(res, 'admin.html');
}

const UPLOT = {
  js: { file: 'uplot/dist/uPlot.iife.min.js', type: 'text/javascript; charset=utf-8' },
  css: { file: 'uplot/dist/uPlot.min.css', type: 'text/css; charset=utf-8' },
} as const;

const cache = new Map<keyof typeof UPLOT, Buffer>();

/** Serves uPlot's script or style sheet from the installed package, or 404 when it is missing. */
export function uplotFile(res: ServerResponse, which: keyof typeof UPLOT): void {
  const { file, type } = UPLOT[which];
  let body = cache.get(which);
  if (body === undefined) {
    try {
      body = readFileSync(createRequire(import.meta.url).resolve(file));
    } catch {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('uplot is not installed\n');
      return;
    }
    cache.set(which, body);
  }
  res.writeHead(200, { 'content-type': type, 'content-length': body.length, 'cache-control': 'public, max-age=3600', 'x-content-type-options': 'nosniff' });
  res.end(body);
}
