/**
 * Authorization hooks for host code, asked after the token's grants (or the authenticator's own
 * checks) allowed a subscribe or a client publish: `subscribe(identity, channel)` and
 * `publish(identity, channel, data)`, each optional, each may be async. False refuses with
 * `forbidden`; a thrown `TidingsError` refuses with its code; anything else thrown is `unavailable`
 * (the client retries), never a silent allow.
 *
 * Sources: `GatewayParts.authorize` (host code); `auth.hook` / `--auth-hook`, a module path whose
 * exports (or default export) are the hooks; or `auth.proxy.url`, an HTTP callout for backends not
 * written in Node: `POST url` with `{ "action": "subscribe" | "publish", "user", "anonymous", "channel",
 * "data"? }` (data as JSON text), answered 2xx to allow, 403 to refuse (an optional
 * `{ "reason" }`), anything else (a redirect too, which is not followed) or no answer within
 * `timeout` ms (default 2000) is `unavailable`.
 * @module
 */
import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';
import { TidingsError, type Channel } from '@tidings/protocol';
import type { Identity } from './auth.js';

export interface AuthorizeHooks {
  readonly subscribe?: (identity: Identity, channel: Channel) => boolean | Promise<boolean>;
  /** `data` is the publication's JSON text. */
  readonly publish?: (identity: Identity, channel: Channel, data: string) => boolean | Promise<boolean>;
}

/** The hooks a gateway asks (set once the module is loaded). */
export interface HooksHolder {
  hooks: AuthorizeHooks | undefined;
}

/** Asks a hook; false is `forbidden`, a bug or an outage in the hook is `unavailable`. */
export async function ask(decide: () => boolean | Promise<boolean>, what: string): Promise<void> {
  let allowed: boolean;
  try {
    allowed = await decide();
  } catch (err) {
    if (err instanceof TidingsError) throw err;
    throw new TidingsError('unavailable', `the authorization hook failed for ${what}; try again`);
  }
  if (allowed !== true) throw new TidingsError('forbidden', `not allowed: ${what}`);
}

/** Loads hooks from a module (`export function subscribe(...)`, or a default export with them). */
export async function loadHooks(path: string): Promise<AuthorizeHooks> {
  const mod = (await import(pathToFileURL(resolve(path)).href)) as AuthorizeHooks & { default?: AuthorizeHooks };
  const hooks = mod.default ?? mod;
  if (typeof hooks.subscribe !== 'function' && typeof hooks.publish !== 'function') {
    throw new TidingsError('bad_request', `the authorization module ${path} exports neither subscribe nor publish`);
  }
  return {
    ...(typeof hooks.subscribe === 'function' ? { subscribe: hooks.subscribe.bind(hooks) } : {}),
    ...(typeof hooks.publish === 'function' ? { publish: hooks.publish.bind(hooks) } : {}),
  };
}

/** Hooks that ask an HTTP endpoint. */
export function proxyHooks(url: string, timeout = 2000): AuthorizeHooks {
  const call = async (body: Record<string, unknown>): Promise<boolean> => {
    let res: Response;
    try {
      // A redirect is not an answer (a login page's 200 would allow): it is `unavailable`, as any other.
      res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), redirect: 'manual', signal: AbortSignal.timeout(timeout) });
    } catch (err) {
      throw new TidingsError('unavailable', `the authorization service did not answer: ${(err as Error).message}`);
    }
    const text = await res.text().catch(() => '');
    if (res.ok) return true;
    if (res.status === 403) {
      let reason: unknown;
      try {
        reason = (JSON.parse(text) as { reason?: unknown }).reason;
      } catch {
        reason = undefined;
      }
      throw new TidingsError('forbidden', typeof reason === 'string' ? reason.slice(0, 200) : `not allowed: ${String(body.action)} ${String(body.channel)}`);
    }
    throw new TidingsError('unavailable', `the authorization service answered ${res.status}`);
  };
  return {
    subscribe: (identity, channel) => call({ action: 'subscribe', user: identity.user, anonymous: identity.anonymous, channel }),
    publish: (identity, channel, data) => call({ action: 'publish', user: identity.user, anonymous: identity.anonymous, channel, data }),
  };
}

/**
 * Both sets of hooks must allow. A set without a hook for the action allows it; a hook allows only by
 * answering `true`, as when it is asked alone (an `undefined` it returns refuses).
 */
export function bothHooks(a: AuthorizeHooks | undefined, b: AuthorizeHooks | undefined): AuthorizeHooks | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return {
    subscribe: async (identity, channel) =>
      (a.subscribe === undefined || (await a.subscribe(identity, channel)) === true) && (b.subscribe === undefined || (await b.subscribe(identity, channel)) === true),
    publish: async (identity, channel, data) =>
      (a.publish === undefined || (await a.publish(identity, channel, data)) === true) && (b.publish === undefined || (await b.publish(identity, channel, data)) === true),
  };
}
