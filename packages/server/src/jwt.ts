/**
 * JWT authentication (`jose`): an {@link Authenticator} that verifies a token at the handshake and
 * grants channels from its claims.
 *
 * - **Keys.** One of: a shared secret (HS256), a PEM public key (RS256 for RSA, ES256 for P-256,
 *   EdDSA for Ed25519; the algorithm follows the key) or a JWKS URL (fetched and cached by `jose`,
 *   fetched again when a token names a `kid` it does not know, at most once per `jwksCooldown`).
 *   Only the algorithms of the configured key are accepted, so `alg: none` and HS/RS confusion (a
 *   token signed with the public key as an HMAC secret) are refused.
 * - **Where the token is.** `Authorization: Bearer <token>`, else the `token` query parameter
 *   (EventSource and browser WebSocket cannot set headers), else the cookie named `cookie`.
 * - **Checks.** Signature, `exp`, `nbf`, and `aud` / `iss` when configured. An expired token is
 *   `token_expired` (refresh it), anything else wrong `unauthorized`; both are 401.
 * - **Claims.** `sub` is the user (required). `channels` lists what the user may subscribe to,
 *   `publish` where the user may publish (names, or patterns ending in `*`); `info` is public data
 *   shown in presence. Namespaces marked `anonymous: true` are open to everyone, and a connection
 *   without a token is admitted (as anonymous) only when such a namespace exists.
 * @module
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { TidingsError, type Channel, type Json } from '@tidings/protocol';
import type { Authenticator, ConnectInfo, Grants, Identity } from './auth.js';
import { originPolicy, type OriginPolicy } from './origin.js';

export interface JwtOptions {
  /** HS256 shared secret (at least 32 bytes). */
  readonly secret?: string | undefined;
  /** PEM (SPKI) public key: RSA (RS256), P-256 (ES256) or Ed25519 (EdDSA). */
  readonly publicKey?: string | undefined;
  /** A JWKS endpoint (asymmetric keys only). */
  readonly jwksUrl?: string | undefined;
  /** Least ms between two JWKS fetches for unknown `kid`s (default 30 000). */
  readonly jwksCooldown?: number | undefined;
  readonly audience?: string | undefined;
  readonly issuer?: string | undefined;
}

export interface JwtAuthOptions {
  readonly jwt: JwtOptions;
  /** Cookie holding the token (default `tidings_token`). */
  readonly cookie?: string;
  /** Namespaces anyone may subscribe to, with or without a token. */
  readonly anonymousNamespaces?: Iterable<string>;
  /** Origins whose requests may carry a token in a cookie (default: the gateway's own, or no browser). */
  readonly origins?: OriginPolicy;
  /** The clock (ms since the epoch) tokens are checked against; tests inject one. */
  readonly now?: () => number;
}

/** Most entries in a token's `channels` or `publish` claim. */
const MAX_GRANTS = 1000;
/** Largest `info` claim, serialized. */
const MAX_INFO = 4096;
const ASYMMETRIC = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'];
const ANONYMOUS: Identity = Object.freeze({ user: '', anonymous: true });

type VerifyKey = Uint8Array | KeyObject | JWTVerifyGetKey;

/** Names and trailing-`*` patterns, compiled once per token. */
export function compileGrants(list: readonly string[]): (channel: Channel) => boolean {
  const exact = new Set<string>();
  const prefixes: string[] = [];
  for (const entry of list) {
    if (entry.endsWith('*')) prefixes.push(entry.slice(0, -1));
    else exact.add(entry);
  }
  return (channel) => exact.has(channel) || prefixes.some((p) => channel.startsWith(p));
}

/** The algorithm a PEM public key signs with. */
/** What is wrong with `pem` as `auth.jwt.publicKey`, or undefined when it is a key this can verify with. */
export function publicKeyProblem(pem: string): string | undefined {
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch {
    return 'auth.jwt.publicKey is not a PEM public key (BEGIN PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE)';
  }
  try {
    keyAlgorithm(key);
    return undefined;
  } catch (err) {
    return `auth.jwt.publicKey: ${(err as Error).message}`;
  }
}

function keyAlgorithm(key: KeyObject): string {
  switch (key.asymmetricKeyType) {
    case 'rsa':
      return 'RS256';
    case 'rsa-pss':
      return 'PS256';
    case 'ec': {
      const curve = key.asymmetricKeyDetails?.namedCurve;
      if (curve === 'prime256v1') return 'ES256';
      if (curve === 'secp384r1') return 'ES384';
      if (curve === 'secp521r1') return 'ES512';
      throw new Error(`unsupported EC curve ${String(curve)}`);
    }
    case 'ed25519':
      return 'EdDSA';
    default:
      throw new Error(`unsupported public key type ${String(key.asymmetricKeyType)}`);
  }
}

/** A request's token and where it was. */
export interface FoundToken {
  readonly token: string;
  readonly from: 'header' | 'query' | 'cookie';
}

/** The token of a request: bearer header, `token` query parameter, or the cookie. */
export function tokenOf(headers: IncomingHttpHeaders, url: URL, cookie: string): FoundToken | undefined {
  const authorization = headers.authorization;
  if (authorization !== undefined) {
    const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization);
    if (m?.[1] !== undefined) return { token: m[1], from: 'header' };
  }
  const query = url.searchParams.get('token');
  if (query !== null && query !== '') return { token: query, from: 'query' };
  const cookies = headers.cookie;
  if (cookies !== undefined) {
    for (const part of cookies.split(';')) {
      const eq = part.indexOf('=');
      if (eq !== -1 && part.slice(0, eq).trim() === cookie) {
        const value = part.slice(eq + 1).trim();
        if (value !== '') return { token: value, from: 'cookie' };
      }
    }
  }
  return undefined;
}

function stringList(payload: JWTPayload, claim: string): string[] {
  const value = payload[claim];
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.length > MAX_GRANTS || !value.every((v) => typeof v === 'string' && v.length > 0 && v.length <= 256)) {
    throw new TidingsError('unauthorized', `the token's ${claim} claim must be a list of at most ${MAX_GRANTS} channel names or patterns`);
  }
  return value as string[];
}

/** Verifies tokens; {@link Identity.grants} carries what the token allows. */
export function jwtAuth(options: JwtAuthOptions): Authenticator {
  const { jwt } = options;
  const cookie = options.cookie ?? 'tidings_token';
  const now = options.now ?? Date.now;
  const open = new Set(options.anonymousNamespaces ?? []);
  const origins = options.origins ?? originPolicy([]);
  const configured = [jwt.secret, jwt.publicKey, jwt.jwksUrl].filter((k) => k !== undefined && k !== '').length;
  if (configured !== 1) throw new TidingsError('bad_request', 'configure exactly one of auth.jwt.secret, auth.jwt.publicKey and auth.jwt.jwksUrl');

  let key: VerifyKey;
  let algorithms: string[];
  if (jwt.secret !== undefined && jwt.secret !== '') {
    if (Buffer.byteLength(jwt.secret) < 32) throw new TidingsError('bad_request', 'auth.jwt.secret must be at least 32 bytes');
    key = new TextEncoder().encode(jwt.secret);
    algorithms = ['HS256'];
  } else if (jwt.publicKey !== undefined && jwt.publicKey !== '') {
    const publicKey = createPublicKey(jwt.publicKey);
    key = publicKey;
    algorithms = [keyAlgorithm(publicKey)];
  } else {
    key = createRemoteJWKSet(new URL(jwt.jwksUrl as string), { cooldownDuration: jwt.jwksCooldown ?? 30_000, timeoutDuration: 5000 });
    algorithms = ASYMMETRIC;
  }

  const namespaceOf = (channel: Channel): string => {
    const colon = channel.indexOf(':');
    return colon === -1 ? '' : channel.slice(0, colon);
  };

  const verify = async (token: string): Promise<Identity> => {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, key as Uint8Array, {
        algorithms,
        audience: jwt.audience,
        issuer: jwt.issuer,
        currentDate: new Date(now()),
      }));
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) throw new TidingsError('token_expired', 'the token has expired; refresh it');
      if (err instanceof joseErrors.JOSEError) throw new TidingsError('unauthorized', `the token was refused: ${reasonOf(err)}`);
      throw new TidingsError('unavailable', `the token could not be checked now: ${(err as Error).message}`);
    }
    if (typeof payload.sub !== 'string' || payload.sub === '' || payload.sub.length > 256) {
      throw new TidingsError('unauthorized', 'the token has no sub (the user)');
    }
    const info = payload.info as Json | undefined;
    if (info !== undefined && Buffer.byteLength(JSON.stringify(info)) > MAX_INFO) throw new TidingsError('unauthorized', `the token's info claim is larger than ${MAX_INFO} bytes`);
    const grants: Grants = { subscribe: compileGrants(stringList(payload, 'channels')), publish: compileGrants(stringList(payload, 'publish')) };
    return {
      user: payload.sub,
      anonymous: false,
      ...(info === undefined ? {} : { info }),
      grants,
      ...(payload.exp === undefined ? {} : { expiresAt: payload.exp * 1000 }),
    };
  };

  return {
    connect(info: ConnectInfo): Identity | Promise<Identity> {
      const found = tokenOf(info.headers, info.url, cookie);
      if (found === undefined) {
        if (open.size > 0) return ANONYMOUS;
        return Promise.reject(new TidingsError('unauthorized', 'a token is required (Authorization: Bearer, the token parameter or the cookie)'));
      }
      // A browser adds cookies to requests any site makes: a cookie token counts only from allowed origins.
      if (found.from === 'cookie' && !origins.allows(info.headers)) {
        return Promise.reject(new TidingsError('forbidden', 'a token in a cookie is accepted only from the gateway\'s own or allowed origins'));
      }
      return verify(found.token);
    },
    refresh(_identity: Identity, token: string): Promise<Identity> {
      return verify(token);
    },
    canSubscribe(identity: Identity, channel: Channel): boolean {
      return open.has(namespaceOf(channel)) || identity.grants?.subscribe(channel) === true;
    },
    canPublish(identity: Identity, channel: Channel): boolean {
      return identity.grants?.publish(channel) === true;
    },
  };
}

/** A short reason for a refused token, without echoing it. */
function reasonOf(err: joseErrors.JOSEError): string {
  if (err instanceof joseErrors.JWTClaimValidationFailed) return `claim ${err.claim} failed (${err.reason})`;
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return 'its algorithm is not accepted';
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'the signature does not verify';
  if (err instanceof joseErrors.JWKSNoMatchingKey) return 'no key matches its kid';
  if (err instanceof joseErrors.JWSInvalid || err instanceof joseErrors.JWTInvalid) return 'it is malformed';
  return err.code;
}
