/**
 * The gateway's logger: pino, JSON lines on stdout, or pretty for people on a terminal; and sampling
 * for per-message records, which would otherwise be as many as the messages.
 * @module
 */
import { pino, type Logger } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

/** `json` lines, `pretty`, or `auto`: pretty when stdout is a terminal. */
export type LogFormat = 'auto' | 'json' | 'pretty';

/** Whether output in `format` is JSON lines (`auto`: unless stdout is a terminal). */
export function writesJson(format: LogFormat): boolean {
  return format === 'json' || (format === 'auto' && process.stdout.isTTY !== true);
}

/** A logger at `level` (`silent` disables output) in `format`. */
export function createLogger(level: string, format: LogFormat = 'json'): Logger {
  const tty = process.stdout.isTTY === true;
  if (writesJson(format)) return pino({ name: 'tidings', level });
  // Synchronous: a terminal is slow anyway, and nothing is lost when the process exits.
  return pino({ name: 'tidings', level }, pretty({ sync: true, colorize: tty, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,name' }));
}

/**
 * What the operator is told (where the gateway listens, a generated key's file, a drain), said whatever
 * the log level: as JSON log lines of their own when the logs are JSON lines, so stdout stays JSON
 * lines; else as plain lines through `say`.
 */
export function noticesFor(format: LogFormat, say: (text: string) => void): (text: string) => void {
  if (!writesJson(format)) return (text) => say(`${text}\n`);
  const notices = pino({ name: 'tidings', level: 'info' });
  return (text) => notices.info(text);
}

/** Writes a per-message record at debug for a `rate` share of calls (0: none; 1: all). */
export type SampledLog = (record: Record<string, unknown>, msg: string) => void;

/** A {@link SampledLog} on `log`: nothing at all while debug is off, so the hot path pays one check. */
export function sampledLog(log: Logger, rate: number, random: () => number = Math.random): SampledLog {
  return (record, msg) => {
    if (rate > 0 && log.isLevelEnabled('debug') && random() < rate) log.debug({ ...record, sampled: rate }, msg);
  };
}
