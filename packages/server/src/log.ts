/**
 * The gateway's logger: pino, JSON lines on stdout.
 * @module
 */
import { pino, type Logger } from 'pino';

export type { Logger };

/** A logger at `level` (`silent` disables output). */
export function createLogger(level: string): Logger {
  return pino({ name: 'tidings', level });
}
