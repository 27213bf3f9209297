/**
 * The clock token expiry runs on: the system's, or one a test injects (`GatewayParts.clock`) to run an
 * hour of token lifetimes in a second.
 * @module
 */

/** Longest a timer may wait (`setTimeout`'s limit: about 24.8 days); a longer delay fires at once. */
export const MAX_TIMER = 2 ** 31 - 1;

/** A timer handle of a {@link Clock}. */
export type ClockTimer = { readonly __clockTimer: true } | NodeJS.Timeout;

export interface Clock {
  /** Ms since the epoch. */
  now(): number;
  /** Runs `fn` after `ms` (a timer that does not keep the process alive). */
  setTimeout(fn: () => void, ms: number): ClockTimer;
  clearTimeout(timer: ClockTimer | undefined): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (timer) => clearTimeout(timer as NodeJS.Timeout | undefined),
};
