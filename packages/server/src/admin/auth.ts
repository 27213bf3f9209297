/**
 * Who may see `/admin`'s data: whoever holds the API key or the admin token. `POST /admin/login`
 * checks the secret once and answers with a cookie (HttpOnly, SameSite=Strict, Path=/admin) holding
 * an expiry signed with HMAC-SHA256 keyed by that secret. Every node of a cluster holds the same
 * secrets, so any node accepts a cookie another node issued, and no node keeps a session store. The
 * secret itself never travels in a URL (logs) or in the cookie. Scripts may send
 * `Authorization: Bearer <secret>` instead. Failed logins, and wrong Bearer secrets, are rate limited
 * per client address, checked right before each comparison (so requests sent at once are limited too).
 *
 * A cookie cannot be revoked before it expires, except by changing the secret it was signed with.
 * @module
 */
import { createHmac } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { TidingsError } from '@tidings/protocol';
import { clientAddress } from '../admission.js';
import { KeyedBuckets, RetryLater } from '../limits.js';
import { readJson } from '../http/respond.js';
import { sameText } from '../http/api-key.js';

/** The cookie's name; it is only sent to paths under `/admin`. */
export const ADMIN_COOKIE = 'tidings_admin';

/** How long a login lasts, in ms (8 hours). */
export const ADMIN_SESSION_MS = 8 * 3600 * 1000;

/** Which secret a login used: the API key (`k`) or the admin token (`t`). */
type Kind = 'k' | 't';

export interface AdminAuthOptions {
  readonly apiKey: string;
  readonly adminToken: string | undefined;
  /** Take the client's address (for the failed-login rate) and scheme from the proxy's headers. */
  readonly trustProxy: boolean;
  /** Ms since the epoch (tests inject a clock). */
  readonly now?: () => number;
  /** Told of every login, accepted or refused, with the client's address (an audit trail). */
  readonly audit?: (accepted: boolean, address: string) => void;
}

export class AdminAuth {
  /** Failed logins per address: 10 at once, then one per second. */
  readonly #failures = new KeyedBuckets(1, 10, 10_000);
  readonly #now: () => number;

  constructor(private readonly opts: AdminAuthOptions) {
    this.#now = opts.now ?? Date.now;
  }

  /** The kind of secret `key` is, or undefined; every configured secret is compared. */
  #kindOf(key: string): Kind | undefined {
    const { apiKey, adminToken } = this.opts;
    const isKey = sameText(key, apiKey);
    const isToken = adminToken !== undefined && sameText(key, adminToken);
    return isKey ? 'k' : isToken ? 't' : undefined;
  }

  #secret(kind: Kind): string | undefined {
    return kind === 'k' ? this.opts.apiKey : this.opts.adminToken;
  }

  #mac(kind: Kind, expires: string): string | undefined {
    const secret = this.#secret(kind);
    return secret === undefined ? undefined : createHmac('sha256', secret).update(`tidings-admin:${kind}.${expires}`).digest('base64url');
  }

  /** A cookie value for a login with a secret of `kind`: `<kind>.<expiry, base 36>.<mac>`. */
  issue(kind: Kind): string {
    const expires = (this.#now() + ADMIN_SESSION_MS).toString(36);
    return `${kind}.${expires}.${this.#mac(kind, expires) ?? ''}`;
  }

  /** True when `value` is a cookie this cluster issued and it has not expired. */
  verify(value: string): boolean {
    const [kind, expires, mac, ...rest] = value.split('.');
    if ((kind !== 'k' && kind !== 't') || expires === undefined || mac === undefined || rest.length > 0) return false;
    const expected = this.#mac(kind, expires);
    if (expected === undefined || !sameText(mac, expected)) return false;
    return parseInt(expires, 36) > this.#now();
  }

  /**
   * Throws `unauthorized` unless the request carries a valid cookie or `Authorization: Bearer <secret>`;
   * a wrong secret counts as a failed login, and past the limit the request is refused before it is compared.
   */
  check(req: IncomingMessage): void {
    const bearer = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '')?.[1];
    if (bearer === undefined ? this.verify(cookieOf(req) ?? '') : this.#compare(clientAddress(req, this.opts.trustProxy), bearer) !== undefined) return;
    throw new TidingsError('unauthorized', 'log in at /admin, or send Authorization: Bearer <API key or admin token>');
  }

  /** The kind of secret `key` is, compared only while `address` is within its failed-login limit; a miss counts. */
  #compare(address: string, key: string): Kind | undefined {
    const wait = this.#failures.wait(address);
    if (wait > 0) throw new RetryLater('limit_exceeded', 'too many failed logins; wait', wait);
    const kind = this.#kindOf(key);
    if (kind === undefined) this.#failures.take(address);
    return kind;
  }

  /** `POST /admin/login` with `{ "key": "<API key or admin token>" }`: 204 and the cookie, or 401. */
  async login(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const address = clientAddress(req, this.opts.trustProxy);
    if (this.#failures.wait(address) > 0) throw new RetryLater('limit_exceeded', 'too many failed logins; wait', this.#failures.wait(address));
    const body = await readJson(req, 4096);
    const key = typeof body === 'object' && body !== null ? (body as { key?: unknown }).key : undefined;
    if (typeof key !== 'string' || key === '' || key.length > 1024) throw new TidingsError('bad_request', 'the body must be { "key": "<API key or admin token>" }');
    // Checked again now that the body is here: logins sent at once all passed the first check.
    const kind = this.#compare(address, key);
    this.opts.audit?.(kind !== undefined, address);
    if (kind === undefined) throw new TidingsError('unauthorized', 'that is neither the API key nor the admin token');
    res.writeHead(204, { 'set-cookie': this.#cookie(req, this.issue(kind), ADMIN_SESSION_MS / 1000), 'cache-control': 'no-store' }).end();
  }

  /** `POST /admin/logout`: clears the cookie in this browser (it stays valid until it expires). */
  logout(req: IncomingMessage, res: ServerResponse): void {
    res.writeHead(204, { 'set-cookie': this.#cookie(req, '', 0), 'cache-control': 'no-store' }).end();
  }

  #cookie(req: IncomingMessage, value: string, maxAge: number): string {
    const tls = 'encrypted' in req.socket || (this.opts.trustProxy && req.headers['x-forwarded-proto'] === 'https');
    return `${ADMIN_COOKIE}=${value}; Path=/admin; Max-Age=${maxAge}; HttpOnly; SameSite=Strict${tls ? '; Secure' : ''}`;
  }
}

/** The admin cookie's value in the request, if any. */
function cookieOf(req: IncomingMessage): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq !== -1 && part.slice(0, eq).trim() === ADMIN_COOKIE) return part.slice(eq + 1).trim();
  }
  return undefined;
}
