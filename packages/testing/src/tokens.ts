/**
 * Test tokens: HS256 JWTs signed with a shared test secret, as a backend would issue them.
 * @module
 */
import { SignJWT, type JWTPayload } from 'jose';

/** An HS256 secret long enough for the gateway's check (at least 32 bytes). */
export const TEST_SECRET = 'a-test-secret-of-at-least-32-bytes!!';

export interface TokenOptions {
  /** The HS256 secret; {@link TEST_SECRET} by default. */
  readonly secret?: string;
  /** Seconds until it expires, from `now`; no `exp` claim when omitted. */
  readonly expiresIn?: number;
  /** Sets `iat` to `now` (with `expiresIn`, so does `exp` count from it). */
  readonly issued?: boolean;
  /** The time the token is made at, in ms since the epoch; `Date.now()` by default. */
  readonly now?: number;
}

/** Signs `claims` as an HS256 JWT. */
export function signToken(claims: JWTPayload, options: TokenOptions = {}): Promise<string> {
  const { secret = TEST_SECRET, expiresIn, issued = false, now = Date.now() } = options;
  const seconds = Math.floor(now / 1000);
  const jwt = new SignJWT(claims).setProtectedHeader({ alg: 'HS256' });
  if (issued) jwt.setIssuedAt(seconds);
  if (expiresIn !== undefined) jwt.setExpirationTime(seconds + expiresIn);
  return jwt.sign(new TextEncoder().encode(secret));
}
