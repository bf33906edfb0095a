/** Longest line kept; the rest of a longer line is dropped (with a marker), up to its newline. */
export const MAX_LINE_CHARS = 1000;
const TRUNCATED = " [truncated]";

/**
 * The last lines a replica printed, stdout and stderr together in the order they arrived.
 * Memory is bounded: at most `maxLines` lines of at most MAX_LINE_CHARS characters, and one
 * partial line per stream of at most that size.
 */
export class OutputTail {
  private lines: string[] = [];
  private readonly partial = { stdout: "", stderr: "" };
  /** The current line of a stream grew past the limit: drop what comes until its newline. */
  private readonly skipping = { stdout: false, stderr: false };

  constructor(
    private readonly maxLines: number,
    private readonly onLine?: (stream: "stdout" | "stderr", line: string) => void,
  ) {}

  /** Takes a decoded chunk of one stream. */
  push(stream: "stdout" | "stderr", text: string): void {
    let start = 0;
    for (;;) {
      const nl = text.indexOf("\n", start);
      const piece = text.slice(start, nl < 0 ? text.length : nl);
      if (!this.skipping[stream]) {
        const line = this.partial[stream] + piece;
        if (line.length > MAX_LINE_CHARS) {
          this.add(stream, line.slice(0, MAX_LINE_CHARS) + TRUNCATED);
          this.partial[stream] = "";
          this.skipping[stream] = nl < 0;
        } else if (nl >= 0) {
          this.add(stream, line);
          this.partial[stream] = "";
        } else {
          this.partial[stream] = line;
        }
      } else if (nl >= 0) {
        this.skipping[stream] = false;
      }
      if (nl < 0) return;
      start = nl + 1;
    }
  }

  /** The process ended: a last line without a newline counts too. */
  flush(): void {
    for (const stream of ["stdout", "stderr"] as const) {
      if (this.partial[stream] !== "") this.add(stream, this.partial[stream]);
      this.partial[stream] = "";
      this.skipping[stream] = false;
    }
  }

  snapshot(): string[] {
    return [...this.lines];
  }

  private add(stream: "stdout" | "stderr", raw: string): void {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    this.lines.push(line);
    if (this.lines.length > this.maxLines) this.lines.splice(0, this.lines.length - this.maxLines);
    this.onLine?.(stream, line);
  }
}
