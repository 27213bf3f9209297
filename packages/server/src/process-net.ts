/**
 * The process-level net: an error that escapes every handler (an uncaught exception, an unhandled
 * rejection) is logged with its context at `error` level and counted, and the process keeps serving.
 * Every request and frame already has its own handler that answers with a coded error; reaching
 * this net means a bug, which is reported, never swallowed silently, and never takes the other
 * clients down with it.
 * @module
 */
import type { Logger } from './log.js';

export interface ProcessNet {
  /** Unexpected errors caught so far. */
  readonly count: number;
  /** Removes the listeners. */
  uninstall(): void;
}

/** Installs the net on `process`; `onError` (optional) is told of each one, e.g. to count it in metrics. */
export function installProcessNet(log: Logger, onError?: (kind: 'uncaught_exception' | 'unhandled_rejection') => void): ProcessNet {
  let count = 0;
  const uncaught = (err: Error, origin: string): void => {
    count += 1;
    log.error({ err, origin, count }, 'unexpected error outside any request; the process goes on');
    onError?.('uncaught_exception');
  };
  const rejected = (reason: unknown): void => {
    count += 1;
    log.error({ err: reason, count }, 'unhandled promise rejection; the process goes on');
    onError?.('unhandled_rejection');
  };
  process.on('uncaughtException', uncaught);
  process.on('unhandledRejection', rejected);
  return {
    get count() {
      return count;
    },
    uninstall() {
      process.off('uncaughtException', uncaught);
      process.off('unhandledRejection', rejected);
    },
  };
}
