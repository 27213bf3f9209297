/**
 * RPC handlers from a module (`tidings serve --rpc-module ./handlers.mjs`): its default export, or
 * the module itself, maps method names to functions `(data, identity) => result`, the same shape as
 * `createGateway(options, { rpc })`.
 * @module
 */
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { RpcHandlers } from './commands.js';

/** Loads the handlers; throws naming the module when it exports no function. */
export async function loadRpcModule(path: string): Promise<RpcHandlers> {
  const mod = (await import(pathToFileURL(resolve(path)).href)) as Record<string, unknown> & { default?: unknown };
  const source = typeof mod.default === 'object' && mod.default !== null ? (mod.default as Record<string, unknown>) : mod;
  const handlers: Record<string, RpcHandlers[string]> = {};
  for (const [name, fn] of Object.entries(source)) {
    if (name !== 'default' && typeof fn === 'function') handlers[name] = fn.bind(source) as RpcHandlers[string];
  }
  if (Object.keys(handlers).length === 0) throw new Error(`the RPC module ${path} exports no handler functions`);
  return handlers;
}
