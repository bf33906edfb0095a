import { pino, type Logger } from "pino";
import pretty from "pino-pretty";

export type LogFormat = "json" | "text";
export type LogLevel = "debug" | "info" | "warn" | "error";
export const LOG_FORMATS: readonly LogFormat[] = ["json", "text"];
export const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];

export type { Logger };

/**
 * The process logger: JSON lines for machines (the default), or one readable line per
 * record for people. Both write synchronously to the given stream (stderr by default), so
 * the last line before a fatal exit is never lost.
 */
export function createLogger(opts: {
  format: LogFormat;
  level: LogLevel;
  destination?: NodeJS.WritableStream & { fd?: number };
}): Logger {
  const base = { level: opts.level, base: undefined, timestamp: pino.stdTimeFunctions.isoTime };
  if (opts.format === "text") {
    const stream = pretty({
      colorize: false,
      sync: true,
      singleLine: true,
      translateTime: "SYS:yyyy-mm-dd'T'HH:MM:ss.l",
      destination: opts.destination ?? process.stderr,
    });
    return pino(base, stream);
  }
  const destination = opts.destination ?? pino.destination({ fd: 2, sync: true });
  return pino(base, destination as pino.DestinationStream);
}
