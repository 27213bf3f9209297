/**
 * Per-test clean-up: what a test starts (gateways, clients, sockets) is registered as it is made and
 * released after the test, newest first, whether the test passed or not.
 * @module
 */
import { afterEach } from 'vitest';

/** Registers an `afterEach` that runs and empties the returned list; push a release function per resource. */
export function cleanupAfterEach(): Array<() => unknown> {
  const list: Array<() => unknown> = [];
  afterEach(async () => {
    for (const release of list.splice(0).reverse()) await release();
  });
  return list;
}
