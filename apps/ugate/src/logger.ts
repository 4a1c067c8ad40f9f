import type { Logger } from '@ugate/core';
import { type LevelWithSilent, pino } from 'pino';
import pretty from 'pino-pretty';
import type { Config } from './config.js';

export type LogLevel = LevelWithSilent;

/** The node's logger: pino, plus a level that can change at runtime for every child logger. */
export interface UgateLogger extends Logger {
  flush(cb?: (err?: Error) => void): void;
  getLevel(): LogLevel;
  setLevel(level: LogLevel): void;
}

/** pino JSON to stdout; human-readable when stdout is a terminal (or format: pretty). */
export function createLogger(cfg: Config['log'], stream: NodeJS.WritableStream = process.stdout): UgateLogger {
  const isPretty = cfg.format === 'pretty' || (cfg.format === 'auto' && (stream as { isTTY?: boolean }).isTTY === true);
  // pino fixes a child's level when the child is made; components make theirs at start-up.
  // So pino passes everything and one shared threshold decides, for parent and children alike.
  let level: LogLevel = cfg.level;
  let threshold = pino.levels.values[level] ?? Number.POSITIVE_INFINITY;
  const opts = {
    level: 'trace',
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    hooks: {
      logMethod(this: unknown, args: Parameters<pino.LogFn>, method: pino.LogFn, n: number) {
        if (n >= threshold) method.apply(this, args);
      },
    },
  };
  const logger = isPretty
    ? pino(opts, pretty({ destination: stream, colorize: true, translateTime: 'SYS:HH:MM:ss.l' }))
    : // Asynchronous writes keep the access log off the data path; flush() before exiting.
      pino(opts, pino.destination({ dest: (stream as { fd?: number }).fd ?? 1, sync: false }));
  return Object.assign(logger, {
    getLevel: () => level,
    setLevel(l: LogLevel) {
      level = l;
      threshold = l === 'silent' ? Number.POSITIVE_INFINITY : (pino.levels.values[l] ?? threshold);
    },
  }) as unknown as UgateLogger;
}
