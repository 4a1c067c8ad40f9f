import type { Logger } from '@ugate/core';
import { pino } from 'pino';
import pretty from 'pino-pretty';
import type { Config } from './config.js';

/** pino JSON to stdout; human-readable when stdout is a terminal (or format: pretty). */
export function createLogger(
  cfg: Config['log'],
  stream: NodeJS.WritableStream = process.stdout,
): Logger & { flush(cb?: (err?: Error) => void): void } {
  const isPretty = cfg.format === 'pretty' || (cfg.format === 'auto' && (stream as { isTTY?: boolean }).isTTY === true);
  const opts = { level: cfg.level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime };
  if (isPretty) return pino(opts, pretty({ destination: stream, colorize: true, translateTime: 'SYS:HH:MM:ss.l' }));
  // Asynchronous writes keep the access log off the data path; flush() before exiting.
  return pino(opts, pino.destination({ dest: (stream as { fd?: number }).fd ?? 1, sync: false }));
}
