import { Writable } from "node:stream";
import { pino, type Logger } from "pino";
import pretty from "pino-pretty";

export type LogFormat = "json" | "text";
export type LogLevel = "debug" | "info" | "warn" | "error";
export const LOG_FORMATS: readonly LogFormat[] = ["json", "text"];
export const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];

export type { Logger };

/**
 * The newest log records of the process, as JSON lines, kept in memory for support bundles:
 * bounded by a number of lines and of bytes, the oldest dropped first.
 */
export class LogRing extends Writable {
  private lines: string[] = [];
  private head = 0;
  private bytes = 0;

  constructor(
    readonly maxLines = 5000,
    readonly maxBytes = 4 * 1024 * 1024,
  ) {
    super({ decodeStrings: false });
  }

  override _write(chunk: Buffer | string, _enc: BufferEncoding, done: () => void): void {
    for (const line of String(chunk).split("\n")) if (line !== "") this.push1(line);
    done();
  }

  private push1(line: string): void {
    this.lines.push(line);
    this.bytes += line.length;
    while (this.lines.length - this.head > this.maxLines || (this.bytes > this.maxBytes && this.lines.length - this.head > 1)) {
      this.bytes -= this.lines[this.head].length;
      this.head++;
    }
    // Compact once the dropped prefix is as long as what is kept.
    if (this.head > 1024 && this.head * 2 > this.lines.length) {
      this.lines = this.lines.slice(this.head);
      this.head = 0;
    }
  }

  /** The kept lines, oldest first. */
  snapshot(): string[] {
    return this.lines.slice(this.head);
  }
}

/**
 * The process logger: JSON lines for machines (the default), or one readable line per
 * record for people. Both write synchronously to the given stream (stderr by default), so
 * the last line before a fatal exit is never lost. With `ring`, every record is also kept
 * there as a JSON line (support bundles read it).
 */
export function createLogger(opts: {
  format: LogFormat;
  level: LogLevel;
  destination?: NodeJS.WritableStream & { fd?: number };
  ring?: LogRing;
}): Logger {
  const base = { level: opts.level, base: undefined, timestamp: pino.stdTimeFunctions.isoTime };
  const out: pino.DestinationStream =
    opts.format === "text"
      ? pretty({
          colorize: false,
          sync: true,
          singleLine: true,
          translateTime: "SYS:yyyy-mm-dd'T'HH:MM:ss.l",
          destination: opts.destination ?? process.stderr,
        })
      : ((opts.destination ?? pino.destination({ fd: 2, sync: true })) as pino.DestinationStream);
  if (!opts.ring) return pino(base, out);
  return pino(
    base,
    pino.multistream([
      { level: "trace", stream: out },
      { level: "trace", stream: opts.ring },
    ]),
  );
}
