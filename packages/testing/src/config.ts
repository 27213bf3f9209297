/**
 * Configuration checks in tests.
 * @module
 */
import { ConfigError } from '@tidings/server';

/** The problems a {@link ConfigError} thrown by `f` names; throws if `f` does not throw one. */
export function configProblems(f: () => unknown): readonly string[] {
  try {
    f();
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error('expected a ConfigError');
}
