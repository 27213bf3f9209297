/**
 * Waiting in tests without fixed sleeps: `Signal` lets an event source wake waiters the moment
 * something arrives (with a short poll as a fallback); `until` polls a condition.
 * @module
 */

/** Wakes `until` callers whenever the owner has news. */
export class Signal {
  #waiters: Array<() => void> = [];

  wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  /** Resolves when `check` holds, re-checked on every wake (and every `pollMs`); throws `describe()` after `timeoutMs`. */
  async until(check: () => boolean, timeoutMs: number, describe: () => string, pollMs = 50): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!check()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${describe()} (waited ${timeoutMs} ms)`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, pollMs));
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }
}

/** Polls `check` every few ms until it holds; throws naming `what` after `timeoutMs`. */
export async function until(check: () => boolean, timeoutMs = 8000, what: string | (() => string) = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${typeof what === 'function' ? what() : what} not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
