/**
 * Reconnect delays: exponential backoff with full jitter (a uniformly random delay between 0 and
 * the exponential cap), which spreads a crowd of clients best. See "Exponential Backoff And Jitter",
 * AWS Architecture Blog, 2015.
 * @module
 */

/** Backoff shape, in ms. */
export interface BackoffOptions {
  readonly min: number;
  readonly max: number;
  readonly factor: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = Object.freeze({ min: 500, max: 30_000, factor: 2 });

/** Delay before retry number `attempt` (0-based): uniform in [0, min(max, min * factor^attempt)). */
export function backoffDelay(opts: BackoffOptions, attempt: number, random: () => number): number {
  const cap = Math.min(opts.max, opts.min * opts.factor ** Math.max(0, attempt));
  return Math.floor(random() * cap);
}

/** Spread for "come back now" reconnects (server restart), so a whole crowd does not arrive at once. */
export const RESTART_SPREAD = 1000;
